"""payrelay consumer scenarios for the performance report: latency-bound, rate-limit-bound, memory.

    .venv/bin/python -m tests.benchmarks.scenarios [--only latency,ratelimit,memory]
        [--latency-events 2000] [--latency-ms 200] [--prefetch 64,256]
        [--ratelimit-minutes 3] [--rate 150] [--memory-events 200000] [--api-version v1] [--json PATH]

Every server is its own process on loopback (`payrelay sandbox|receiver|consumer`, tests/
benchmarks/rig.py), on the same 2 cores as RabbitMQ and this script; each scenario has a fresh
prefix, sandbox and SQLite ledger. Latency: the sandbox adds `--latency-ms` to every call, the
consumer's rate limit is off, the queue filled beforehand; throughput = events / (last - first
confirmation), against prefetch / latency (the issue's reference, target 90%) and prefetch /
(latency x sandbox calls a payment costs). Rate limit: the sandbox and the consumer both at
`--rate` a minute, a backlog 1.5x what the run could take; every figure comes from the sandbox's
request log (every operation). Memory: see memory.py. Each scenario checks, from the sandbox
log, that no invoice was recorded twice. Prints a Markdown table; `--json` writes the raw data.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter as Tally
from pathlib import Path
from typing import Any

from tests.benchmarks import rig
from tests.benchmarks.bank_files import delete_topology, emit, machine
from tests.benchmarks.memory import (
    Cpu,
    Row,
    cpu_rows,
    cpu_text,
    memory_scenario,
    per_payment,
    recorded_once,
    row,
    watch_in_flight,
    window_max,
)

SCENARIOS = ("latency", "ratelimit", "memory")
TARGET_LATENCY = 0.90  # of prefetch / latency
READS = (
    "the invoice check reads every invoice it has not seen before its first record_payment: alone on "
    "API v1, shared among the payments waiting for the same permit on v2 (consumers/invoice_reads.py)"
)
TARGET_ALLOWANCE = 0.95  # of rate x minutes
LEASE_MARGIN = 5.0  # seconds above the settings check's minimum lease


async def latency_run(
    events: int, latency_ms: float, prefetch: int, api_version: str = "v1"
) -> tuple[list[Row], dict[str, Any]]:
    """One run: a filled queue drained by one consumer of `prefetch` against a slow sandbox."""
    prefix, name = f"benchlat{uuid.uuid4().hex[:6]}", f"L{uuid.uuid4().hex[:4]}-"
    settings = {
        "PAYRELAY_CHARGEBEE_RATE_LIMIT": "0",
        "PAYRELAY_CONSUMER_PREFETCH": str(prefetch),
        "PAYRELAY_CHARGEBEE_API_VERSION": api_version,
    }
    with tempfile.TemporaryDirectory(prefix="payrelay-latency-") as where:
        tmp = Path(where)
        try:
            async with rig.sandbox(tmp, latency_ms=latency_ms) as box:
                await box.invoices(name, events, total=1000, currency="USD")
                env = rig.payrelay_env(tmp, prefix, box.url, rig.ledger_url(tmp, "sqlite"), **settings)
                async with rig.counter(prefix) as count:
                    await rig.fill(env, tmp, rig.deposits(events, prefix=name))
                    async with rig.consumers(env, tmp, 1) as [pid]:
                        cpu, in_flight = Cpu({"consumer": pid, "sandbox": box.pid}), list[float]()
                        metrics = await watch_in_flight(pid, count, events, in_flight)
                        cores, waits = cpu.cores(), cpu.waits()
                    entries = await box.requests("all")
        finally:
            await delete_topology(prefix)
    assert count.first is not None and count.last is not None
    duration = "payrelay_chargebee_request_duration_seconds"
    raw = {
        "events": events,
        "prefetch": prefetch,
        "latency_ms": latency_ms,
        "seconds": count.last - count.first,
        "record_payment": recorded_once(entries, events),
        **per_payment(entries, {f"{name}{i + 1}" for i in range(events)}),
        "in_flight": {"mean": statistics.fmean(in_flight or [0.0]), "samples": in_flight},
        "client_call_seconds": metrics[f"{duration}_sum"] / max(metrics[f"{duration}_count"], 1),
        "cpu_cores": cores,
        "cpu_waits": waits,
    }
    return latency_rows(raw), raw


def latency_limit(raw: dict[str, Any], rate: float, calls: float) -> str:
    """What bounds the run: a process at a full core, else each slot's time, call by call (Little)."""
    cores, waited = raw["cpu_cores"], raw["cpu_waits"]["consumer"]
    busy = [who for who, share in cores.items() if share > 0.85 and who not in ("others", "stolen")]
    if busy:
        return f"CPU: {', '.join(busy)} at a full core"
    in_flight = raw["in_flight"]["mean"]
    slot = in_flight / rate  # Little's law: time a payment holds its slot = in flight / rate
    chargebee = calls * raw["client_call_seconds"]
    machine = sum(cores.values())
    starved = f"; the machine was busy ({machine:.2f} of 2 cores)" if waited > 0.05 else ""
    return (
        f"latency x calls: {in_flight:.0f} of {raw['prefetch']} slots busy on average; a payment holds "
        f"its slot {slot * 1000:.0f} ms = {calls:.2f} calls x {raw['client_call_seconds'] * 1000:.0f} ms "
        f"as the client times them ({chargebee * 1000:.0f} ms) + {(slot - chargebee) * 1000:.0f} ms in the "
        f"consumer (ledger writes with fsync, confirmation publish, ack, queueing for its event loop, "
        f"which waited for a core {waited:.0%} of the time{starved})"
    )


def latency_rows(raw: dict[str, Any]) -> list[Row]:
    events, prefetch, cores = raw["events"], raw["prefetch"], raw["cpu_cores"]
    latency, calls = raw["latency_ms"] / 1000, raw["calls"] / events
    rate = events / raw["seconds"]
    naive, bound = prefetch / latency, prefetch / (latency * calls)
    key = f"latency.p{prefetch}"
    by_op = ", ".join(f"{op} {n / events:.2f}" for op, n in raw["by_operation"].items())
    span = f"{events:,} events / {raw['seconds']:.2f} s from first to last confirmation; {cpu_text(cores)}"
    return [
        row(
            f"{key}.throughput",
            f"latency {latency * 1000:.0f} ms, prefetch {prefetch}: throughput",
            rate,
            "payments/s",
            reference=naive,
            reference_what=f"prefetch / latency = {naive:.0f}/s; target >= {TARGET_LATENCY:.0%}",
            ratio=rate / naive,
            limited_by=latency_limit(raw, rate, calls),
            notes=span,
        ),
        row(
            f"{key}.vs_calls",
            f"prefetch {prefetch}: throughput against the bound the design sets",
            rate,
            "payments/s",
            reference=bound,
            reference_what=f"prefetch / (latency x {calls:.2f} calls) = {bound:.0f}/s",
            ratio=rate / bound,
            limited_by="a payment's calls run one after another, each inside its prefetch slot",
        ),
        row(
            f"{key}.calls_per_payment",
            f"prefetch {prefetch}: sandbox calls a payment costs",
            calls,
            "calls",
            reference=1.0,
            reference_what="1 (record_payment alone)",
            ratio=calls,
            limited_by=READS,
            notes=f"{by_op}; {raw['other_calls']} call(s) naming no benchmark invoice",
        ),
        *cpu_rows(key, cores, f"(latency, prefetch {prefetch})", raw["cpu_waits"]),
    ]


async def first_call(box: rig.Sandbox) -> float:
    """When the sandbox received its first API call (polling its log until there is one)."""
    while not (found := await box.requests("all")):  # noqa: ASYNC110 - the sandbox has no event to wait on
        await asyncio.sleep(0.2)
    return float(min(entry["at"] for entry in found))


async def ratelimit_run(
    rate: int, minutes: float, prefetch: int = 64, api_version: str = "v1"
) -> tuple[list[Row], dict[str, Any]]:
    """A backlog larger than fits, drained at the consumer's rate limit for `minutes` from its first call."""
    prefix, name = f"benchrl{uuid.uuid4().hex[:6]}", f"R{uuid.uuid4().hex[:4]}-"
    events, span = math.ceil(rate * minutes * 1.5), minutes * 60
    lease = max(90.0, math.ceil(prefetch * 60 / rate + 30 + 1 + LEASE_MARGIN))  # the settings check's floor
    settings = {
        "PAYRELAY_CHARGEBEE_RATE_LIMIT": str(rate),
        "PAYRELAY_CONSUMER_PREFETCH": str(prefetch),
        "PAYRELAY_LEDGER_LEASE_SECONDS": str(lease),
        "PAYRELAY_SHUTDOWN_GRACE_SECONDS": "1",  # stop at the window's end, not 30 s of calls later
        "PAYRELAY_CHARGEBEE_API_VERSION": api_version,
    }
    with tempfile.TemporaryDirectory(prefix="payrelay-ratelimit-") as where:
        tmp = Path(where)
        try:
            async with rig.sandbox(tmp, rate_limit=rate) as box:
                await box.invoices(name, events, total=1000, currency="USD")
                env = rig.payrelay_env(tmp, prefix, box.url, rig.ledger_url(tmp, "sqlite"), **settings)
                async with rig.counter(prefix) as count:
                    await rig.fill(env, tmp, rig.deposits(events, prefix=name))
                    async with rig.consumers(env, tmp, 1) as [pid]:
                        cpu = Cpu({"consumer": pid, "sandbox": box.pid})
                        first = await first_call(box)
                        await asyncio.sleep(max(0.0, first + span - time.time()))
                        confirmed_in_window, cores, waits = count.got, cpu.cores(), cpu.waits()
                    await asyncio.sleep(1.0)  # the last payments' confirmations
                    entries = await box.requests("all")
        finally:
            await delete_topology(prefix)
    checked = recorded_once(entries)
    if count.got > checked["recorded"]:
        raise RuntimeError(f"{count.got} confirmations for {checked['recorded']} payments recorded")
    raw = {
        "rate": rate,
        "minutes": minutes,
        "events": events,
        "prefetch": prefetch,
        "first_call": first,
        "confirmed_in_window": confirmed_in_window,
        "confirmed": count.got,
        "record_payment": checked,
        "cpu_cores": cores,
        "cpu_waits": waits,
        "calls": [[round(e["at"] - first, 4), e["operation"], e["status"]] for e in entries],
    }
    raw["facts"] = ratelimit_facts(raw, entries)
    return ratelimit_rows(raw), raw


def ratelimit_facts(raw: dict[str, Any], entries: list[dict[str, Any]]) -> dict[str, Any]:
    """What the sandbox log says: the window's calls, minute by minute, and what a payment costs."""
    first, span = raw["first_call"], raw["minutes"] * 60
    steady = [e for e in entries if first <= e["at"] < first + span]
    paid = [e for e in entries if e["operation"] == "record_payment" and e["status"] == 200]
    done = {e["invoice_id"] for e in paid}
    spent = [e for e in entries if e.get("invoice_id") in done]  # every call for a recorded payment
    minutes = [
        sum(1 for e in steady if k * 60 <= e["at"] - first < (k + 1) * 60)
        for k in range(math.ceil(span / 60))
    ]
    return {
        "steady": len(steady),
        "recorded": sum(1 for e in paid if first <= e["at"] < first + span),
        "first_payment": min((e["at"] - first for e in paid), default=math.nan),
        "calls_per_payment": len(spent) / max(len(done), 1),
        "by_operation": dict(Tally(e["operation"] for e in spent)),
        "elsewhere": len(entries) - len(spent),
        "per_minute": minutes,
        "refused": sum(1 for e in entries if e["status"] == 429),
        "window_max": window_max([e["at"] for e in entries]),
    }


def ratelimit_rows(raw: dict[str, Any]) -> list[Row]:
    rate, minutes, cores, facts = raw["rate"], raw["minutes"], raw["cpu_cores"], raw["facts"]
    steady, recorded, peak, refused = (
        facts["steady"],
        facts["recorded"],
        facts["window_max"],
        facts["refused"],
    )
    used, calls = steady / (rate * minutes), facts["calls_per_payment"]
    waiting = raw["events"] - raw["confirmed_in_window"]
    window = (
        f"window [first call, +{minutes * 60:.0f} s): {steady} calls, by minute {facts['per_minute']}; "
        f"{recorded} payments recorded, the first at +{facts['first_payment']:.1f} s; {waiting:,} of "
        f"{raw['events']:,} events unconfirmed at its end (up to {raw['prefetch']} in flight)"
    )
    ops = ", ".join(f"{op} {n}" for op, n in facts["by_operation"].items())
    spent = (
        f"{ops} for the {raw['record_payment']['recorded']} payments recorded; {facts['elsewhere']} more "
        "calls for payments in flight when the run stopped (read, waiting for a record_payment permit)"
    )
    spacing = f"the consumer's limiter: a permit every {60 / rate * 1.001:.4f} s (60 / rate x 1.001)"
    disagree = "client spacing and the sandbox's rolling minute disagree (arrival jitter)"
    return [
        row(
            "ratelimit.window_max",
            "most calls in any 60 s window",
            peak,
            "calls",
            reference=rate,
            reference_what=f"<= {rate}, the limit",
            ratio=peak / rate,
            limited_by=spacing,
            notes=f"exact: for each call at t, the calls in [t, t + 60); {len(raw['calls'])} calls logged",
        ),
        row(
            "ratelimit.refused",
            "calls the sandbox answered 429",
            refused,
            "calls",
            reference=0,
            reference_what="0",
            limited_by=disagree if refused else "the client's and the sandbox's windows agree",
        ),
        row(
            "ratelimit.allowance_used",
            "allowance used while a backlog waits",
            used,
            "share",
            reference=TARGET_ALLOWANCE,
            reference_what=f"{steady} of {rate} x {minutes:g} min; target >= {TARGET_ALLOWANCE:.0%}",
            ratio=used / TARGET_ALLOWANCE,
            limited_by=spacing,
            notes=window,
        ),
        row(
            "ratelimit.calls_per_payment",
            "calls a recorded payment costs",
            calls,
            "calls",
            reference=1.0,
            reference_what="1 (record_payment alone)",
            ratio=calls,
            limited_by=READS,
            notes=spent,
        ),
        row(
            "ratelimit.payments_per_minute",
            "payments recorded a minute",
            recorded / minutes,
            "payments/min",
            reference=rate,
            reference_what=f"{rate}, the limit at 1 call a payment",
            ratio=recorded / minutes / rate,
            limited_by=f"the rate limit / {calls:.2f} calls a payment = {rate / calls:.0f}/min at best, "
            f"less the GETs of payments in flight at the window's end; {cpu_text(cores)}",
        ),
        *cpu_rows("ratelimit", cores, "(rate-limited)", raw["cpu_waits"]),
    ]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sections: dict[str, dict[str, Any]] = {}
    if "latency" in args.only:
        for prefetch in args.prefetch:
            rows, raw = await latency_run(args.latency_events, args.latency_ms, prefetch, args.api_version)
            sections[f"latency.p{prefetch}"] = {
                "title": f"Latency-bound, prefetch {prefetch}, Chargebee API {args.api_version}",
                "figures": rows,
                "raw": raw,
            }
    if "ratelimit" in args.only:
        rows, raw = await ratelimit_run(args.rate, args.ratelimit_minutes, api_version=args.api_version)
        title = f"Rate-limit-bound, {args.rate}/min, Chargebee API {args.api_version}"
        sections["ratelimit"] = {"title": title, "figures": rows, "raw": raw}
    if "memory" in args.only:
        rows, raw = await memory_scenario(args.memory_events, args.sample_seconds)
        sections["memory"] = {"title": f"Memory, {args.memory_events:,} events", "figures": rows, "raw": raw}
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "command": " ".join([".venv/bin/python -m tests.benchmarks.scenarios", *args.argv]).strip(),
        "sections": sections,
        "figures": [f for section in sections.values() for f in section["figures"]],
    }


def _shown(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def markdown(report: dict[str, Any]) -> str:
    box = report["machine"]
    lines = [
        f"# payrelay consumer scenarios ({report['date']})",
        "",
        f"- machine: {box['cores']} cores, {box['memory_gib']} GiB memory, Python {box['python']}",
        f"- command: `{report['command']}`",
        "",
    ]
    for section in report["sections"].values():
        lines += [
            f"## {section['title']}",
            "",
            "| what | figure | reference/target | ratio | limited by |",
            "|---|---:|---|---:|---|",
        ]
        for f in section["figures"]:
            reference = f["reference_what"] or _shown(f["reference"])
            figure = f"{_shown(f['figure'])} {f['unit']}"
            notes = f" ({f['notes']})" if f["notes"] else ""
            lines.append(
                f"| {f['what']} | {figure} | {reference} | {_shown(f['ratio'])} | {f['limited_by']}{notes} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--only", default=",".join(SCENARIOS), help="comma-separated: latency,ratelimit,memory"
    )
    parser.add_argument("--latency-events", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--prefetch", default="64,256", help="consumer prefetch of each latency run")
    parser.add_argument("--ratelimit-minutes", type=float, default=3.0)
    parser.add_argument("--rate", type=int, default=150, help="requests/minute, sandbox and consumer")
    parser.add_argument("--memory-events", type=int, default=200_000)
    parser.add_argument("--sample-seconds", type=float, default=5.0, help="memory: RSS sampled this often")
    parser.add_argument(
        "--api-version",
        choices=("v1", "v2"),
        default="v1",
        help="latency and rate limit: the Chargebee API the consumer speaks (v1, payrelay's default, "
        "reads each new invoice alone; v2 reads concurrent payments' invoices together)",
    )
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    args.only = set(args.only.split(","))
    if unknown := args.only - set(SCENARIOS):
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    args.prefetch = [int(p) for p in args.prefetch.split(",") if p]
    report = asyncio.run(run(args))
    emit(report, markdown(report), args.json)
    return report


if __name__ == "__main__":
    main()
