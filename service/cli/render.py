"""How `payrelay dlq` shows dead letters to people: plain text, amounts in major units, tables that fit.

Everything shown comes from a message somebody else wrote, so nothing is read as rich markup:
every cell and line is a `rich.text.Text`, and control and invisible formatting characters (ESC,
BEL, C1 controls, bidi overrides, zero-width spaces) are shown escaped, as `\\x1b` or `\\u202e`.
`--json` is for machines and is not made here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from rich import box
from rich.cells import cell_len
from rich.console import Console, Group, RenderableType
from rich.highlighter import JSONHighlighter
from rich.table import Table
from rich.text import Text

from service.dead_letters import chargebee_figures
from service.money import AmountError, to_major_string, to_minor_units

# C0 and C1 controls, DEL, and the invisible characters that reorder or hide text (Trojan Source).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def escaped(value: object) -> str:
    """`value` as text with every control or invisible character written out (`\\x1b`)."""
    return _UNSAFE.sub(_escape, "" if value is None else str(value))


def _escaped_lines(text: str) -> str:
    """Like `escaped`, keeping the line breaks: for JSON, whose strings carry their own as `\\n`."""
    return "\n".join(escaped(line) for line in text.split("\n"))


def plain(value: object, style: str = "") -> Text:
    """A value from a message as rich text that is never markup and never a terminal control."""
    return Text(escaped(value), style=style)


def money(amount: object, currency: object) -> str:
    """`25.00 USD` for a dead letter's amount; as it came when it is not an amount (an invalid event)."""
    if amount is None:
        return ""
    try:
        return f"{to_major_string(to_minor_units(str(amount), str(currency)), str(currency))} {currency}"
    except AmountError:
        return f"{amount} {currency or ''}".strip()


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    rank: int  # the lower, the longer it stays as the terminal narrows
    wide_only: bool = False


# Display order; `rank` decides what goes first when the terminal is narrow.
COLUMNS = (
    Column("id", "id", 0),
    Column("event_id", "event id", 6),
    Column("state", "state", 11, wide_only=True),
    Column("reason", "reason", 1),
    Column("amount", "amount", 2),
    Column("invoice_id", "invoice", 3),
    Column("failed_at", "failed at", 5),
    Column("attempts", "attempts", 7),
    Column("replays", "replays", 12, wide_only=True),
    Column("origin", "origin", 8),
    Column("type", "type", 9, wide_only=True),
    Column("source", "source", 10, wide_only=True),
    Column("error", "error", 4),
)
ERROR_MIN, ERROR_MAX = 16, 60  # the error column shrinks (ellipsis) before anything is dropped


def _cells(row: Mapping[str, Any]) -> dict[str, str]:
    cells = {key: escaped(value) for key, value in row.items()}
    cells["amount"] = escaped(money(row.get("amount"), row.get("currency")))
    cells["error"] = escaped(chargebee_figures(str(row.get("error") or ""), row.get("currency")))
    return cells


def _extra(count: int) -> int:
    """What the table adds around its cells: one separator and two padding cells between columns."""
    return 3 * (count - 1)


def _fit(columns: list[Column], natural: dict[str, int], width: int) -> dict[str, int]:
    """The columns that fit in `width`, most important first, with the width each gets."""
    chosen: dict[str, int] = {}
    for column in sorted(columns, key=lambda c: c.rank):
        need = ERROR_MIN if column.key == "error" else natural[column.key]
        used = sum(chosen.values()) + _extra(len(chosen) + 1)
        if not chosen or used + need <= width:
            chosen[column.key] = need
    if "error" in chosen:
        room = width - (sum(chosen.values()) - ERROR_MIN) - _extra(len(chosen))
        chosen["error"] = max(ERROR_MIN, min(natural["error"], ERROR_MAX, room))
    return chosen


def letters_table(rows: Sequence[Mapping[str, Any]], width: int, *, wide: bool = False) -> Table:
    """The dead letters as one line each: ids whole, columns dropped by `rank` to fit `width`.

    `wide` keeps every column at its full width, whatever the terminal; the caller prints it
    uncropped. An id is folded only when it alone is wider than the terminal.
    """
    cells = [_cells(row) for row in rows]
    present = [c for c in COLUMNS if any(c.key in row for row in rows) or c.key == "amount"]
    if not wide:
        present = [c for c in present if not c.wide_only]
    natural = {
        c.key: max([cell_len(c.header), *(cell_len(cell.get(c.key, "")) for cell in cells)]) for c in present
    }
    widths = natural if wide else _fit(present, natural, width)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    shown = [c for c in present if c.key in widths]
    for column in shown:
        table.add_column(
            column.header,
            no_wrap=True,
            overflow="fold" if column.key in ("id", "event_id") else "ellipsis",
            min_width=widths[column.key] if column.key != "error" else None,
            max_width=widths[column.key],
        )
    for cell in cells:
        table.add_row(*(Text(cell.get(c.key, "")) for c in shown))
    return table


def print_wide(console: Console, table: Table) -> None:
    """Print a `letters_table(..., wide=True)` uncropped at its own width: the terminal wraps it."""
    width = sum(c.max_width or 0 for c in table.columns) + _extra(len(table.columns))
    at_width = Console(
        file=console.file,
        width=max(width, console.width),
        force_terminal=console.is_terminal,
        color_system=console.color_system,  # type: ignore[arg-type]
    )
    at_width.print(table, crop=False)


def audit_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in ("at", "actor", "action", "selector", "count"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(plain(row.get(c)) for c in ("at", "actor", "action", "selector", "count")))
    return table


def _json(value: Any) -> Text:
    shown = _escaped_lines(orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode())
    return JSONHighlighter()(Text(shown))


def _headers(headers: Mapping[str, Any]) -> Table:
    grid = Table.grid(padding=(0, 2))
    for name, value in headers.items():
        text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
        grid.add_row(plain(name, "bold"), plain(text))
    return grid


_FIELDS = (
    ("event_id", "event id"),
    ("state", "state"),
    ("reason", "reason"),
    ("error", "error"),
    ("attempts", "attempts"),
    ("replays", "replays"),
    ("failed_at", "failed at"),
    ("stored_at", "stored at"),
    ("origin", "origin"),
    ("source", "source"),
    ("type", "type"),
    ("invoice_id", "invoice"),
)


def letter_detail(detail: Mapping[str, Any]) -> RenderableType:
    """`dlq show`: the summary as fields, then Chargebee's error, the headers and the event."""
    fields = Table.grid(padding=(0, 2))
    for key, label in _FIELDS:
        if key in detail:
            value = detail[key]
            if key == "error":
                value = chargebee_figures(str(value or ""), detail.get("currency"))
            fields.add_row(Text(label, style="bold"), plain(value))
    fields.add_row(Text("amount", style="bold"), plain(money(detail.get("amount"), detail.get("currency"))))
    parts: list[RenderableType] = [Text.assemble(("dead letter ", "bold"), plain(detail.get("id"))), fields]
    if detail.get("chargebee_error") is not None:
        currency = detail.get("currency")
        unit = f"minor units of {escaped(currency)}" if currency else "minor units"
        note = f" (amounts in {unit})"
        parts += [Text(f"\nChargebee's error{note}", style="bold"), _json(detail["chargebee_error"])]
    parts += [Text("\nheaders", style="bold"), _headers(detail.get("headers") or {})]
    if detail.get("event") is not None:
        parts += [Text("\nevent", style="bold"), _json(detail["event"])]
    else:
        parts += [Text("\nbody (not a JSON object)", style="bold"), plain(detail.get("body"))]
    return Group(*parts)


def say(console: Console, message: str) -> None:
    """Print one line that may hold values from a message: as text, never markup."""
    console.print(plain(message), soft_wrap=True)
