"""Batch ingest against its reference: `payrelay receiver` taking batches, and raw aio-pika.

    .venv/bin/python -m tests.benchmarks.batch [--seconds 10] [--runs 3] [--batch 100]
        [--connections 16] [--json PATH]

Two targets in one run, on the same exchange and quorum queue, with the same event bodies:

- **payrelay**: `payrelay receiver` as its own process (default settings), driven by wrk (one
  thread, `--connections`) with distinct pre-signed `application/cloudevents-batch+json` requests
  of `--batch` events each; each is answered 202 only once RabbitMQ confirmed all of its events.
- **raw**: what RabbitMQ and aio-pika can do on this machine: one Python process (this module,
  `--raw-child`) publishing those events one message each, as the receiver would (exchange,
  routing key, persistent, message_id, content_type, type, headers, mandatory), with publisher
  confirms, `--connections` windows of `--batch` publishes in flight (`asyncio.gather`), each
  window awaited to its last confirm: as many events in flight as the receiver can have.

events/s is requests/s × batch for payrelay, confirmed publishes/s for raw; the ratio is payrelay's
over raw's (the issue's target: at least 0.8). Every run checks that the work queue grew by what
was sent (and purges it); the CPU columns are utime + stime over the timed window of each process,
per core, so they say which one limits a figure. The targets alternate order round by round; the
table gives medians. wrk, the receiver or publisher, and RabbitMQ share the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import orjson

from service import messages
from service.broker import CLOUDEVENTS_JSON
from service.events import BATCH
from service.sender import example_event, signed_headers
from tests.benchmarks.bank_files import (
    AMQP,
    SECRET,
    broker_pid,
    cpu_seconds,
    delete_topology,
    emit,
    figure,
    machine,
    machine_seconds,
)
from tests.benchmarks.ingest import _wrk, declare, parse_wrk, server

SOURCE = "acme-bank"
TARGETS = ("payrelay", "raw")
LABELS = {"payrelay": "payrelay receiver, batches", "raw": "raw aio-pika, pipelined confirmed publishes"}
MEASURES = {  # target -> (key, what, unit); medians over the runs, but non_2xx: all of them
    "payrelay": (
        ("events_per_s", "events/s", "events/s"),
        ("rate", "requests/s", "req/s"),
        ("p50_ms", "p50 request latency", "ms"),
        ("p99_ms", "p99 request latency", "ms"),
        ("cpu_receiver", "receiver CPU", "cores"),
        ("cpu_broker", "RabbitMQ CPU meanwhile", "cores"),
        ("cpu_wrk", "wrk CPU (load generator)", "cores"),
        ("cpu_other", "CPU of anything else on the machine meanwhile", "cores"),
        ("cpu_stolen", "CPU the virtual machine's host took meanwhile (steal)", "cores"),
        ("non_2xx", "answers other than 2xx, all runs", "responses"),
    ),
    "raw": (
        ("events_per_s", "events/s", "events/s"),
        ("cpu_publisher", "publisher CPU (its own load generator)", "cores"),
        ("cpu_broker", "RabbitMQ CPU meanwhile", "cores"),
        ("cpu_other", "CPU of anything else on the machine meanwhile", "cores"),
        ("cpu_stolen", "CPU the virtual machine's host took meanwhile (steal)", "cores"),
    ),
}
EVENTS_PER_SECOND_CAP = 25_000  # the most events/s a run's pre-signed pool is sized for
RAW_POOL = 20_000  # messages the raw publisher builds beforehand (aio-pika's take ~4 KiB each)
_PLAIN = frozenset(range(32, 127)) - {34, 92}  # bytes a Lua string literal holds as they are


def batch_events(count: int, first: int) -> list[dict[str, Any]]:
    """`count` distinct deposits (fresh ids), invoices BENCH-{first} onwards."""
    return [
        example_event("bank.deposit", amount="10.00", currency="USD", invoice_id=f"BENCH-{first + i}")
        for i in range(count)
    ]


def _lua_string(raw: bytes) -> str:
    """`raw` as the inside of a Lua string literal, escaped as ingest.lua_requests escapes it
    (printable ASCII as it is but `"` and `\\`, any other byte `\\ddd`), at C speed: a batch is
    tens of KB and a run hundreds of them."""
    text = raw.replace(b"\\", b"\\092")
    for byte in sorted(set(raw) - _PLAIN - {92}):
        text = text.replace(bytes([byte]), b"\\%03d" % byte)
    return text.decode("ascii")


def lua_batches(path: Path, events: list[dict[str, Any]], batch: int, port: int) -> None:
    """A wrk script sending `events` in distinct pre-signed batches of `batch` events.

    Should wrk run out, it starts again (repeats, which the receiver answers without publishing)
    and its `done` prints `wrapped: N`, which `one_payrelay` refuses.
    """
    out = ["local reqs = {}", "wraps = 0"]
    for i in range(0, len(events) - batch + 1, batch):
        body = orjson.dumps(events[i : i + batch])
        head = "".join(f"{k}: {v}\r\n" for k, v in signed_headers(SECRET, body, BATCH).items())
        raw = (
            f"POST /v1/ingest/{SOURCE} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{head}"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        out.append(f'reqs[{i // batch + 1}] = "{_lua_string(raw)}"')
    out.append(
        """
local threads = {}
function setup(thread) table.insert(threads, thread) end
local n = 0
function request()
  n = n + 1
  if n > #reqs then n = 1; wraps = wraps + 1 end
  return reqs[n]
end
function done(summary, latency, requests)
  for _, thread in ipairs(threads) do io.write(string.format("wrapped: %d\\n", thread:get("wraps"))) end
end
"""
    )
    path.write_text("\n".join(out))


class WorkQueue:
    """The work queue's depth and purge, on a connection of the benchmark's own."""

    def __init__(self, connection: aio_pika.abc.AbstractConnection, name: str) -> None:
        self.connection, self.name = connection, name

    async def depth(self) -> int:
        channel = await self.connection.channel()
        try:
            queue = await channel.declare_queue(self.name, passive=True)
            return queue.declaration_result.message_count or 0
        finally:
            await channel.close()

    async def purge(self) -> None:
        channel = await self.connection.channel()
        try:
            await (await channel.get_queue(self.name, ensure=False)).purge()
        finally:
            await channel.close()


class Busy:
    """Cores each process keeps busy from now to `cores()`: utime + stime (/proc/<pid>/stat) per second.

    With `children`, also `wrk`: the children this process reaps meanwhile, which is wrk alone
    (RUSAGE_CHILDREN counts a child once it is waited for: the receiver's is after the run).
    `cpu_other` is the rest of the machine's busy time (/proc/stat): anything else running then
    took cores from the benchmark, and the figure says by how much; `cpu_stolen` is what the
    virtual machine's host took (steal), apart.
    """

    def __init__(self, pids: dict[str, int | None], *, children: bool = True) -> None:
        self.pids = {who: pid for who, pid in pids.items() if pid is not None}
        self.children = children
        self.before = {who: cpu_seconds(pid) for who, pid in self.pids.items()}
        self.reaped, self.machine = _children_seconds(), machine_seconds()
        self.started, self.wall = time.monotonic(), 0.0

    def cores(self) -> dict[str, float]:
        """{"cpu_<who>": cores, ..., "wall": seconds since the start}."""
        self.wall = wall = time.monotonic() - self.started
        found = {f"cpu_{who}": (cpu_seconds(pid) - self.before[who]) / wall for who, pid in self.pids.items()}
        if self.children:
            found["cpu_wrk"] = (_children_seconds() - self.reaped) / wall
        used, stolen = (now - then for now, then in zip(machine_seconds(), self.machine, strict=True))
        found["cpu_other"] = max(0.0, used / wall - sum(found.values()))
        found["cpu_stolen"] = stolen / wall
        return found | {"wall": wall}


def _children_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def settled_depth(work: WorkQueue, at_least: int) -> int:
    """The depth once it reaches `at_least`, or stops growing (a publish may finish after wrk stops)."""
    depth, last = await work.depth(), -1
    for _ in range(50):
        if depth >= at_least and depth == last:
            break
        await asyncio.sleep(0.1)
        depth, last = await work.depth(), depth
    return depth


async def one_payrelay(
    args: argparse.Namespace, tmp: Path, prefix: str, events: list[dict[str, Any]], work: WorkQueue
) -> dict[str, float]:
    async with server("payrelay", tmp, prefix) as (pid, url):
        port = int(url.rsplit(":", 1)[1])
        warm, script = tmp / "warm.lua", tmp / "run.lua"
        await asyncio.to_thread(lua_batches, warm, batch_events(50 * args.batch, 0), args.batch, port)
        await asyncio.to_thread(_wrk, warm, url, 2, args.connections)
        await settled_depth(work, 0)  # the batches wrk left in flight, published after it stopped
        await work.purge()
        await asyncio.to_thread(lua_batches, script, events, args.batch, port)
        busy = Busy({"receiver": pid, "broker": broker_pid()})
        text = await asyncio.to_thread(_wrk, script, url, args.seconds, args.connections)
        cpu = busy.cores()
    result = parse_wrk(text)
    wrapped = int(text.rpartition("wrapped: ")[2].split()[0]) if "wrapped: " in text else -1
    if wrapped != 0:
        raise RuntimeError(f"wrk ran out of batches (wrapped: {wrapped}): raise EVENTS_PER_SECOND_CAP")
    sent = int(result["requests"]) * args.batch
    queued = await settled_depth(work, sent)
    # wrk counts answered requests; those still in flight when it stopped may have been published.
    if not sent <= queued <= sent + args.connections * args.batch:
        raise RuntimeError(f"{sent} events answered 202 but the work queue holds {queued}")
    await work.purge()
    result |= {"events_per_s": result["rate"] * args.batch, "events": sent, "queued": queued}
    return result | cpu


async def one_raw(
    args: argparse.Namespace, tmp: Path, prefix: str, events: list[dict[str, Any]], work: WorkQueue
) -> dict[str, float]:
    bodies = tmp / "bodies.json"
    await asyncio.to_thread(bodies.write_bytes, orjson.dumps(events[:RAW_POOL]))
    sizes = {"--seconds": args.seconds, "--batch": args.batch, "--connections": args.connections}
    command = [sys.executable, "-m", "tests.benchmarks.batch", "--raw-child", str(bodies), "--prefix", prefix]
    command += [str(part) for pair in sizes.items() for part in pair]
    child = await asyncio.create_subprocess_exec(*command, stdout=subprocess.PIPE, cwd=Path.cwd())
    out, _ = await child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"the raw publisher failed ({child.returncode})")
    result: dict[str, float] = orjson.loads(out.splitlines()[-1])
    queued = await settled_depth(work, int(result["events"]))
    if queued != result["events"]:
        raise RuntimeError(f"{result['events']} publishes confirmed but the work queue holds {queued}")
    await work.purge()
    return result | {"queued": queued}


async def raw_child(args: argparse.Namespace) -> None:
    """The reference publisher: prints {events, events_per_s, cpu_publisher, cpu_broker} as JSON.

    Messages are built before the clock starts and reused when the events run out (RabbitMQ does
    not deduplicate), so the timed loop is aio-pika's publish and RabbitMQ's confirm alone.
    """
    events = orjson.loads(await asyncio.to_thread(Path(args.raw_child).read_bytes))
    headers: dict[str, Any] = {messages.SOURCE: SOURCE}
    pool = [
        aio_pika.Message(
            orjson.dumps(event),
            message_id=event["id"],
            content_type=CLOUDEVENTS_JSON,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers=headers,
            type=event["type"],
        )
        for event in events
    ]
    connection = await aio_pika.connect(AMQP)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange(f"{args.prefix}.events", ensure=False)
        sent = 0

        async def window_loop(first: int, deadline: float) -> None:
            nonlocal sent
            at = first
            while time.monotonic() < deadline:
                window = [pool[(at + k) % len(pool)] for k in range(args.batch)]
                await asyncio.gather(*(exchange.publish(m, "bank.deposit", mandatory=True) for m in window))
                sent += args.batch
                at += args.connections * args.batch

        busy = Busy({"publisher": os.getpid(), "broker": broker_pid()}, children=False)
        deadline = time.monotonic() + args.seconds
        await asyncio.gather(*(window_loop(w * args.batch, deadline) for w in range(args.connections)))
        cpu = busy.cores()
    finally:
        await connection.close()
    found = {"events": sent, "events_per_s": sent / busy.wall, **cpu}
    print(orjson.dumps(found).decode())


async def run(args: argparse.Namespace) -> dict[str, Any]:
    prefix = f"benchbatch{uuid.uuid4().hex[:6]}"
    runs: dict[str, list[dict[str, float]]] = {t: [] for t in TARGETS}
    with tempfile.TemporaryDirectory(prefix="payrelay-batch-") as name:
        tmp = Path(name)
        await declare(tmp, prefix)
        connection = await aio_pika.connect(AMQP)
        try:
            work = WorkQueue(connection, f"{prefix}.record-payment")
            for round_ in range(args.runs):
                # Distinct events for the run at up to the cap; signed just before use, within tolerance.
                count = EVENTS_PER_SECOND_CAP * args.seconds // args.batch * args.batch
                events = await asyncio.to_thread(batch_events, count, round_ * count + 1)
                for target in TARGETS if round_ % 2 == 0 else TARGETS[::-1]:
                    one = one_payrelay if target == "payrelay" else one_raw
                    runs[target].append(await one(args, tmp, prefix, events, work))
        finally:
            await connection.close()
            await delete_topology(prefix)
    return report(args, runs)


def report(args: argparse.Namespace, runs: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    def median(target: str, key: str) -> float:
        return statistics.median(r.get(key, 0.0) for r in runs[target])

    ours, raw = median("payrelay", "events_per_s"), median("raw", "events_per_s")
    figures = []
    for target in TARGETS:
        for key, what, unit in MEASURES[target]:
            value = median(target, key) if key != "non_2xx" else sum(r[key] for r in runs[target])
            figures.append(figure(f"{target}.{key}", f"{LABELS[target]}: {what}", value, unit))
    ratio = ours / raw if raw else 0.0
    figures.append(figure("ratio", "payrelay / raw aio-pika, events/s (target ≥ 0.8)", ratio, "x"))
    # Round by round, with what else ran meanwhile: on a shared machine, the medians hide that.
    pairs = zip(runs["payrelay"], runs["raw"], strict=True)
    rounds = [{"ratio": p["events_per_s"] / r["events_per_s"], "other_payrelay": p["cpu_other"],
               "other_raw": r["cpu_other"]} for p, r in pairs]  # fmt: skip
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "command": " ".join([".venv/bin/python -m tests.benchmarks.batch", *args.argv]),
        "batch": args.batch,
        "connections": args.connections,
        "seconds": args.seconds,
        "runs": runs,
        "rounds": rounds,
        "figures": figures,
    }


def markdown(result: dict[str, Any]) -> str:
    box = result["machine"]
    lines = [
        f"# payrelay batch ingest against raw aio-pika ({result['date']})",
        "",
        f"- machine: {box['cores']} cores, {box['memory_gib']} GiB memory, Python {box['python']}",
        f"- command: `{result['command']}`",
        f"- {result['batch']} events a request, {result['connections']} connections (raw: as many windows "
        f"of {result['batch']} publishes in flight), {result['seconds']} s a run, medians of "
        f"{len(result['runs']['payrelay'])} runs; every event confirmed by RabbitMQ into one quorum queue",
        "",
        "| what | figure | unit |",
        "|---|---:|---|",
    ]
    lines += [f"| {f['what']} | {f['figure']:,.2f} | {f['unit']} |" for f in result["figures"]]
    shown = [f"{r['ratio']:.2f} ({r['other_payrelay']:.2f} / {r['other_raw']:.2f})" for r in result["rounds"]]
    lines += ["", f"- ratio by round (other processes' cores during payrelay / raw): {', '.join(shown)}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=100, help="events a request (the receiver takes ≤ 500)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--raw-child", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    if args.raw_child:
        asyncio.run(raw_child(args))
        return {}
    result = asyncio.run(run(args))
    emit(result, markdown(result), args.json)
    return result


if __name__ == "__main__":
    main()
