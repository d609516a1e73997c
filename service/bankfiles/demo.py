"""The demo bank files for the sandbox's demo invoices (`payrelay dev`, the README's walkthrough).

Each pays demo invoices a different way: a camt.054 with a batch-booked entry and structured
references, a BAI2 with continuation records, a lockbox with overflow records, an MT940.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

_HERE = Path(__file__).parent / "demo_files"
FILES: Final = {
    "camt054": "acme-bank.camt054.xml",
    "bai2": "acme-bank.bai2",
    "lockbox": "acme-lockbox.txt",
    "mt940": "acme-bank.mt940",
}


def path(kind: str) -> Path:
    """The demo file of `kind` (one of FILES)."""
    return _HERE / FILES[kind]
