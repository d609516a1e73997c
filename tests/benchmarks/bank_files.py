"""payrelay bank-file benchmark: parse rates, parse memory, and files through the receiver to RabbitMQ.

    .venv/bin/python -m tests.benchmarks.bank_files [--entries 10000] [--big-entries 27000] [--json PATH]

Files are generated (tests/benchmarks/bank_file_generators.py, seeded): a camt.053 statement and
a BAI2 file of `--entries` entries, and a ~25 MiB camt.053 of `--big-entries` for memory. Parsing
is timed in this process; its memory in a fresh process per file (ru_maxrss before and after);
parse + publish is timed over real HTTP against `payrelay receiver` as its own process, from
sending the file to its 202 (every event confirmed by RabbitMQ). Everything is on loopback and
on the same cores, so the figures are for the whole machine. Prints a Markdown report.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import orjson

from service.bankfiles import intake
from service.bankfiles.model import Options
from service.sender import signed_headers
from service.settings import Settings
from tests.benchmarks import bank_file_generators as generate

SECRET = "whsec_YmFuay1maWxlLWJlbmNobWFyaywgbm90IGEgcmVhbCBrZXk="
FINGERPRINT_KEY = "bench-fingerprint-key-0123456789"  # as in production: payers fingerprinted
AMQP = "amqp://guest:guest@127.0.0.1:5672/"
SOURCE = "bench-bank"
PAYRELAY = str(Path(sys.executable).parent / "payrelay")
RUNS = 3
MIB = 1024 * 1024
TICK = os.sysconf("SC_CLK_TCK")
Files = dict[str, Callable[[int, int], bytes]]
FILES: Files = {
    "camt.053": lambda entries, run: generate.camt053(entries, run=run),
    "BAI2": lambda entries, run: generate.bai2(entries, run=run),
}


def figure(key: str, what: str, value: float, unit: str, notes: str = "") -> dict[str, Any]:
    return {"id": key, "what": what, "figure": value, "unit": unit, "notes": notes}


def _read(data: bytes) -> intake.Intake:
    """What the endpoint does with a file before publishing: parse, build events, check identities."""
    return intake.read(
        data, expected="auto", options=Options(), file_id="bench", key=FINGERPRINT_KEY.encode()
    )


# --- 2. Parsing, in this process; memory, in a fresh one -----------------------------------------


def parse_figures(name: str, data: bytes) -> list[dict[str, Any]]:
    """entries/s and credits/s of `intake.read`, median of RUNS, and whether it is CPU-bound."""
    seconds, cpu = [], []
    for _ in range(RUNS):
        started, started_cpu = time.perf_counter(), time.process_time()
        read = _read(data)
        seconds.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    wall = statistics.median(seconds)
    entries, credits = read.statement.entries, len(read.events)
    busy = sum(cpu) / sum(seconds)
    notes = (
        f"{entries} entries, {credits} credits, {len(read.statement.skipped)} skipped; "
        f"median {wall:.3f} s; CPU {busy:.2f} of wall: one core, one thread (parse + events)"
    )
    key = _key(name)
    return [
        figure(f"parse.{key}.entries_per_s", f"{name} parse, entries", entries / wall, "entries/s", notes),
        figure(f"parse.{key}.credits_per_s", f"{name} parse, credits (events)", credits / wall, "credits/s"),
    ]


def memory_child(path: str) -> None:
    """Run in a fresh process: the peak RSS before and after one parse (the file already read)."""
    data = Path(path).read_bytes()
    gc.collect()
    # ru_maxrss keeps the parent's peak across fork and exec (Linux carries it in the signal
    # struct), and the imports' peak is above a small file's parse: reset this process's
    # high-water mark to what is resident now (clear_refs "5") and read VmHWM, which it resets.
    Path("/proc/self/clear_refs").write_text("5")
    before = status_kib(os.getpid(), "VmHWM")
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    read = _read(data)
    after = status_kib(os.getpid(), "VmHWM")
    found = {"before_kib": before, "after_kib": after, "events": len(read.events), "ru_maxrss_kib": maxrss}
    found["ru_maxrss_after_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(orjson.dumps(found).decode())


def memory_figures(name: str, data: bytes, tmp: Path) -> list[dict[str, Any]]:
    path = tmp / f"{_key(name)}.file"
    path.write_bytes(data)
    command = [sys.executable, "-m", "tests.benchmarks.bank_files", "--memory-child", str(path)]
    done = subprocess.run(command, capture_output=True, check=True, timeout=300, cwd=Path.cwd())
    found = orjson.loads(done.stdout.splitlines()[-1])
    peak = (found["after_kib"] - found["before_kib"]) / 1024
    size = len(data) / MIB
    notes = (
        f"VmHWM {found['before_kib'] / 1024:.1f} -> {found['after_kib'] / 1024:.1f} MiB in a fresh "
        f"process, peak reset after imports and reading the file (ru_maxrss "
        f"{found['ru_maxrss_kib'] / 1024:.1f} -> {found['ru_maxrss_after_kib'] / 1024:.1f} MiB starts at "
        f"the parent's peak); includes the result: {found['events']} events held, as the endpoint holds them"
    )
    key = _key(name)
    return [
        figure(f"memory.{key}.file_mib", f"{name} file size", size, "MiB"),
        figure(f"memory.{key}.peak_mib", f"{name} parse peak RSS growth", peak, "MiB", notes),
        figure(f"memory.{key}.rss_per_file_mib", f"{name} RSS per file size", peak / size, "MiB/MiB"),
        figure(
            f"memory.{key}.kib_per_event",
            f"{name} RSS per event",
            peak * 1024 / max(found["events"], 1),
            "KiB/event",
            "XML streamed, no tree kept: what grows is the events held" if "camt" in name else "",
        ),
    ]


def _key(name: str) -> str:
    return name.lower().replace(".", "").replace(" ", "_").replace("~", "").replace(",", "")


# --- 3. Parse + publish through the receiver -------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat (after the parenthesised command name)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_seconds() -> tuple[float, float]:
    """CPU seconds since boot that the machine's processes used, and that its host stole (/proc/stat).

    Used is user, nice, system, irq and softirq: all but idle, iowait and steal. Steal is the time
    a virtual machine's core was ready but its host ran something else; no process here is
    charged for it, yet it took a core from the benchmark as surely as a neighbour's process.
    """
    first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in first[1:9])
    return (user + nice + system + irq + softirq) / TICK, steal / TICK


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def broker_pid() -> int | None:
    """RabbitMQ's Erlang VM, when it runs on this machine where /proc shows it."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError):
                if (entry / "comm").read_text().strip() == "beam.smp":
                    return int(entry.name)
    return None


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def receiver(tmp: Path, prefix: str, max_file_bytes: int) -> AsyncIterator[tuple[int, str]]:
    """`payrelay receiver` on a free loopback port: (pid, url), once /readyz answers 200."""
    config = tmp / "payrelay.toml"
    config.write_text(f'[sources.{SOURCE}]\nsecrets = ["{SECRET}"]\n')
    env = {
        **os.environ,
        "PAYRELAY_CONFIG": str(config),
        "PAYRELAY_AMQP_URL": AMQP,
        "PAYRELAY_AMQP_PREFIX": prefix,
        "PAYRELAY_MAX_FILE_BYTES": str(max_file_bytes),
        "PAYRELAY_PAYER_FINGERPRINT_KEY": FINGERPRINT_KEY,
        "PAYRELAY_RECEIVER_METRICS_PORT": "0",  # no fixed port to collide with a test run's
    }
    port, log = free_port(), tmp / "receiver.log"
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            PAYRELAY, "receiver", "--host", "127.0.0.1", "--port", str(port), env=env, stdout=out, stderr=out
        )
    try:
        await _ready(proc, f"{url}/readyz", log)
        yield proc.pid, url
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()


async def _ready(proc: asyncio.subprocess.Process, url: str, log: Path) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            if proc.returncode is not None:
                break
            with suppress(aiohttp.ClientError):
                async with http.get(url) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
    written = await asyncio.to_thread(log.read_text)
    raise RuntimeError(f"{log.stem} did not start:\n{written[-2000:]}")


async def publish_figures(
    name: str, make: Callable[[int], bytes], url: str, pids: dict[str, int], purge: Callable[[], Any]
) -> list[dict[str, Any]]:
    """POST the file RUNS times, each with fresh references; time each to its 202."""
    seconds: list[float] = []
    busy = dict.fromkeys(pids, 0.0) | {"benchmark": 0.0}
    answer: dict[str, Any] = {}
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for run in range(1, RUNS + 1):
            body = make(run)
            headers = signed_headers(SECRET, body, "application/octet-stream")
            cpu = {who: cpu_seconds(pid) for who, pid in pids.items()} | {"benchmark": own_cpu_seconds()}
            started = time.perf_counter()
            async with http.post(f"{url}/v1/files/{SOURCE}", data=body, headers=headers) as response:
                text = await response.read()
            seconds.append(time.perf_counter() - started)
            for who, pid in pids.items():
                busy[who] += cpu_seconds(pid) - cpu[who]
            busy["benchmark"] += own_cpu_seconds() - cpu["benchmark"]
            if response.status != 202:
                raise RuntimeError(f"{name} run {run}: {response.status} {text[:500]!r}")
            answer = orjson.loads(text)
            if answer["published"] != answer["accepted"]:
                raise RuntimeError(
                    f"{name} run {run}: {answer['published']} of {answer['accepted']} published"
                )
            await purge()  # each run finds the work queue as the first did
    wall = statistics.median(seconds)
    entries, published = answer["file"]["entries"], answer["published"]
    cores = {who: spent / sum(seconds) for who, spent in busy.items()}
    busiest = max(cores, key=lambda who: cores[who])
    shares = ", ".join(f"{who} {value:.2f}" for who, value in cores.items())
    notes = (
        f"median {wall:.2f} s of {', '.join(f'{s:.2f}' for s in seconds)}; cores busy: {shares}; "
        f"the {busiest} is the busiest"
    )
    key = _key(name)
    out = [
        figure(
            f"publish.{key}.entries_per_s", f"{name} POST to 202, entries", entries / wall, "entries/s", notes
        ),
        figure(
            f"publish.{key}.events_per_s",
            f"{name} POST to 202, events published",
            published / wall,
            "events/s",
        ),
    ]
    for who, value in cores.items():
        what = f"{name}: {who} CPU during the POSTs"
        out.append(figure(f"publish.{key}.cpu.{who}", what, value, "cores", "CPU seconds / wall seconds"))
    return out


async def delete_topology(prefix: str) -> None:
    """Delete every queue and exchange the receiver declared for this prefix."""
    topology = Settings(amqp_url=AMQP, amqp_prefix=prefix).broker.topology()
    connection = await aio_pika.connect(AMQP)
    try:
        for name in [q.name for q in topology.queues]:
            channel = await connection.channel()
            with suppress(Exception):
                await channel.queue_delete(name)
        for name in [e.name for e in topology.exchanges]:
            channel = await connection.channel()
            with suppress(Exception):
                await channel.exchange_delete(name)
    finally:
        await connection.close()


async def publish_section(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    prefix = f"benchfiles{uuid.uuid4().hex[:6]}"
    out: list[dict[str, Any]] = []
    connection = await aio_pika.connect(AMQP)
    try:
        async with receiver(tmp, prefix, 256 * MIB) as (pid, url):
            channel = await connection.channel()
            work = await channel.get_queue(f"{prefix}.record-payment", ensure=False)

            async def purge() -> None:
                await work.purge()

            pids = {"receiver": pid} | ({"broker": b} if (b := broker_pid()) else {})
            for name, make in FILES.items():
                out += await publish_figures(name, lambda run, m=make: m(args.entries, run), url, pids, purge)
            hwm = status_kib(pid, "VmHWM") / 1024
            notes = "VmHWM of /proc/<pid>/status after every run: imports, topology, the largest file's parse"
            out.append(figure("publish.receiver_peak_rss_mib", "receiver peak RSS", hwm, "MiB", notes))
    finally:
        await connection.close()
        await delete_topology(prefix)
    return out


# --- 4. The report ----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(int(meminfo[1]) / 1024 / 1024, 1),
        "python": sys.version.split()[0],
    }


def emit(report: dict[str, Any], text: str, path: Path | None) -> None:
    """Print the Markdown report, and write the JSON one where asked (every benchmark's last step)."""
    print(text)
    if path:
        path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))


def markdown(report: dict[str, Any]) -> str:
    box = report["machine"]
    lines = [
        f"# payrelay bank-file benchmark ({report['date']})",
        "",
        f"- machine: {box['cores']} cores, {box['memory_gib']} GiB memory, Python {box['python']}",
        f"- command: `{report['command']}`",
        f"- every timed figure is the median of {RUNS} runs",
        "",
    ]
    for section in report["sections"]:
        lines += [f"## {section['title']}", "", "| what | figure | unit | notes |", "|---|---:|---|---|"]
        for item in section["figures"]:
            value = item["figure"]
            shown = f"{value:,.0f}" if value >= 100 else f"{value:.3g}"
            lines.append(f"| {item['what']} | {shown} | {item['unit']} | {item['notes']} |")
        lines.append("")
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    files = {name: make(args.entries, 0) for name, make in FILES.items()}
    files["camt.053 big"] = generate.camt053(args.big_entries)
    parse = [f for name, data in files.items() for f in parse_figures(name, data)]
    with tempfile.TemporaryDirectory(prefix="payrelay-bench-files-") as where:
        tmp = Path(where)
        memory = [f for name, data in files.items() for f in memory_figures(name, data, tmp)]
        publish = await publish_section(args, tmp)
    argv = " ".join(args.argv)
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "command": f".venv/bin/python -m tests.benchmarks.bank_files {argv}".strip(),
        "sections": [
            {
                "title": "Parse only, in-process (`intake.read`: parse, events, identity check)",
                "figures": parse,
            },
            {"title": "Parse memory, a fresh process per file", "figures": memory},
            {
                "title": "Parse + publish: signed POST to `payrelay receiver`, 202 after RabbitMQ confirms",
                "figures": publish,
            },
        ],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--entries", type=int, default=10_000, help="entries of the camt.053 and BAI2 files")
    parser.add_argument("--big-entries", type=int, default=27_000, help="entries of the ~25 MiB camt.053")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    if args.memory_child:
        memory_child(args.memory_child)
        return {}
    report = asyncio.run(run(args))
    emit(report, markdown(report), args.json)
    return report


if __name__ == "__main__":
    main()
