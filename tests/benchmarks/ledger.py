"""The ledger alone: what recording one payment costs it, in this process, without broker or HTTP.

    .venv/bin/python -m tests.benchmarks.ledger [--payments 4000] [--concurrency 64]
        [--ledger sqlite|postgresql] [--runs 3] [--json PATH]

Per payment the three writes the consumer makes (`claim`, `record_success`, `mark_confirmed`), from
`--concurrency` payments at once as the consumer's prefetch would have them, committed in groups
as in production (SQLite: a fresh file, WAL, synchronous=FULL; PostgreSQL: the machine's `test`
database, a fresh schema). Reports payments/s and this process's CPU per payment (utime + stime:
the event loop and the ledger's own thread), medians of `--runs`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from service.ledger import Ledger, Recorded
from tests.benchmarks.bank_files import emit, figure, machine, own_cpu_seconds

POSTGRESQL = "postgresql://postgres@127.0.0.1:5432/test"


async def one_run(kind: str, payments: int, concurrency: int) -> dict[str, float]:
    schema = f"bench_{uuid.uuid4().hex[:8]}" if kind == "postgresql" else None
    with tempfile.TemporaryDirectory(prefix="payrelay-ledger-") as where:
        url = POSTGRESQL if kind == "postgresql" else f"sqlite:///{Path(where) / 'ledger.db'}"
        ledger = await Ledger.open(url, schema=schema)
        slots = asyncio.Semaphore(concurrency)

        async def pay(i: int) -> None:
            async with slots:
                key = ("bench-bank", "urn:bench", f"evt-{uuid.uuid4().hex}")
                claim = await ledger.claim(key, owner="bench", lease_seconds=60, invoice_id=f"INV-{i}")
                if claim.status != "claimed":
                    raise RuntimeError(f"payment {i}: {claim.status}")
                recorded = Recorded(f"txn_{i}", f"INV-{i}", "paid", 0, 1000, "USD", datetime.now(UTC), b"[]")
                await ledger.record_success(key, recorded, owner="bench")
                await ledger.mark_confirmed(key)

        try:
            started, cpu = time.perf_counter(), own_cpu_seconds()
            await asyncio.gather(*(pay(i) for i in range(payments)))
            wall, spent = time.perf_counter() - started, own_cpu_seconds() - cpu
        finally:
            await ledger.close()
            if schema:
                conn = await asyncpg.connect(POSTGRESQL)
                try:
                    await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                finally:
                    await conn.close()
    return {"rate": payments / wall, "cpu_us": spent / payments * 1e6, "cores": spent / wall}


def run(args: argparse.Namespace) -> dict[str, Any]:
    runs = [asyncio.run(one_run(args.ledger, args.payments, args.concurrency)) for _ in range(args.runs)]

    def median(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    what = f"{args.ledger}, {args.concurrency} at once"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "command": " ".join([".venv/bin/python -m tests.benchmarks.ledger", *args.argv]).strip(),
        "runs": runs,
        "figures": [
            figure("payments_per_s", f"ledger alone ({what}): payments/s", median("rate"), "payments/s",
                   "claim + record_success + mark_confirmed each; committed in groups"),
            figure("cpu_us", f"ledger alone ({what}): CPU per payment", median("cpu_us"), "µs",
                   "this process: the event loop and the ledger's thread"),
            figure("cores", f"ledger alone ({what}): cores busy", median("cores"), "cores"),
        ],
    }  # fmt: skip


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# payrelay ledger alone ({result['date']})", "", f"- command: `{result['command']}`", "",
             "| what | figure | unit |", "|---|---:|---|"]  # fmt: skip
    lines += [f"| {f['what']} | {f['figure']:,.0f} | {f['unit']} |" for f in result["figures"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--payments", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--ledger", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    result = run(args)
    emit(result, markdown(result), args.json)
    return result


if __name__ == "__main__":
    main()
