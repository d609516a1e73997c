"""`payrelay review list | show | accept | assign | reject`: cash application's review queue (SPEC §10).

Exit codes, as every command's (`payrelay --help`): 0 done; 1 not done — no such item, someone
decided it first, or the decision was refused (the line says why; the item stays open); 2 bad
usage; 4 the broker, the ledger or Chargebee cannot be reached now: nothing was decided, try again.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from service.broker import BrokerUnavailable, TopologyMismatch
from service.cli.dlq import operator_name
from service.cli.mistakes import FAILED, OK, UNAVAILABLE, USAGE
from service.cli.render import plain, say
from service.ledger import Ledger
from service.messages import rfc3339
from service.metrics import create_metrics
from service.money import to_major_string
from service.review.model import STATES, WHY, Allocation, Conflict, ReviewError, ReviewItem, Unavailable
from service.review.service import InvoiceFacts, InvoiceReader, ReaderUnavailable, Reviews
from service.settings import Settings

ALL = "all"


def share(text: str) -> tuple[str, str | None]:
    """`INV-1` (takes the rest of the payment) or `INV-1=12.50` (major units); checked by `Reviews`."""
    invoice, sep, amount = text.partition("=")
    invoice, amount = invoice.strip(), amount.strip()
    if not invoice or (sep and not amount):
        raise argparse.ArgumentTypeError(f"--invoice takes INVOICE or INVOICE=AMOUNT, got {text!r}")
    return invoice, amount if sep else None


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"--limit takes a whole number above 0, got {text!r}")
    return value


def add_parser(sub: Any) -> None:
    review = sub.add_parser(
        "review", help="payments waiting for a person: list, show, accept, assign, reject"
    )
    actions = review.add_subparsers(
        dest="review_command", required=True, metavar="ACTION", help="what to do with the review queue"
    )

    listing = actions.add_parser("list", help="review items, oldest first")
    listing.add_argument("--state", choices=[*STATES, ALL], default="open", help="the items in this state")
    listing.add_argument("--limit", type=positive, default=100, help="list at most this many")
    listing.add_argument("--json", action="store_true", help="one JSON array, for machines")
    listing.set_defaults(review=cmd_list, publishes=False, reads=False)

    show = actions.add_parser("show", help="one item: the payment, why, its suggestions, open invoices")
    show.add_argument("id", help="the review item's id (rv-17)")
    show.add_argument("--json", action="store_true", help="the same as JSON, for machines")
    show.set_defaults(review=cmd_show, publishes=False, reads=True)

    accept = actions.add_parser("accept", help="record the payment as one of its suggestions says")
    accept.add_argument("id", help="the review item's id (rv-17)")
    accept.add_argument(
        "--suggestion", type=int, default=0, metavar="N", help="which suggestion (`show` numbers them)"
    )
    accept.set_defaults(review=cmd_accept, publishes=True, reads=True)

    assign = actions.add_parser("assign", help="record the payment on invoices and amounts given by hand")
    assign.add_argument("id", help="the review item's id (rv-17)")
    assign.add_argument(
        "--invoice",
        dest="shares",
        type=share,
        action="append",
        required=True,
        metavar="INV[=AMOUNT]",
        help="an invoice and its share in major units (repeatable); one without AMOUNT takes the rest",
    )
    assign.set_defaults(review=cmd_assign, publishes=True, reads=True)

    reject = actions.add_parser("reject", help="send the payment to the dead letters as unmatched_invoice")
    reject.add_argument("id", help="the review item's id (rv-17)")
    reject.add_argument("--note", help="why, for the audit and the dead letter's error")
    reject.set_defaults(review=cmd_reject, publishes=True, reads=False)


class NotingReader:
    """The Chargebee reader, remembering why it could not read (`Reviews.open_invoices` says [] then)."""

    def __init__(self, reader: InvoiceReader) -> None:
        self.reader = reader
        self.failure: str | None = None

    async def invoice(self, invoice_id: str) -> InvoiceFacts | None:
        return await self.reader.invoice(invoice_id)

    async def open_invoices(self, customer_id: str, currency: str) -> list[InvoiceFacts]:
        try:
            return await self.reader.open_invoices(customer_id, currency)
        except ReaderUnavailable as exc:
            self.failure = str(exc)
            raise


@dataclass
class Context:
    settings: Settings
    ledger: Ledger
    reviews: Reviews
    reader: NotingReader | None
    out: Console
    err: Console


@contextlib.asynccontextmanager
async def opened(settings: Settings, *, publishes: bool, reads: bool) -> AsyncIterator[Context]:
    """The ledger; the broker only for a decision (started first: nothing is decided without it);
    Chargebee's reader for commands that read invoices."""
    from consumers.directory import open_directory  # aiohttp and the client: only when used

    async with contextlib.AsyncExitStack() as stack:
        broker = settings.broker.broker("payrelay-review")
        if publishes:
            stack.push_async_callback(broker.stop)
            await broker.start(wait=10.0)
            if not broker.ready:
                raise BrokerUnavailable("cannot reach the broker; nothing was decided, try again")
        ledger = await settings.ledger.open()
        stack.push_async_callback(ledger.close)
        reader = None
        if reads:
            directory = await stack.enter_async_context(open_directory(settings, create_metrics()))
            reader = NotingReader(directory)
        reviews = Reviews(
            ledger, broker, settings.broker.topology(), reader, api_version=settings.chargebee.api_version
        )
        # Piped output (grep, a log) gets whole lines rather than an 80-column fold.
        out = Console(width=None if sys.stdout.isatty() else 240)
        yield Context(settings, ledger, reviews, reader, out, Console(stderr=True))


async def run(args: argparse.Namespace, settings: Settings) -> int:
    command: Callable[[argparse.Namespace, Context], Any] = args.review
    try:
        async with opened(settings, publishes=args.publishes, reads=args.reads) as ctx:
            code: int = await command(args, ctx)
            return code
    except BrokerUnavailable as exc:
        print(f"payrelay review: {exc}", file=sys.stderr)
        return UNAVAILABLE
    except TopologyMismatch as exc:  # the broker has our queues with other arguments: configuration
        print(f"payrelay review: {exc}", file=sys.stderr)
        return USAGE
    except ReviewError as exc:
        print(f"payrelay review: {refusal(exc)}", file=sys.stderr)
        return UNAVAILABLE if isinstance(exc, Unavailable) else FAILED


def refusal(exc: ReviewError) -> str:
    """The one line a refused command prints; a conflict also says when and how it was decided."""
    if not isinstance(exc, Conflict):
        return str(exc)
    item = exc.item
    when = f" at {rfc3339(item.decided_at)}" if item.decided_at else ""
    how = f": {spread(item, decided_allocations(item))}" if decided_allocations(item) else ""
    return f"{exc}{when}{how}"


# -- reading -------------------------------------------------------------------------------------


async def cmd_list(args: argparse.Namespace, ctx: Context) -> int:
    items = await ctx.reviews.browse(None if args.state == ALL else args.state, limit=args.limit)
    if args.json:
        sys.stdout.write(orjson.dumps([item.as_json() for item in items]).decode() + "\n")
    elif items:
        ctx.out.print(items_table(items, datetime.now(UTC)))
        say(ctx.out, f"{len(items)} review item(s){'' if args.state == ALL else ' ' + args.state}")
    else:
        say(ctx.out, "no review items" + ("" if args.state == ALL else f" {args.state}"))
    return OK


async def cmd_show(args: argparse.Namespace, ctx: Context) -> int:
    item = await ctx.reviews.get(args.id)
    invoices = await ctx.reviews.open_invoices(item) if item.is_open else []
    failure = ctx.reader.failure if ctx.reader is not None else None
    if args.json:
        body = item.as_json() | {
            "open_invoices": [invoice.as_json() for invoice in invoices],
            "open_invoices_error": failure,
        }
        sys.stdout.write(orjson.dumps(body).decode() + "\n")
    else:
        ctx.out.print(item_detail(item, invoices, failure, datetime.now(UTC)))
    return OK


# -- deciding ------------------------------------------------------------------------------------


async def cmd_accept(args: argparse.Namespace, ctx: Context) -> int:
    item = await ctx.reviews.accept(args.id, suggestion=args.suggestion, actor=operator_name())
    return decided(ctx, item)


async def cmd_assign(args: argparse.Namespace, ctx: Context) -> int:
    item = await ctx.reviews.assign(args.id, allocations=args.shares, actor=operator_name())
    return decided(ctx, item)


async def cmd_reject(args: argparse.Namespace, ctx: Context) -> int:
    item = await ctx.reviews.reject(args.id, actor=operator_name(), note=args.note)
    return decided(ctx, item)


def decided(ctx: Context, item: ReviewItem) -> int:
    """One line: what was decided and where the payment went."""
    if item.state == "rejected":
        went = "its event is in the dead-letter queue as unmatched_invoice"
        head = f"{item.id} rejected"
    else:
        went = "its payment is queued for recording"
        head = f"{item.id} {item.state}: {spread(item, decided_allocations(item))}"
    if item.queued_at is None:  # decided, but the broker went away before the event was sent
        went = "its event waits for the broker: the consumer sends it when the broker is back"
    say(ctx.out, f"{head}; {went}")
    return OK


# -- how items look ------------------------------------------------------------------------------


def decided_allocations(item: ReviewItem) -> tuple[Allocation, ...]:
    return tuple(Allocation(str(i), int(a)) for i, a in (item.decision or {}).get("allocations") or [])


def spread(item: ReviewItem, allocations: tuple[Allocation, ...]) -> str:
    """`300.00 USD on GX-1003, 25.00 USD on GX-1004`."""
    return ", ".join(
        f"{to_major_string(a.amount, item.currency)} {item.currency} on {a.invoice_id}" for a in allocations
    )


def age(created: datetime, now: datetime) -> str:
    seconds = max(0, int((now - created).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def items_table(items: list[ReviewItem], now: datetime) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for header in ("id", "age", "origin", "amount", "payer", "why", "best score"):
        table.add_column(
            header, overflow="fold", justify="right" if header in ("amount", "best score") else "left"
        )
    for item in items:
        best = max((s.score for s in item.suggestions), default=None)
        table.add_row(
            plain(item.id),
            plain(age(item.created_at, now)),
            plain(item.origin),
            plain(f"{to_major_string(item.amount, item.currency)} {item.currency}"),
            plain(item.payer or ""),
            plain(item.why if item.is_open else f"{item.state} ({item.why})"),
            plain("" if best is None else f"{best:.2f}"),
        )
    return table


def _fields(item: ReviewItem, now: datetime) -> Table:
    data = item.event.get("data")
    if not isinstance(data, dict):
        data = {}
    rows: list[tuple[str, object]] = [
        ("state", item.state),
        ("payment", f"{to_major_string(item.amount, item.currency)} {item.currency}"),
        ("origin", item.origin),
        ("source", item.key[1]),
        ("event id", item.key[2]),
        ("type", item.event.get("type")),
        ("in review since", f"{rfc3339(item.created_at)} ({age(item.created_at, now)} ago)"),
        ("payer", item.payer or "(not given)"),
        ("customer", item.customer_id or "(not found)"),
        ("remittance", data.get("remittance_information") or data.get("memo") or "(none)"),
        ("why", WHY.get(item.why, item.why)),
    ]
    if item.problem:
        rows.append(("last refused", item.problem))
    if item.named:
        rows.append(("the event names", spread(item, item.named)))
    if not item.is_open:
        note = (item.decision or {}).get("note")
        when = rfc3339(item.decided_at) if item.decided_at else "?"
        rows.append(("decided", f"{item.state} by {item.decided_by or '?'} at {when}"))
        if decided_allocations(item):
            rows.append(("decision", spread(item, decided_allocations(item))))
        if note:
            rows.append(("note", note))
    grid = Table.grid(padding=(0, 2))
    for label, value in rows:
        grid.add_row(Text(label, style="bold"), plain(value))
    return grid


def _suggestions(item: ReviewItem) -> RenderableType:
    if not item.suggestions:
        return Text("none: assign invoices by hand, or reject it")
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for header in ("#", "score", "allocations", "method", "reasons"):
        table.add_column(header, overflow="fold")
    for number, suggestion in enumerate(item.suggestions):
        table.add_row(
            plain(number),
            plain(f"{suggestion.score:.2f}"),
            plain(spread(item, suggestion.allocations)),
            plain(suggestion.method),
            plain(", ".join(suggestion.reasons)),
        )
    return table


def _invoices(item: ReviewItem, invoices: list[InvoiceFacts], failure: str | None) -> RenderableType:
    if not item.is_open:
        return Text("(not read: the item is decided)")
    if item.customer_id is None:
        return Text("none known: the payer is not a known Chargebee customer")
    if failure is not None:
        return plain(f"none shown: Chargebee cannot be read now ({failure})")
    if not invoices:
        return plain(f"none: {item.customer_id} has no open invoice in {item.currency}")
    dated = any(i.date is not None or i.due_date is not None for i in invoices)  # v1 lists have none
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for header in ("invoice", "status", "amount due", "total", *(("date", "due") if dated else ())):
        table.add_column(header, overflow="fold")
    for invoice in invoices:
        shown = invoice.as_json()
        cells = [invoice.id, invoice.status, f"{shown['amount_due']} {invoice.currency}"]
        cells.append(f"{shown['total']} {invoice.currency}")
        if dated:
            cells += [_day(invoice.date), _day(invoice.due_date)]
        table.add_row(*(plain(cell) for cell in cells))
    return table


def _day(timestamp: int | None) -> str:
    return "" if timestamp is None else datetime.fromtimestamp(timestamp, UTC).date().isoformat()


def item_detail(item: ReviewItem, invoices: list[InvoiceFacts], failure: str | None, now: datetime) -> Group:
    """`review show`: the payment and why it waits, the suggestions, the customer's open invoices."""
    return Group(
        Text.assemble(("review ", "bold"), plain(item.id)),
        _fields(item, now),
        Text("\nsuggestions (accept one with --suggestion N)", style="bold"),
        _suggestions(item),
        Text(f"\nopen invoices in {item.currency}", style="bold"),
        _invoices(item, invoices, failure),
    )
