"""Single-event ingest, side by side: `payrelay receiver` against the FastAPI peer, with wrk.

    .venv/bin/python -m tests.benchmarks.ingest [--seconds 10] [--runs 3] [--connections 64] [--json PATH]

Each run starts one receiver as its own process (payrelay's as released: `payrelay receiver`,
default settings; the peer: `uvicorn tests.benchmarks.peers.fastapi_receiver:app`), warms it, and
drives it with wrk (C, one thread) at `--connections` with requests signed beforehand: every
request a distinct event (a repeat would be answered without a publish), each answered 202 only
once RabbitMQ confirmed it. The receivers alternate run by run; the table gives medians and the
ratio. The CPU column is the receiver's own share of a core over the run (utime + stime): what
limits it. wrk, RabbitMQ and the receiver share the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson

from service.sender import example_event, signed_headers
from tests.benchmarks.bank_files import (
    AMQP,
    PAYRELAY,
    SECRET,
    _ready,
    broker_pid,
    cpu_seconds,
    delete_topology,
    emit,
    figure,
    free_port,
    machine,
    machine_seconds,
)

SOURCE = "acme-bank"
TARGETS = ("payrelay", "fastapi")
LABELS = {"payrelay": "payrelay receiver", "fastapi": "FastAPI + pydantic + standardwebhooks + aio-pika peer"}
MEASURES = (  # (key, what, unit); medians over the runs, but non_2xx: all of them
    ("rate", "requests/s", "req/s"),
    ("p50_ms", "p50 latency", "ms"),
    ("p99_ms", "p99 latency", "ms"),
    ("cpu_receiver", "its own CPU", "cores"),
    ("cpu_broker", "RabbitMQ's CPU meanwhile", "cores"),
    ("cpu_stolen", "CPU the virtual machine's host took meanwhile (steal)", "cores"),
    ("non_2xx", "answers other than 2xx, all runs", "responses"),
)
_LATENCY = re.compile(r"^\s+(50|90|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


# LuaJIT (wrk's Lua) refuses a function of more than 65,536 constants, and a script it cannot load
# leaves wrk sending its default `GET /`: the requests are assigned in functions of this many.
_LUA_CHUNK = 20_000


def lua_requests(path: Path, count: int, port: int) -> None:
    """A wrk script that sends `count` distinct pre-signed events, each thread its own slice."""
    out = ["local reqs = {}"]
    for i in range(count):
        if i % _LUA_CHUNK == 0:
            out.append(("end\nassign()\n" if i else "") + "local function assign()")
        event = example_event("bank.deposit", amount="10.00", currency="USD", invoice_id=f"BENCH-{i + 1}")
        body = orjson.dumps(event)
        head = "".join(
            f"{k}: {v}\r\n" for k, v in signed_headers(SECRET, body, "application/cloudevents+json").items()
        )
        raw = (
            f"POST /v1/ingest/{SOURCE} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{head}"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        escaped = "".join(chr(b) if 32 <= b <= 126 and b not in (34, 92) else f"\\{b:03d}" for b in raw)
        out.append(f'reqs[{i + 1}] = "{escaped}"')
    if count:
        out.append("end\nassign()")
    out.append(
        """
local n = 0
function request()
  n = n + 1
  if n > #reqs then n = 1 end
  return reqs[n]
end
"""
    )
    path.write_text("\n".join(out))


def parse_wrk(text: str) -> dict[str, float]:
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    total = re.search(r"(\d+) requests in", text)
    if rate is None or total is None:
        raise RuntimeError(f"wrk printed no rate:\n{text}")
    found = {f"p{p}_ms": float(v) * _UNITS[u] for p, v, u in _LATENCY.findall(text)}
    return {
        "rate": float(rate.group(1)),
        "requests": float(total.group(1)),
        "non_2xx": float(errors.group(1)) if errors else 0.0,
        **found,
    }


@asynccontextmanager
async def server(target: str, tmp: Path, prefix: str) -> AsyncIterator[tuple[int, str]]:
    port, log = free_port(), tmp / f"{target}.log"
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PAYRELAY_CONFIG": str(tmp / "payrelay.toml"), "PAYRELAY_AMQP_URL": AMQP,
           "PAYRELAY_AMQP_PREFIX": prefix, "PAYRELAY_RECEIVER_METRICS_PORT": "0",
           "PEER_SECRET": SECRET, "PEER_EXCHANGE": f"{prefix}.events", "PEER_AMQP_URL": AMQP}  # fmt: skip
    if target == "payrelay":
        command = [PAYRELAY, "receiver", "--host", "127.0.0.1", "--port", str(port)]
    else:
        uvicorn = str(Path(sys.executable).parent / "uvicorn")
        command = [
            uvicorn,
            "tests.benchmarks.peers.fastapi_receiver:app",
            "--port",
            str(port),
            "--log-level",
            "info",
        ]
    with log.open("wb") as written:
        proc = await asyncio.create_subprocess_exec(*command, env=env, stdout=written, stderr=written)
    try:
        await _ready(proc, f"{url}/readyz", log)
        yield proc.pid, url
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()


async def one_run(target: str, args: argparse.Namespace, tmp: Path, prefix: str) -> dict[str, float]:
    async with server(target, tmp, prefix) as (pid, url):
        port = int(url.rsplit(":", 1)[1])
        warm, script = tmp / "warm.lua", tmp / "run.lua"
        await asyncio.to_thread(lua_requests, warm, 500, port)
        await asyncio.to_thread(_wrk, warm, url, 2, args.connections)
        # Enough distinct events for the run at up to 8,000 req/s; signed now, within tolerance.
        await asyncio.to_thread(lua_requests, script, min(8000 * args.seconds, 200_000), port)
        broker = broker_pid()
        before = cpu_seconds(pid), cpu_seconds(broker) if broker else 0.0, time.monotonic()
        stolen = machine_seconds()[1]
        text = await asyncio.to_thread(_wrk, script, url, args.seconds, args.connections)
        wall = time.monotonic() - before[2]
        result = parse_wrk(text)
        if result["non_2xx"]:  # figures of error answers would be no figures at all
            raise RuntimeError(f"{target}: {result['non_2xx']:.0f} answers other than 2xx:\n{text}")
        result["cpu_receiver"] = (cpu_seconds(pid) - before[0]) / wall
        result["cpu_broker"] = ((cpu_seconds(broker) - before[1]) / wall) if broker else 0.0
        result["cpu_stolen"] = (machine_seconds()[1] - stolen) / wall
        return result


def _wrk(script: Path, url: str, seconds: int, connections: int) -> str:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout


async def declare(tmp: Path, prefix: str) -> None:
    """wrk installed, the source's configuration in `tmp`, and the prefix's topology declared."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk (bash .ci/services does)")
    (tmp / "payrelay.toml").write_text(f'[sources.{SOURCE}]\nsecrets = ["{SECRET}"]\n')
    env = {**os.environ, "PAYRELAY_CONFIG": str(tmp / "payrelay.toml"), "PAYRELAY_AMQP_PREFIX": prefix}
    command = [PAYRELAY, "topology", "declare"]
    await asyncio.to_thread(subprocess.run, command, env=env, check=True, capture_output=True)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    runs: dict[str, list[dict[str, float]]] = {t: [] for t in TARGETS}
    with tempfile.TemporaryDirectory(prefix="payrelay-ingest-") as name:
        tmp = Path(name)
        await declare(tmp, prefix)
        try:
            for _ in range(args.runs):
                for target in TARGETS:
                    runs[target].append(await one_run(target, args, tmp, prefix))
        finally:
            await delete_topology(prefix)
    return report(args, runs)


def report(args: argparse.Namespace, runs: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    def median(target: str, key: str) -> float:
        return statistics.median(r.get(key, 0.0) for r in runs[target])

    ours, peer = median("payrelay", "rate"), median("fastapi", "rate")
    figures = []
    for target in TARGETS:
        label = LABELS[target]
        for key, what, unit in MEASURES:
            value = median(target, key) if key != "non_2xx" else sum(r[key] for r in runs[target])
            figures.append(figure(f"{target}.{key}", f"{label}: {what}", value, unit))
    figures.append(figure("ratio", "payrelay / peer, requests/s", ours / peer if peer else 0.0, "x"))
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "command": " ".join([".venv/bin/python -m tests.benchmarks.ingest", *args.argv]),
        "connections": args.connections,
        "seconds": args.seconds,
        "runs": runs,
        "figures": figures,
    }


def markdown(result: dict[str, Any]) -> str:
    box = result["machine"]
    lines = [
        f"# payrelay single-event ingest, side by side ({result['date']})",
        "",
        f"- machine: {box['cores']} cores, {box['memory_gib']} GiB memory, Python {box['python']}",
        f"- command: `{result['command']}`",
        f"- wrk, one thread, {result['connections']} connections, {result['seconds']} s a run, pre-signed "
        "distinct events; each 202 only after RabbitMQ confirmed the publish",
        "",
        "| what | figure | unit |",
        "|---|---:|---|",
    ]
    lines += [f"| {f['what']} | {f['figure']:,.2f} | {f['unit']} |" for f in result["figures"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    result = asyncio.run(run(args))
    emit(result, markdown(result), args.json)
    return result


if __name__ == "__main__":
    main()
