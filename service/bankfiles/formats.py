"""The bank-file formats payrelay reads, recognising one by its content, and parsing with it. Pure.

A new format is one module with `parse(data, options) -> Statement` (and `sniff(head) -> bool`
if its content can be told apart), named in FORMATS below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from service.bankfiles import bai, camt, lockbox, mt94x
from service.bankfiles.model import FileInvalid, Options, Statement

Parse = Callable[[bytes, Options], Statement]
# A source's `format` (SPEC §7) -> its parser.
FORMATS: Final[dict[str, Parse]] = {
    "camt": camt.parse,
    "bai2": bai.parse,
    "lockbox": lockbox.parse,
    "mt940": mt94x.parse,
}
AUTO = "auto"
SETTINGS_FORMATS: Final = (AUTO, *FORMATS)
# What `auto` recognises, in the order it asks (lockbox has no mark of its own: it must be named).
_SNIFFERS: Final[tuple[tuple[str, Callable[[bytes], bool]], ...]] = (
    ("camt", camt.sniff),
    ("bai2", bai.sniff),
    ("mt940", mt94x.sniff),
)
_HEAD_BYTES = 4096


def detect(data: bytes) -> str:
    """The format of a file by its first bytes: camt, bai2 or mt940; FileInvalid when none fits."""
    head = data[:_HEAD_BYTES]
    for name, sniff in _SNIFFERS:
        if sniff(head):
            return name
    raise FileInvalid(
        "line 1", 'not a camt (ISO 20022 XML), BAI2 or MT940 file; a lockbox file needs format = "lockbox"'
    )


def parse(data: bytes, expected: str, options: Options) -> Statement:
    """Parse `data` as the `expected` format (`auto` recognises it); a file of another format than
    the one expected is FileInvalid, saying which it looks like."""
    if not data.strip():
        raise FileInvalid("line 1", "the file is empty")
    name = detect(data) if expected == AUTO else expected
    if expected != AUTO:
        found = _recognised(data)
        if found is not None and found != expected:
            why = f"this source sends {expected} files, but this one looks like {found}"
            raise FileInvalid("line 1", why)
    return FORMATS[name](data, options)


def _recognised(data: bytes) -> str | None:
    try:
        return detect(data)
    except FileInvalid:
        return None
