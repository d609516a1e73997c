"""The memory scenario (receiver and consumer RSS over many events), and what every scenario measures.

Memory: `payrelay receiver` and `payrelay consumer` run side by side for `events` events, fed in
chunks of 10,000 through the receiver whenever the backlog (sent, not yet confirmed) is under
10,000, so the queue never grows without bound. VmRSS of both (and of the sandbox, for
information) is sampled every few seconds and at every 10,000th confirmation. Warm-up is the
first 10% of events; growth = (RSS at the end - RSS after warm-up) / RSS after warm-up.

The sandbox's request log keeps the newest 100,000 calls, so every `EPOCH` events the feed stops
until all are confirmed (no call can then be in flight), the log is checked (every invoice
recorded exactly once) and cleared. Each chunk has invoices of its own prefix, bulk-created
beforehand (the bulk endpoint takes up to 1,000,000; 10,000 a request keeps each one short).

Shared with scenarios.py: `row` (a figure with its reference and what limits it), `Cpu`
(utime + stime of each process over an interval, /proc/<pid>/stat), the sandbox log's readings
(`recorded_once`, `per_payment`, `window_max`...) and `watch_in_flight` (a consumer's /metrics).
"""

from __future__ import annotations

import asyncio
import bisect
import math
import tempfile
import time
import uuid
from collections import Counter as Tally
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiohttp

from tests.benchmarks.bank_files import (
    broker_pid,
    cpu_seconds,
    delete_topology,
    figure,
    machine_seconds,
    own_cpu_seconds,
    status_kib,
)
from tests.benchmarks.rig import (
    Counter,
    Sandbox,
    consumers,
    counter,
    deposits,
    ledger_url,
    payrelay_env,
    post_batches,
    receiver,
    sandbox,
)

CHUNK = 10_000  # events a feed step posts, and invoices a bulk request creates
BACKLOG = 10_000  # the next chunk is posted once fewer than this wait
EPOCH = 30_000  # events between request-log checks: at 2-3 calls each, within the log's 100,000
WARM_UP = 0.10  # share of the events counted as warm-up
GROWTH_TARGET = 0.10
WINDOW = 60.0  # seconds: Chargebee's (and the sandbox's) rolling minute
MIB = 1024.0
Row = dict[str, Any]
NOT_OURS = {  # CPU rows that are not a process of the run: what they are, and whose work
    "others": ("the rest of the machine's CPU", "other work on the same 2 cores"),
    "stolen": ("CPU the virtual machine's host took (steal)", "the host's other work"),
}
RSS_AT = (("start", "at the start"), ("warm", "after warm-up"), ("end", "at the end"), ("max", "maximum"))
CACHES: dict[str, str] = {  # what holds memory after warm-up; CPython 3.11
    "receiver": "RecentIdentities (service/inbound.py), 100,000 event identities, takes its memory at "
    "start (service/bounded.py: placeholders replaced like for like)",
    "consumer": "InvoiceBook's currencies (consumers/invoices.py), 100,000 invoice ids, takes its memory "
    "at start; what still grows levels off (see the second half) and is not one of our caches: not traced",
    "sandbox": "keeps every invoice, customer, transaction and idempotent answer: grows by design",
}


def row(
    key: str,
    what: str,
    value: float,
    unit: str,
    *,
    reference: float | None = None,
    reference_what: str = "",
    ratio: float | None = None,
    limited_by: str = "",
    notes: str = "",
) -> Row:
    """A report figure, with its reference or target, their ratio, and what limits the figure."""
    found = figure(key, what, value, unit, notes)
    return found | {
        "reference": reference,
        "reference_what": reference_what,
        "ratio": ratio,
        "limited_by": limited_by,
    }


def waited_seconds(pid: int) -> float:
    """Seconds the process's main thread was ready to run but waited for a core (schedstat)."""
    return int(Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[1]) / 1e9


class Cpu:
    """utime + stime of named processes (and of this one) from now on, as shares of a core.

    `others` is what the rest of the machine used meanwhile (another benchmark on the same two
    cores shows there), `stolen` what the virtual machine's host took (steal), and `waits` how
    long each main thread was runnable but had no core: the figures are only as clean as those
    are small.
    """

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids | ({"broker": b} if (b := broker_pid()) else {})
        self.started = time.monotonic()
        self._before, self._waited = self._now(), {who: waited_seconds(p) for who, p in pids.items()}

    def _now(self) -> dict[str, float]:
        mine = {who: cpu_seconds(pid) for who, pid in self.pids.items()} | {"benchmark": own_cpu_seconds()}
        used, stolen = machine_seconds()
        return mine | {"others": used - sum(mine.values()), "stolen": stolen}

    def cores(self) -> dict[str, float]:
        """CPU seconds / wall seconds of each, since this meter was made."""
        wall = time.monotonic() - self.started
        return {who: (spent - self._before[who]) / wall for who, spent in self._now().items()}

    def waits(self) -> dict[str, float]:
        """Share of the wall time each named process's main thread waited for a core."""
        wall = time.monotonic() - self.started
        return {who: (waited_seconds(self.pids[who]) - w) / wall for who, w in self._waited.items()}


def cpu_text(cores: dict[str, float]) -> str:
    return ", ".join(f"{who} {share:.2f}" for who, share in cores.items()) + " cores (2 in all)"


def cpu_rows(key: str, cores: dict[str, float], during: str, waits: dict[str, float]) -> list[Row]:
    """One row per process: its share of a core, against the one core a Python process can use."""
    rows = []
    for who, share in cores.items():
        quiet = who in NOT_OURS
        rows.append(
            row(
                f"{key}.cpu.{who}",
                f"{NOT_OURS[who][0]} {during}" if quiet else f"{who} CPU {during}",
                share,
                "cores",
                reference=None if quiet else 1.0,
                reference_what="0 on a quiet machine" if quiet else "1 core",
                ratio=None if quiet else share,
                limited_by=NOT_OURS[who][1] if quiet else "",
                notes=f"main thread runnable without a core {waits[who]:.0%} of the time"
                if who in waits
                else "",
            )
        )
    return rows


def recorded_once(entries: Iterable[dict[str, Any]], expected: int | None = None) -> dict[str, Any]:
    """Check the sandbox log's record_payment calls: no invoice recorded twice; `expected` recorded.

    A success that Chargebee replayed from its idempotency store recorded nothing new, so it is
    not a second recording; a second non-replayed 200 on one invoice is. Raises RuntimeError.
    """
    payments = [e for e in entries if e["operation"] == "record_payment"]
    fresh = Tally(e["invoice_id"] for e in payments if e["status"] == 200 and not e["replayed"])
    twice = sorted(invoice for invoice, n in fresh.items() if n > 1)
    found = {
        "record_payment_calls": len(payments),
        "recorded": sum(fresh.values()),
        "replayed": sum(1 for e in payments if e["replayed"]),
        "statuses": dict(Tally(str(e["status"]) for e in payments)),
    }
    if twice:
        raise RuntimeError(f"recorded twice: {twice[:10]} ({len(twice)} invoices); {found}")
    if expected is not None and found["recorded"] != expected:
        raise RuntimeError(f"{found['recorded']} record_payment successes, expected {expected}: {found}")
    return found


def per_payment(entries: list[dict[str, Any]], invoices: set[str]) -> dict[str, Any]:
    """Sandbox calls for the benchmark's payments, by operation, and the others (the auth probe).

    A list of invoices names none in its path: on API v2 it is the shared read of payments' invoices.
    """
    ours = [e for e in entries if e.get("invoice_id") in invoices or e["operation"] == "list_invoices"]
    operations = dict(Tally(entry["operation"] for entry in ours))
    return {"calls": len(ours), "by_operation": operations, "other_calls": len(entries) - len(ours)}


def window_max(times: list[float], window: float = WINDOW) -> int:
    """The most calls in any [t, t + window) that starts at a call: exact, since a maximum starts at one."""
    times = sorted(times)
    return max((bisect.bisect_left(times, t + window) - i for i, t in enumerate(times)), default=0)


async def clear_log(box: Sandbox) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.delete(f"{box.url}/sandbox/requests") as response:
            response.raise_for_status()


def consumer_port(pid: int) -> int:
    """The health and metrics port `rig.consumers` gave the process (its `--port`)."""
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return int(args[args.index(b"--port") + 1])


async def scrape(http: aiohttp.ClientSession, port: int) -> dict[str, float]:
    """The consumer's /metrics, each metric summed over its labels."""
    async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.split("{", 1)[0].split(" ", 1)[0], float(line.rsplit(" ", 1)[1])
            found[name] = found.get(name, 0.0) + value
    return found


async def watch_in_flight(pid: int, count: Counter, events: int, seen: list[float]) -> dict[str, float]:
    """Samples the consumer's in-flight gauge from the first confirmation to the last; its metrics then."""
    port = consumer_port(pid)
    async with aiohttp.ClientSession() as http:
        while count.got < events:
            if count.got:
                seen.append((await scrape(http, port))["payrelay_consumer_in_flight"])
            await asyncio.sleep(0.25)
        return await scrape(http, port)


def ledger_bytes(tmp: Path) -> int:
    """The SQLite ledger's size on disk: the database, its WAL and shared-memory index."""
    return sum(path.stat().st_size for path in tmp.glob("ledger.db*"))


def rss_mib(pids: dict[str, int]) -> dict[str, float]:
    return {who: status_kib(pid, "VmRSS") / MIB for who, pid in pids.items()}


def sample(pids: dict[str, int], count: Counter, started: float) -> dict[str, Any]:
    """Seconds since `started`, confirmations so far, and each process's VmRSS in MiB."""
    return {"t": round(time.monotonic() - started, 2), "confirmed": count.got, **rss_mib(pids)}


async def sample_forever(
    pids: dict[str, int], count: Counter, samples: list[dict[str, Any]], every: float, step: int
) -> None:
    """A sample every `every` seconds and at every `step`-th confirmation."""
    started, last, mark = time.monotonic(), -math.inf, 0
    while True:
        if time.monotonic() - last >= every or count.got >= mark + step:
            samples.append(sample(pids, count, started))
            last, mark = time.monotonic(), count.got - count.got % step
        await asyncio.sleep(0.25)


async def memory_scenario(events: int, sample_seconds: float = 5.0) -> tuple[list[Row], dict[str, Any]]:
    """Rows for the report, and the raw samples."""
    prefix, tag = f"benchmem{uuid.uuid4().hex[:6]}", uuid.uuid4().hex[:4]
    chunks = [(f"M{tag}{k}-", min(CHUNK, events - start)) for k, start in enumerate(range(0, events, CHUNK))]
    samples: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="payrelay-memory-") as where:
        tmp = Path(where)
        try:
            async with sandbox(tmp) as box:
                for name, size in chunks:
                    await box.invoices(name, size, total=1000, currency="USD")
                env = payrelay_env(
                    tmp, prefix, box.url, ledger_url(tmp, "sqlite"), PAYRELAY_CHARGEBEE_RATE_LIMIT="0"
                )
                async with counter(prefix) as count, receiver(env, tmp) as (rpid, url):
                    async with consumers(env, tmp, 1) as [cpid]:
                        pids = {"receiver": rpid, "consumer": cpid, "sandbox": box.pid}
                        cpu = Cpu(pids)
                        step = max(events // 20, 1) if events < 200_000 else CHUNK
                        started = time.monotonic()
                        sampler = asyncio.create_task(
                            sample_forever(pids, count, samples, sample_seconds, step)
                        )
                        checked = await _feed(box, url, chunks, count)
                        wall = time.monotonic() - started
                        await asyncio.sleep(1.0)  # a duplicate confirmation would arrive by now
                        sampler.cancel()
                        samples.append(sample(pids, count, started))
                        cores, waits = cpu.cores(), cpu.waits()
                        if count.got != events:
                            raise RuntimeError(f"{count.got} confirmations for {events} events")
                ledger = ledger_bytes(tmp)
        finally:
            await delete_topology(prefix)
    raw = {
        "events": events,
        "seconds": wall,
        "samples": samples,
        "cpu_cores": cores,
        "cpu_waits": waits,
        "ledger_bytes": ledger,
        "log_checks": checked,
    }
    return memory_rows(raw), raw


async def _feed(
    box: Sandbox, url: str, chunks: list[tuple[str, int]], count: Counter
) -> list[dict[str, Any]]:
    """Post the chunks while the consumer drains; every EPOCH events, drain and check the log."""
    sent, since_check, checked = 0, 0, []
    for n, (name, size) in enumerate(chunks):
        await count.wait(sent - BACKLOG + 1)  # fewer than BACKLOG unconfirmed
        sent += await post_batches(url, deposits(size, prefix=name))
        since_check += size
        if since_check >= EPOCH or n == len(chunks) - 1:
            await count.wait(sent)  # every confirmation in: no call is in flight
            checked.append(recorded_once(await box.requests("record_payment"), since_check))
            await clear_log(box)
            since_check = 0
    return checked


def growth(samples: list[dict[str, Any]], who: str, events: int) -> dict[str, float]:
    """RSS at start, after warm-up, at the end and its maximum (MiB); growth after warm-up and over
    the second half (once every entry of the caches of 100,000 has been replaced: see CACHES)."""
    warm = next(s for s in samples if s["confirmed"] >= WARM_UP * events)
    half = next(s for s in samples if s["confirmed"] >= events / 2)
    start, end = samples[0][who], samples[-1][who]
    return {
        "start": start,
        "warm": warm[who],
        "end": end,
        "max": max(s[who] for s in samples),
        "growth": (end - warm[who]) / warm[who],
        "late_growth": (end - half[who]) / half[who],
        "warm_at": warm["confirmed"],
    }


def growth_row(who: str, key: str, what: str, value: float, limited_by: str, notes: str = "") -> Row:
    """A growth figure against the 10% target (the sandbox's only for information)."""
    target = GROWTH_TARGET if who != "sandbox" else None
    return row(
        f"memory.{who}.{key}",
        f"{who} RSS growth {what}",
        value,
        "share",
        reference=target,
        reference_what="< 10%" if target else "for information",
        ratio=value / target if target else None,
        limited_by=limited_by,
        notes=notes,
    )


def memory_rows(raw: dict[str, Any]) -> list[Row]:
    events, samples, cores = raw["events"], raw["samples"], raw["cpu_cores"]
    rate = events / raw["seconds"]
    rows = [
        row(
            "memory.rate",
            "memory run: events through receiver and consumer",
            rate,
            "events/s",
            limited_by=f"the consumer (the slower stage; its main thread waited for a core "
            f"{raw['cpu_waits']['consumer']:.0%} of the time); {cpu_text(cores)}",
            notes=f"{events:,} events in {raw['seconds']:.0f} s, fed in chunks of {CHUNK:,} "
            f"while the backlog is under {BACKLOG:,}, drained every {EPOCH:,}",
        )
    ]
    for who in ("receiver", "consumer", "sandbox"):
        g = growth(samples, who, events)
        notes = (
            f"start {g['start']:.1f}, after warm-up ({g['warm_at']:,} confirmed) {g['warm']:.1f}, "
            f"end {g['end']:.1f}, max {g['max']:.1f} MiB"
        )
        rows += [
            row(f"memory.{who}.rss_{at}_mib", f"{who} RSS {label}", g[at], "MiB") for at, label in RSS_AT
        ]
        rows.append(growth_row(who, "growth", "after warm-up", g["growth"], CACHES[who], notes))
        late = "every entry of the caches of 100,000 replaced at least once" if who != "sandbox" else ""
        rows.append(growth_row(who, "late_growth", "over the second half", g["late_growth"], late))
    size = raw["ledger_bytes"]
    notes = f"{size / events:.0f} bytes per event (ledger.db + WAL)"
    rows.append(
        row("memory.ledger_mib", "SQLite ledger file(s) at the end", size / MIB / MIB, "MiB", notes=notes)
    )
    return rows + cpu_rows("memory", cores, "over the memory run", raw["cpu_waits"])
