"""`payrelay send`: sign a generated event (or a JSON file of events) and post it to the receiver.

The events are built by `service.sender`; `--payer-name` and `--payer-fingerprint` fill `data.payer`
(for cash application), checked before anything is sent as the event contract checks them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from service.cli.mistakes import UsageError
from service.settings import Settings


def _payer_field(field: str) -> Callable[[str], str]:
    """An argparse type for data.payer.<field>: refused, saying why, where the contract would."""

    def check(text: str) -> str:
        from service.sender import check_payer  # aiohttp and all: only once a value is given

        try:
            return check_payer(field, text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return check


def add_parser(sub: Any) -> argparse.ArgumentParser:
    send: argparse.ArgumentParser = sub.add_parser(
        "send", help="sign an event (or a JSON file of events) and post it"
    )
    send.add_argument("file", nargs="?", help="a JSON file with one event or an array (a batch); - for stdin")
    send.add_argument("--url", default="http://127.0.0.1:8080", help="the receiver's base URL")
    send.add_argument("--source", default="acme-bank", help="the configured source to post as")
    send.add_argument("--secret", help="whsec_ secret (default: the source's first configured secret)")
    send.add_argument(
        "--type", default="bank.deposit", choices=["bank.deposit", "check.scan"], help="the event type"
    )
    send.add_argument("--amount", help="in major units, e.g. 25.00; required unless a FILE is given")
    send.add_argument("--currency", default="USD", help="ISO 4217 code")
    send.add_argument("--invoice", help="data.invoice_id")
    send.add_argument("--remittance", help="data.remittance_information (e.g. 'Payment for INV-1001')")
    send.add_argument("--reference", help="bank_reference / check_number (default: random)")
    send.add_argument(
        "--payer-name", type=_payer_field("name"), help="data.payer.name (e.g. 'Globex Corporation')"
    )
    send.add_argument(
        "--payer-fingerprint",
        type=_payer_field("account_fingerprint"),
        help="data.payer.account_fingerprint: the bank's stable token for the paying account",
    )
    send.add_argument("--id", help="the CloudEvent id (default: random)")
    send.add_argument(
        "--count", type=int, default=1, help="send this many generated events, one request each"
    )
    return send


async def run(args: argparse.Namespace, settings: Settings) -> int:
    from service.sender import example_event, read_payload, secret_for, send

    if args.file:
        payloads = [read_payload(args.file)]
    elif args.amount is None:
        raise UsageError(
            "say how much: --amount 25.00 (in major units, with --currency), or give a FILE of events"
        )
    else:
        single_id = args.id if args.count == 1 else None
        payloads = [
            example_event(
                args.type,
                amount=args.amount,
                currency=args.currency,
                invoice_id=args.invoice,
                remittance=args.remittance,
                reference=args.reference,
                event_id=single_id,
                payer_name=args.payer_name,
                payer_fingerprint=args.payer_fingerprint,
            )
            for _ in range(args.count)
        ]
    return await send(args.url, args.source, secret_for(settings, args.source, args.secret), payloads)
