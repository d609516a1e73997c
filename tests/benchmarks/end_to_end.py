"""End to end, side by side: queued deposits recorded in Chargebee and confirmed, payrelay and a peer.

    .venv/bin/python -m tests.benchmarks.end_to_end [--events 8000] [--runs 3] [--peer-events 1500]
        [--prefetch N] [--json PATH]

Each run is a world of its own: a fresh prefix, a fresh `payrelay sandbox` (zero latency, no
rate limit) with fresh invoices (`B{run}x{tag}-…`), the work queue filled through `payrelay
receiver` before any consumer starts (tests/benchmarks/rig.py). Then every consumer process is
launched, before any is waited for: `payrelay consumer` (1 or 2; default settings but the rig's
names and `PAYRELAY_CHARGEBEE_RATE_LIMIT=0`, the 150/min default being a scenario of its own) on
SQLite (a fresh file) or the machine's PostgreSQL (shared tables: UUID event ids, fresh
invoices), or the FastStream + SDK peer (peers/faststream_consumer.py) on `--peer-events`, both
with the same prefetch. Scenarios alternate run by run, so drift hits all of them alike.

events/s is (N - 1) / (last - first `payment.recorded` seen by a counter); startup (launch to first
confirmation) is apart. Over that window: CPU (utime + stime, /proc/<pid>/stat) of each process and
its main thread, and at 100 Hz whether a thread of it is in state D (fsync). A main thread near one
core limits a figure; a thread mostly in D, the disk; neither, round trips. A run must end with
exactly N payments in the sandbox, one per invoice, an empty queue and N confirmations, or raise.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp

from service.settings import ConsumerSettings
from tests.benchmarks import bank_files as bench
from tests.benchmarks import rig
from tests.benchmarks.peers.faststream_consumer import READY

ROOT = Path(__file__).resolve().parents[2]
PEER = "tests.benchmarks.peers.faststream_consumer"
TARGET = 1000.0  # events/s: the target for 1 consumer on the default ledger...
PEER_FACTOR = 15.0  # ...and at least this many times the peer
DEFAULT_PREFETCH = ConsumerSettings().prefetch  # payrelay's, and so the peer's unless --prefetch
SATURATED = 0.8  # a main thread this busy (of one core) is what limits the figure
DISK_BOUND = 0.3  # a process with a thread in D this often is waiting on the disk
STALL = 120.0  # seconds without a new confirmation: the run has failed
TICK = 0.01  # seconds between samples of thread states
INVOICE_TOTAL = 100_000  # minor units; each deposit is 10.00, so no invoice is ever paid off
_TROUBLE = re.compile(r"\b(ERROR|CRITICAL|Traceback)\b")


@dataclass(frozen=True, slots=True)
class Scenario:
    key: str
    label: str
    peer: bool
    ledger: str
    processes: int


SCENARIOS = (
    Scenario("sqlite_1", "payrelay, 1 consumer, SQLite (default ledger)", False, "sqlite", 1),
    Scenario("sqlite_2", "payrelay, 2 consumers, SQLite", False, "sqlite", 2),
    Scenario("postgresql_1", "payrelay, 1 consumer, PostgreSQL", False, "postgresql", 1),
    Scenario("postgresql_2", "payrelay, 2 consumers, PostgreSQL", False, "postgresql", 2),
    Scenario("peer", "FastStream + Chargebee SDK peer, 1 process", True, "sqlite", 1),
)
LABELS = {s.key: s.label for s in SCENARIOS}


# --- what each process does over the drain ---------------------------------------------------------


def _stat(path: Path) -> list[str]:
    return path.read_text().rpartition(")")[2].split()  # fields from the 3rd (state) on


def _cpu(pid: int, tid: int | None = None) -> float:
    with suppress(OSError):
        fields = _stat(Path(f"/proc/{pid}" + (f"/task/{tid}" if tid else "") + "/stat"))
        return (int(fields[11]) + int(fields[12])) / bench.TICK
    return 0.0


def _postgres() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        with suppress(OSError):
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == "postgres":
                found.append(int(entry.name))
    return found


class Watch:
    """CPU seconds of each process and its main thread, and how often some thread of it is in D.

    PostgreSQL is one process, every `postgres` process summed (one that ends is lost). The
    broker's main thread and states mean nothing (Erlang runs threads of its own): not kept.
    "others": the CPU the machine's processes used less all of these, processes that are not part
    of the run; "stolen": what the virtual machine's host took (steal).
    """

    def __init__(self, pids: dict[str, int], postgres: bool) -> None:
        self.groups = {name: [pid] for name, pid in pids.items()}
        self.groups |= {"postgres": _postgres()} if postgres else {}
        self.samples, self.waiting = 0, {name: 0 for name in self.groups if name != "broker"}

    def cpu(self) -> tuple[dict[str, float], dict[str, float], float]:
        if "postgres" in self.groups:
            self.groups["postgres"] = _postgres()
        total = {name: sum(_cpu(pid) for pid in pids) for name, pids in self.groups.items()}
        used, stolen = bench.machine_seconds()
        total["others"] = used - sum(total.values())  # whatever else runs on the machine
        total["stolen"] = stolen
        main = {n: _cpu(p[0], p[0]) for n, p in self.groups.items() if n not in ("broker", "postgres")}
        return total, main, time.monotonic()

    def tick(self) -> None:
        self.samples += 1
        for name in self.waiting:
            states = []
            for pid in self.groups[name]:
                with suppress(OSError):
                    states += [_stat(task / "stat")[0] for task in Path(f"/proc/{pid}/task").iterdir()]
            self.waiting[name] += "D" in states


def limited_by(m: dict[str, Any], cores: int) -> str:
    """What the figures say limits a run: a main thread on the CPU, the disk, the machine, or waits."""
    cpu, main, disk = m["cpu"], m["main"], m["disk"]
    said = [f"{n}'s main thread on the CPU ({main[n]:.2f} core)" for n in main if main[n] >= SATURATED]
    # Python threads of one process share one interpreter lock: together they are one core at most.
    said += [
        f"{n}'s threads together on the interpreter lock ({cpu[n]:.2f} core, main thread {main[n]:.2f})"
        for n in main
        if main[n] < SATURATED <= cpu.get(n, 0.0) and n not in ("broker", "postgres")
    ]
    said += [f"{n} on the disk (in D {d:.0%} of the time)" for n, d in disk.items() if d >= DISK_BOUND]
    if (total := sum(cpu.values())) >= 0.9 * cores:
        said.append(
            f"the machine ({total:.2f} of {cores} cores busy, {cpu['others']:.2f} by others, "
            f"{cpu['stolen']:.2f} stolen by its host)"
        )
    said = said or ["no thread on the CPU nor on the disk: waiting on round trips"]
    busy = ", ".join(f"{n} {v:.2f}" for n, v in sorted(cpu.items(), key=lambda kv: -kv[1]))
    mains = ", ".join(f"{n} {v:.2f}" for n, v in main.items())
    return f"{'; '.join(said)}. Cores: {busy} (main threads: {mains})"


# --- one run ---------------------------------------------------------------------------------------


def _tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


async def _ready(proc: asyncio.subprocess.Process, log: Path, url: str | None) -> None:
    """Until `url` answers 200 (payrelay's /readyz) or, without one, the log says READY (the peer)."""
    async with aiohttp.ClientSession() as http:
        for _ in range(1200):
            if proc.returncode is not None:
                break
            if url is None and READY in await asyncio.to_thread(_tail, log, 10**6):
                return
            if url is not None:
                with suppress(aiohttp.ClientError):
                    async with http.get(url) as response:
                        if response.status == 200:
                            return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{log.name}: did not start\n{_tail(log)}")


@asynccontextmanager
async def workers(s: Scenario, env: dict[str, str], tmp: Path) -> AsyncIterator[dict[str, int]]:
    """The scenario's consumer processes, every one launched before any is waited for; their pids."""
    launches: list[tuple[str, list[str], str | None]] = [("peer", [sys.executable, "-m", PEER], None)]
    if not s.peer:
        ports = [bench.free_port() for _ in range(s.processes)]
        consumer = [bench.PAYRELAY, "consumer", "--host", "127.0.0.1", "--port"]
        launches = [(f"consumer-{i}", [*consumer, str(port)], f"http://127.0.0.1:{port}/readyz")
                    for i, port in enumerate(ports)]  # fmt: skip
    procs: dict[str, asyncio.subprocess.Process] = {}
    try:
        for name, argv, _ in launches:
            with (tmp / f"{name}.log").open("wb") as f:
                procs[name] = await asyncio.create_subprocess_exec(*argv, env=env, stdout=f, stderr=f)
        await asyncio.gather(*(_ready(procs[name], tmp / f"{name}.log", url) for name, _, url in launches))
        yield {name: proc.pid for name, proc in procs.items()}
    finally:
        await asyncio.gather(*(rig.stop(proc) for proc in procs.values()))


async def _until(done: Callable[[], bool], count: rig.Counter, watch: Watch, logs: list[Path]) -> None:
    seen, since = count.got, time.monotonic()
    while not done():
        await asyncio.sleep(TICK)
        watch.tick()
        if count.got != seen:
            seen, since = count.got, time.monotonic()
        elif time.monotonic() - since > STALL:
            shown = "\n".join(f"--- {log.name}\n{_tail(log)}" for log in logs)
            raise RuntimeError(f"no confirmation for {STALL:.0f} s at {count.got}\n{shown}")


async def drain(count: rig.Counter, events: int, watch: Watch, logs: list[Path]) -> dict[str, Any]:
    """Every confirmation; cores and disk waits of each process from the first one to the last."""
    await _until(lambda: count.got > 0, count, watch, logs)
    total0, main0, wall0 = watch.cpu()
    watch.samples, watch.waiting = 0, dict.fromkeys(watch.waiting, 0)
    await _until(lambda: count.got >= events, count, watch, logs)
    total1, main1, wall1 = watch.cpu()
    wall, samples = wall1 - wall0, max(watch.samples, 1)
    return {
        "cpu": {name: (total1[name] - total0[name]) / wall for name in total1},
        "main": {name: (main1[name] - main0[name]) / wall for name in main1},
        "disk": {name: waits / samples for name, waits in watch.waiting.items()},
    }


async def queue_depth(prefix: str) -> int:
    connection = await aio_pika.connect(bench.AMQP)
    try:
        declared = await (await connection.channel()).declare_queue(f"{prefix}.record-payment", passive=True)
        return int(declared.declaration_result.message_count or 0)
    finally:
        await connection.close()


async def recorded(box: rig.Sandbox, invoices: str, events: int) -> dict[str, int]:
    """Exactly one payment per invoice, `events` in all, or RuntimeError: a double record fails."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{box.url}/sandbox/requests", params={"operation": "all"}) as response:
            log = await response.json()
    posts = [c for c in log["requests"] if c["operation"] == "record_payment"]
    applied = [c["invoice_id"] for c in posts if c["status"] == 200 and not c["replayed"]]
    if log["dropped"] or sorted(applied) != sorted(f"{invoices}{i + 1}" for i in range(events)):
        found = f"{len(applied)} payments on {len(set(applied))} invoices ({log['dropped']} entries dropped)"
        raise RuntimeError(f"the sandbox recorded {found} for {events} events")
    return {"payments": len(applied), "record_payment_calls": len(posts), "api_calls": len(log["requests"])}


def trouble(logs: list[Path]) -> dict[str, Any]:
    """ERROR/CRITICAL/Traceback lines in the consumers' logs: how many, and the first."""
    lines = [line for log in logs for line in _tail(log, 10**9).splitlines() if _TROUBLE.search(line)]
    return {"lines": len(lines), "first": lines[0][:300] if lines else ""}


def worker_env(env: dict[str, str], prefix: str, box: rig.Sandbox, prefetch: int | None) -> dict[str, str]:
    """payrelay's settings (no client-side rate limit), the peer's, and where to import the peer from."""
    own = {"PAYRELAY_CONSUMER_PREFETCH": str(prefetch)} if prefetch else {}
    peer = {"PEER_AMQP_URL": bench.AMQP, "PEER_PREFIX": prefix, "PEER_CHARGEBEE_URL": box.url}
    peer |= {"PEER_API_KEY": rig.SANDBOX_KEY, "PEER_PREFETCH": str(prefetch or DEFAULT_PREFETCH)}
    return env | {"PAYRELAY_CHARGEBEE_RATE_LIMIT": "0", "PYTHONPATH": str(ROOT)} | own | peer


async def one_run(s: Scenario, events: int, run: int, prefetch: int | None, root: Path) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    tmp, prefix, invoices = root / f"{s.key}-{run}", f"e2e{tag}", f"B{run}x{tag}-"
    tmp.mkdir()
    logs = [tmp / f"{n}.log" for n in (["peer"] if s.peer else [f"consumer-{i}" for i in range(s.processes)])]
    try:
        async with rig.sandbox(tmp, latency_ms=0, rate_limit=0) as box:
            await box.invoices(invoices, events, total=INVOICE_TOTAL, currency="USD")
            env = rig.payrelay_env(tmp, prefix, box.url, rig.ledger_url(tmp, s.ledger))
            async with rig.counter(prefix) as count:
                await rig.fill(env, tmp, rig.deposits(events, invoices))
                if (queued := await queue_depth(prefix)) != events:
                    raise RuntimeError(f"{queued} events queued of {events}")
                started = time.monotonic()
                async with workers(s, worker_env(env, prefix, box, prefetch), tmp) as pids:
                    watched = pids | {"sandbox": box.pid, "benchmark": os.getpid()}
                    watched |= {"broker": broker} if (broker := bench.broker_pid()) else {}
                    found = await drain(count, events, Watch(watched, s.ledger == "postgresql"), logs)
                    await asyncio.sleep(0.5)  # a duplicate confirmation would have arrived by now
                if (left := await queue_depth(prefix)) or count.got != events:
                    raise RuntimeError(f"{left} events still queued, {count.got} confirmations of {events}")
            found |= await recorded(box, invoices, events)
    except BaseException:
        for log in logs:
            print(f"--- {s.key} run {run}: {log.name}\n{_tail(log)}", file=sys.stderr)
        raise
    finally:
        await bench.delete_topology(prefix)
    assert count.first is not None and count.last is not None
    window = count.last - count.first
    return found | {"events": events, "rate": (events - 1) / window, "first_to_last_s": window,
                    "startup_s": count.first - started, "log_trouble": trouble(logs)}  # fmt: skip


# --- the report ------------------------------------------------------------------------------------


def summary(runs: list[dict[str, Any]], cores: int) -> dict[str, Any]:
    """Medians over the runs: the rate, startup, each process's cores, main thread and disk waits."""
    m: dict[str, Any] = {
        part: {k: statistics.median(r[part].get(k, 0.0) for r in runs) for k in runs[0][part]}
        for part in ("cpu", "main", "disk")
    }
    m |= {key: statistics.median(r[key] for r in runs) for key in ("rate", "startup_s")}
    m["calls_per_event"] = statistics.median(r["api_calls"] / r["events"] for r in runs)
    m["log_trouble"] = sum(r["log_trouble"]["lines"] for r in runs)
    m["limited_by"] = limited_by(m, cores)
    return m


def row(key: str, what: str, ours: float | None, ref: float, kind: str, note: str) -> dict[str, Any]:
    ratio = ours / ref if ours is not None and ref else None
    return dict(key=key, what=what, payrelay=ours, reference=ref, reference_is=kind, ratio=ratio, note=note)


def table(medians: dict[str, dict[str, Any]], events: dict[str, int]) -> list[dict[str, Any]]:
    """Each payrelay scenario against the target; the default one against the peer; the peer."""
    rows = []
    for key, m in medians.items():
        what = f"{LABELS[key]}, {events[key]} events"
        note = f"{m['limited_by']}. Startup {m['startup_s']:.1f} s; {m['calls_per_event']:.2f} calls/event"
        note += f"; {m['log_trouble']} error lines in its logs" if m["log_trouble"] else ""
        if key.endswith("_2"):
            note += f"; {m['rate'] / medians[key[:-1] + '1']['rate']:.2f}x its 1-consumer figure"
        ours, reference = (None, "the peer alone") if key == "peer" else (m["rate"], "target")
        rows.append(row(key, what, ours, m["rate"] if key == "peer" else TARGET, reference, note))
    ours, peer = medians["sqlite_1"]["rate"], medians["peer"]["rate"]
    note = f"the target is {PEER_FACTOR:.0f}x; each side as in its own row"
    rows.insert(1, row("vs_peer", f"{LABELS['sqlite_1']}, against the peer", ours, peer, "the peer", note))
    return rows


def markdown(report: dict[str, Any]) -> str:
    box, ev = report["machine"], report["events"]
    lines = [
        f"# payrelay end to end, side by side ({report['date']})",
        "",
        f"- machine: {box['cores']} cores, {box['memory_gib']} GiB memory, Python {box['python']}",
        f"- command: `{report['command']}`",
        f"- medians of {report['runs_each']} runs a scenario; {ev['sqlite_1']} events for payrelay, "
        f"{ev['peer']} for the peer; queues filled through `payrelay receiver` before consumers start",
        f"- zero-latency sandbox, no rate limit anywhere; prefetch {report['prefetch']} for both consumers",
        "- events/s: (N - 1) / (last - first confirmation); startup (launch to first confirmation) apart; "
        "cores: utime + stime over that window",
        "- others: cores taken meanwhile by processes outside the run; stolen: by the virtual machine's host "
        "(steal); a shared machine lowers every figure",
        "",
        "| what | payrelay | reference | ratio | limited by |",
        "|---|---:|---:|---:|---|",
    ]
    for r in report["table"]:
        ours = "—" if r["payrelay"] is None else f"{r['payrelay']:,.0f} events/s"
        ratio = "—" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        reference = f"{r['reference']:,.1f} events/s ({r['reference_is']})"
        lines.append(f"| {r['what']} | {ours} | {reference} | {ratio} | {r['note']} |")
    columns = ("scenario", "run", "events/s", "first→last s", "startup s", "others, cores", "stolen, cores",
               "log errors")  # fmt: skip
    lines += ["", "| " + " | ".join(columns) + " |", "|---|" + "---:|" * (len(columns) - 1)]
    for key, runs in report["runs"].items():
        for i, r in enumerate(runs, 1):
            timing = f"{r['rate']:,.1f} | {r['first_to_last_s']:.2f} | {r['startup_s']:.2f}"
            lines.append(
                f"| {key} | {i} | {timing} | {r['cpu']['others']:.2f} | {r['cpu']['stolen']:.2f} "
                f"| {r['log_trouble']['lines']} |"
            )
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    events = {s.key: args.peer_events if s.peer else args.events for s in SCENARIOS}
    runs: dict[str, list[dict[str, Any]]] = {s.key: [] for s in SCENARIOS}
    with tempfile.TemporaryDirectory(prefix="payrelay-e2e-") as where:
        for i in range(1, args.runs + 1):
            for s in SCENARIOS:
                runs[s.key].append(await one_run(s, events[s.key], i, args.prefetch, Path(where)))
    medians = {key: summary(found, os.cpu_count() or 1) for key, found in runs.items()}
    rows = table(medians, events)
    figures = []
    for k, m in medians.items():
        figures.append(bench.figure(f"{k}.events_per_s", LABELS[k], m["rate"], "events/s", m["limited_by"]))
        figures.append(bench.figure(f"{k}.startup_s", f"{LABELS[k]}: startup", m["startup_s"], "s"))
    figures += [bench.figure(f"ratio.{r['key']}", r["what"], r["ratio"], "x") for r in rows if r["ratio"]]
    command = " ".join([".venv/bin/python -m tests.benchmarks.end_to_end", *args.argv])
    return {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": bench.machine(), "command": command,
            "runs_each": args.runs, "events": events, "prefetch": args.prefetch or DEFAULT_PREFETCH,
            "figures": figures, "table": rows, "medians": medians, "runs": runs}  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=8000, help="queued deposits per payrelay run")
    parser.add_argument("--peer-events", type=int, default=1500, help="queued deposits per peer run")
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario; figures are medians")
    parser.add_argument("--prefetch", type=int, help="both consumers' prefetch (default: payrelay's)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    result = asyncio.run(run(args))
    bench.emit(result, markdown(result), args.json)
    return result


if __name__ == "__main__":
    main()
