"""`payrelay import FILE --source S`: a bank file parsed here and published as the endpoint does.

The same path as `POST /v1/files/{source}` (service/bankfiles/intake.py): the source's format and
options, the same events and identities, every event confirmed by RabbitMQ before it says done.
`--dry-run` shows the events (a table, or JSON with `--json`) and publishes nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from service.bankfiles import intake
from service.bankfiles.formats import SETTINGS_FORMATS
from service.bankfiles.model import FileRejected, Options
from service.broker import BrokerUnavailable
from service.cli.mistakes import OK, UNAVAILABLE, USAGE, UsageError
from service.cli.render import money, plain
from service.settings import Settings

_START_WAIT = 5.0


def add_parser(sub: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "import", help="parse a bank file (camt, BAI2, lockbox, MT940) and publish its credits as events"
    )
    parser.add_argument("file", help="the bank file; - reads standard input")
    parser.add_argument("--source", required=True, help="the configured source the file comes from")
    parser.add_argument(
        "--format", choices=SETTINGS_FORMATS, help="the file's format (default: the source's `format`)"
    )
    parser.add_argument("--dry-run", action="store_true", help="show the events; publish nothing")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def _read(name: str, limit: int) -> bytes:
    data = sys.stdin.buffer.read(limit + 1) if name == "-" else Path(name).read_bytes()
    if len(data) > limit:
        raise UsageError(f"{name} is larger than {limit} bytes (max_file_bytes)")
    return data


def file_id(data: bytes) -> str:
    """An imported file's id: its digest, so importing the same file twice names it the same."""
    return "import:sha256:" + hashlib.sha256(data).hexdigest()[:32]


async def run(args: argparse.Namespace, settings: Settings) -> int:
    source = settings.sources.get(args.source)
    if source is None:
        known = ", ".join(sorted(settings.sources)) or "none are configured"
        raise UsageError(f"unknown source {args.source!r} (sources: {known})")
    data = _read(args.file, settings.files.max_file_bytes)
    options: Options = source.file_options()
    try:
        read = intake.read(
            data,
            expected=args.format or source.format,
            options=options,
            file_id=file_id(data),
            key=settings.files.key(),
        )
    except FileRejected as exc:
        print(f"payrelay: {args.file}: {exc}; nothing was published", file=sys.stderr)
        return USAGE
    wrong = sorted({e.type for e in read.events} - set(source.types))
    if wrong:
        print(
            f"payrelay: {args.file} holds {', '.join(wrong)} events, which {args.source} may not send",
            file=sys.stderr,
        )
        return USAGE
    if args.dry_run:
        return _show(read, args)
    return await _publish(read, args, settings)


async def _publish(read: intake.Intake, args: argparse.Namespace, settings: Settings) -> int:
    broker = settings.broker.broker("payrelay-import")
    messages = intake.outgoing(read, args.source, settings.broker.topology().events)
    try:
        await broker.start(wait=_START_WAIT)
        if messages:
            within = intake.publish_within(settings.broker.publish_timeout_seconds, len(messages))
            await broker.publish(messages, within=within)
    except BrokerUnavailable as exc:
        print(
            f"payrelay: {args.file}: not published ({exc}); nothing is lost, import it again", file=sys.stderr
        )
        return UNAVAILABLE
    finally:
        await broker.stop()
    answer = read.answer(published=len(messages))
    if args.json:
        print(orjson.dumps(answer).decode())
    else:
        print(_summary(read, args.file, f"published {len(messages)} event(s)"))
    return OK


def _summary(read: intake.Intake, name: str, done: str) -> str:
    s = read.statement
    return (
        f"{name}: {s.format} ({s.version}), {s.accounts} account(s), {s.entries} entr"
        f"{'y' if s.entries == 1 else 'ies'}: {done}, {len(s.skipped)} skipped"
    )


def _show(read: intake.Intake, args: argparse.Namespace) -> int:
    if args.json:
        answer = read.answer(published=0)
        answer["events"] = [event.raw for event in read.events]
        print(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode())
        return OK
    console = Console(highlight=False, soft_wrap=False)
    table = Table(title=_summary(read, args.file, f"{len(read.events)} event(s) would be published"))
    for column in ("entry", "type", "id", "amount", "booked", "payer", "invoices"):
        table.add_column(column, overflow="fold")
    for event in read.events:
        data = event.raw["data"]
        invoices = [a["invoice_id"] + "=" + a["amount"] for a in data.get("allocations", ())] or data.get(
            "references", []
        )
        table.add_row(
            plain(event.raw.get("payrelayentry")),
            plain(event.type),
            plain(event.id),
            plain(money(data["amount"], data["currency"])),
            plain((data.get("booked_at") or data.get("scanned_at", ""))[:10]),
            plain(data.get("payer", {}).get("name", "")),
            plain(", ".join(invoices)),
        )
    console.print(table)
    for item in read.statement.skipped:
        console.print(
            plain(f"skipped {item.entry}: {item.reason}" + (f" ({item.detail})" if item.detail else ""))
        )
    console.print("dry run: nothing was published")
    return OK
