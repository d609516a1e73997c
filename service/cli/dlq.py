"""`payrelay dlq list | show | replay | purge | audit`: the dead-letter queue from a terminal.

Exit codes, for scripts: 0 done (also when nothing matched), 1 not found (`show`), 2 bad usage or
configuration, 3 refused (no confirmation, or a selector that selects nothing), 4 the broker or
the ledger failed.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text

from service.broker import BrokerUnavailable
from service.cli.render import audit_table, letter_detail, letters_table, print_wide, say
from service.dead_letter_queue import Keeper
from service.dead_letter_store import DeadLetterStore
from service.dead_letters import (
    EDITABLE,
    SELECTORS,
    EditError,
    Filter,
    FilterError,
    Outcome,
    check_reason,
    parse_age,
    refusal,
)
from service.events import EVENT_TYPES
from service.ledger import Ledger
from service.ledger.letters import letter_number
from service.messages import DEAD_LETTER_REASONS
from service.settings import Settings

OK, NOT_FOUND, USAGE, REFUSED, FAILED = 0, 1, 2, 3, 4
PAST = {"replay": "replayed", "purge": "purged"}


def duration(text: str) -> timedelta | None:
    """`90s`, `30m`, `2h`, `7d`."""
    try:
        return parse_age(text)
    except FilterError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def assignment(text: str) -> tuple[str, str]:
    field, sep, value = text.partition("=")
    if not sep or not field:
        raise argparse.ArgumentTypeError(f"--set takes FIELD=VALUE, got {text!r}")
    if (why := refusal(field)) is not None:
        raise argparse.ArgumentTypeError(why)
    return field, value


def rate(text: str) -> float:
    value = text.removesuffix("/s")
    try:
        parsed = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--rate takes messages per second, e.g. 50/s, got {text!r}"
        ) from None
    if parsed <= 0:
        raise argparse.ArgumentTypeError("--rate must be positive")
    return parsed


def reason(text: str) -> str:
    """One of the dead-letter reasons (SPEC §6); a typo would otherwise select nothing, silently."""
    try:
        return check_reason(text)
    except FilterError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_selectors(parser: argparse.ArgumentParser, *, ids: bool = True) -> None:
    if ids:
        parser.add_argument(
            "--id",
            dest="ids",
            action="append",
            default=[],
            metavar="ID",
            help="a letter or event id (repeatable)",
        )
    parser.add_argument(
        "--reason", type=reason, metavar="REASON", help=f"one of: {', '.join(DEAD_LETTER_REASONS)}"
    )
    parser.add_argument("--source", help="the configured source (origin) or the CloudEvent source")
    parser.add_argument("--type", choices=EVENT_TYPES, help="the event type")
    parser.add_argument("--invoice", help="data.invoice_id")
    parser.add_argument(
        "--older-than", type=duration, metavar="AGE", help="failed more than AGE ago (30m, 2h, 7d)"
    )
    parser.add_argument("--newer-than", type=duration, metavar="AGE", help="failed less than AGE ago")


def selector(args: argparse.Namespace) -> Filter:
    """The flags as a Filter: one flag per `SELECTORS` name (ages already parsed by `duration`)."""
    return Filter(
        ids=tuple(getattr(args, "ids", []) or ()),
        everything=getattr(args, "all", False),
        **{name: getattr(args, name) or None for name in SELECTORS},
    )


def add_parser(sub: Any) -> None:
    dlq = sub.add_parser("dlq", help="browse, replay and purge dead letters")
    actions = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="dead letters, oldest first")
    add_selectors(listing)
    listing.add_argument("--limit", type=int, default=1000, help="list at most this many")
    listing.add_argument(
        "--wide", action="store_true", help="every column, whatever the terminal's width (lines may wrap)"
    )
    listing.add_argument(
        "--json", action="store_true", help="one JSON array, for machines (amount as the event sent it)"
    )
    listing.set_defaults(dlq=cmd_list)

    show = actions.add_parser("show", help="one dead letter, whole: headers, event, Chargebee's error")
    show.add_argument("id", help="a letter id, or an event id (then every letter of that event)")
    show.add_argument("--json", action="store_true", help="the same as JSON, for machines")
    show.set_defaults(dlq=cmd_show)

    for name, helptext in (
        ("replay", "move dead letters back to the work queue"),
        ("purge", "delete dead letters"),
    ):
        action = actions.add_parser(name, help=helptext)
        add_selectors(action)
        action.add_argument("--all", action="store_true", help="every dead letter")
        action.add_argument("--dry-run", action="store_true", help="show what would happen; change nothing")
        action.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        action.add_argument(
            "--json", action="store_true", help='{"matched", "moved", "dry_run", "ids"}, for machines'
        )
        if name == "replay":
            action.add_argument(
                "--set",
                dest="edits",
                type=assignment,
                action="append",
                default=[],
                metavar="FIELD=VALUE",
                help=f"correct a field before replaying ({', '.join(EDITABLE)})",
            )
            action.add_argument(
                "--rate", type=rate, metavar="N/s", help="throttle the replay (default: as fast as it goes)"
            )
        action.set_defaults(dlq=cmd_replay if name == "replay" else cmd_purge)

    audit = actions.add_parser("audit", help="every replay, edit and purge: who, when, what, how many")
    audit.add_argument("--limit", type=int, default=100, help="the latest this many records")
    audit.add_argument("--json", action="store_true", help="one JSON array, for machines")
    audit.set_defaults(dlq=cmd_audit)


@dataclass
class Context:
    settings: Settings
    letters: DeadLetterStore
    ledger: Ledger
    out: Console
    err: Console


@contextlib.asynccontextmanager
async def opened(settings: Settings) -> AsyncIterator[Context]:
    topology = settings.broker.topology()
    broker = settings.broker.broker("payrelay-dlq")
    await broker.start(wait=10.0)
    if not broker.ready or broker.connection is None:
        await broker.stop()
        raise BrokerUnavailable("cannot reach the broker")
    ledger = await settings.ledger.open()
    try:
        keeper = Keeper(broker, topology, ledger)
        yield Context(
            settings,
            DeadLetterStore(keeper, broker, topology, ledger),
            ledger,
            # Piped output (grep, a log) gets whole lines rather than an 80-column fold.
            Console(width=None if sys.stdout.isatty() else 240),
            Console(stderr=True),
        )
    finally:
        await ledger.close()
        await broker.stop()


async def run(args: argparse.Namespace, settings: Settings) -> int:
    command: Callable[[argparse.Namespace, Context], Any] = args.dlq
    try:
        async with opened(settings) as ctx:
            code: int = await command(args, ctx)
            return code
    except BrokerUnavailable as exc:
        print(f"payrelay dlq: {exc}", file=sys.stderr)
        return FAILED


def _print_table(ctx: Context, rows: list[dict[str, Any]], wide: bool = False) -> None:
    table = letters_table(rows, ctx.out.width, wide=wide)
    if wide:  # every column at its width: the terminal wraps the lines, nothing is cut
        print_wide(ctx.out, table)
    else:
        ctx.out.print(table)


async def cmd_list(args: argparse.Namespace, ctx: Context) -> int:
    chosen = selector(args)
    letters = await ctx.letters.browse(None if chosen.empty else chosen, limit=args.limit)
    rows = [letter.summary() for letter in letters]
    if args.json:
        sys.stdout.write(orjson.dumps(rows).decode() + "\n")
    elif rows:
        _print_table(ctx, rows, args.wide)
        say(ctx.out, f"{len(rows)} dead letter(s); amounts in major units")
    else:
        say(ctx.out, "no dead letters match")
    return OK


async def cmd_show(args: argparse.Namespace, ctx: Context) -> int:
    letters = await ctx.letters.show(args.id)
    if not letters:
        say(ctx.err, f"no dead letter with id {args.id}")
        return NOT_FOUND
    details = [letter.detail() for letter in letters]
    if args.json:
        sys.stdout.write(orjson.dumps(details if len(details) > 1 else details[0]).decode() + "\n")
    else:
        for detail in details:
            ctx.out.print(letter_detail(detail))
    return OK


def operator_name() -> str:
    """Who runs the command, as the operating system says: the audit's "who" is never a name typed in."""
    with contextlib.suppress(Exception):
        return f"{getpass.getuser()}@{socket.gethostname()}"
    return "unknown"


def _confirm(ctx: Context, verb: str, outcome: Outcome, yes: bool) -> bool:
    if yes:
        return True
    if not sys.stdin.isatty():
        count = len(outcome.matched)
        say(ctx.err, f"refusing to {verb} {count} dead letter(s) without --yes (no terminal to ask)")
        return False
    answer = ctx.err.input(Text(f"{verb.capitalize()} {len(outcome.matched)} dead letter(s)? [y/N] "))
    return answer.strip().lower() in ("y", "yes")


def summary(outcome: Outcome) -> str:
    """`1 of 1 matched (2 looked at)`'s tail: how many matched the selection, of how many looked at."""
    return f"{len(outcome.matched)} matched dead letter(s) ({outcome.scanned} looked at)"


def _report(ctx: Context, args: argparse.Namespace, verb: str, outcome: Outcome) -> None:
    if args.json:
        sys.stdout.write(orjson.dumps(outcome.as_dict()).decode() + "\n")
        return
    if outcome.dry_run:
        if outcome.matched:
            _print_table(ctx, [letter.summary() for letter in outcome.matched])
        say(ctx.out, f"dry run: would {verb} {summary(outcome)}")
    else:
        say(ctx.out, f"{PAST[verb]} {outcome.moved} of {summary(outcome)}")
        if outcome.skipped:
            ctx.err.print(
                f"{len(outcome.skipped)} of the letters previewed were replayed or purged by someone "
                "else meanwhile; they were left alone"
            )


Act = Callable[[list[str], Any], Awaitable[Outcome]]


async def _guarded(
    args: argparse.Namespace, ctx: Context, verb: str, act: Act, edits: dict[str, str] | None = None
) -> int:
    """Preview the selection, ask, then act on exactly the letters previewed (SPEC §6)."""
    chosen = selector(args)
    if chosen.empty and not chosen.everything:
        say(ctx.err, f"say which dead letters to {verb}: --id, a filter (--reason, --source, ...) or --all")
        return REFUSED
    try:
        preview = await ctx.letters.preview(chosen, edits=edits)
        if not args.json:
            _say_event_ids(ctx, chosen, preview)
        if args.dry_run or not preview.matched:
            _report(ctx, args, verb, preview)
            return OK
        if not _confirm(ctx, verb, preview, args.yes):
            return REFUSED
        with _progress(ctx, len(preview.matched)) as progress:
            outcome = await act([letter.id for letter in preview.matched], progress)
    except EditError as exc:
        say(ctx.err, f"nothing {PAST[verb]}: {exc}")
        return USAGE
    _report(ctx, args, verb, outcome)
    return OK


def _say_event_ids(ctx: Context, chosen: Filter, preview: Outcome) -> None:
    """`--id` given an event id selects every letter of that event: the preview says so."""
    for wanted in chosen.ids:
        if letter_number(wanted) is not None:
            continue
        letters = [letter for letter in preview.matched if letter.event_id == wanted]
        if letters:
            origins = ", ".join(sorted({letter.origin or "?" for letter in letters}))
            ctx.err.print(
                Text(f"{wanted!r} is an event id: it selects its {len(letters)} letter(s) (from {origins})")
            )


@contextlib.contextmanager
def _progress(ctx: Context, total: int) -> Any:
    if total < 50:
        yield None
        return
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=ctx.err,
        transient=True,
    )
    with bar:
        task = bar.add_task("moving", total=total)
        yield lambda done, _total: bar.update(task, completed=done)


async def cmd_replay(args: argparse.Namespace, ctx: Context) -> int:
    edits = dict(args.edits) or None
    chosen = selector(args)

    async def act(ids: list[str], progress: Any) -> Outcome:
        return await ctx.letters.replay(
            ids,
            actor=operator_name(),
            selector=chosen.describe(),
            edits=edits,
            rate=args.rate,
            progress=progress,
        )

    return await _guarded(args, ctx, "replay", act, edits)


async def cmd_purge(args: argparse.Namespace, ctx: Context) -> int:
    chosen = selector(args)

    async def act(ids: list[str], progress: Any) -> Outcome:
        who, selector = operator_name(), chosen.describe()
        return await ctx.letters.purge(ids, actor=who, selector=selector, progress=progress)

    return await _guarded(args, ctx, "purge", act)


async def cmd_audit(args: argparse.Namespace, ctx: Context) -> int:
    records = await ctx.ledger.audit(limit=args.limit)
    rows = [record.as_dict() for record in records]
    if args.json:
        sys.stdout.write(orjson.dumps(rows).decode() + "\n")
        return OK
    ctx.out.print(audit_table(rows) if rows else Text("the audit is empty"))
    return OK
