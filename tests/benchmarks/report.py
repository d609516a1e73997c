"""payrelay's performance report: every benchmark in one run, each figure beside its reference.

    .venv/bin/python -m tests.benchmarks.report [--quick] [--only ingest,batch,...] [--out DIR] [--keep]

Runs, one after the other on this machine (each its own module, runnable alone):

    ingest      single events, payrelay's receiver and a FastAPI peer, wrk    (ingest.py)
    batch       batches of 100, payrelay's receiver and raw aio-pika          (batch.py)
    end_to_end  queued deposits to confirmations, payrelay and a FastStream
                + Chargebee SDK peer; SQLite and PostgreSQL, 1 and 2 consumers (end_to_end.py)
    ledger      the ledger alone: a payment's three writes, 64 at once         (ledger.py)
    latency     the sandbox at 200 ms, Chargebee API v1 (the default) and v2  (scenarios.py)
    ratelimit   150 requests a minute, API v1 and v2                          (scenarios.py)
    memory      RSS of receiver and consumer over 200,000 events              (scenarios.py, memory.py)
    bank_files  10,000-entry camt.053 and BAI2 files, parsed and published    (bank_files.py)

Each writes its own JSON into `--out` (default a fresh temporary directory); this module then
prints one Markdown table (target, payrelay, reference, ratio, met, what limits it) and writes
`report.json` there with the machine, the command, every figure of every benchmark, and how
payrelay scales out; `--keep` reuses what an earlier run left in `--out` (to finish one that was
interrupted, or to add a benchmark to it). `--quick` runs everything at a size that takes a few
minutes: the figures are then for the plumbing, not for quoting. Nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from tests.benchmarks import bank_files, batch, end_to_end, ingest, ledger, scenarios
from tests.benchmarks.bank_files import emit, machine

Report = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Bench:
    main: Callable[[list[str]], Report]
    full: list[str]
    quick: list[str]


BENCHES: dict[str, Bench] = {
    "ingest": Bench(ingest.main, ["--seconds", "10", "--runs", "3"], ["--seconds", "2", "--runs", "1"]),
    "batch": Bench(batch.main, ["--seconds", "10", "--runs", "3"], ["--seconds", "2", "--runs", "1"]),
    "end_to_end": Bench(
        end_to_end.main,
        ["--events", "8000", "--runs", "3", "--peer-events", "1500"],
        ["--events", "300", "--runs", "1", "--peer-events", "30"],
    ),
    "ledger": Bench(ledger.main, ["--runs", "3"], ["--payments", "300", "--runs", "1"]),
    "latency": Bench(
        scenarios.main,
        ["--only", "latency", "--prefetch", "64"],
        ["--only", "latency", "--prefetch", "64", "--latency-events", "200", "--latency-ms", "50"],
    ),
    "latency_v2": Bench(
        scenarios.main,
        ["--only", "latency", "--prefetch", "64", "--api-version", "v2"],
        ["--only", "latency", "--prefetch", "64", "--latency-events", "200", "--latency-ms", "50"]
        + ["--api-version", "v2"],
    ),
    "ratelimit": Bench(
        scenarios.main,
        ["--only", "ratelimit", "--ratelimit-minutes", "3"],
        ["--only", "ratelimit", "--ratelimit-minutes", "0.25", "--rate", "60"],
    ),
    "ratelimit_v2": Bench(
        scenarios.main,
        ["--only", "ratelimit", "--ratelimit-minutes", "3", "--api-version", "v2"],
        ["--only", "ratelimit", "--ratelimit-minutes", "0.25", "--rate", "60", "--api-version", "v2"],
    ),
    "memory": Bench(
        scenarios.main,
        ["--only", "memory", "--memory-events", "200000"],
        ["--only", "memory", "--memory-events", "3000", "--sample-seconds", "1"],
    ),
    "bank_files": Bench(
        bank_files.main, ["--entries", "10000"], ["--entries", "500", "--big-entries", "1000"]
    ),
}


# --- the summary: one row per target -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    target: str
    payrelay: str
    reference: str
    ratio: float | None
    met: bool | None
    limited_by: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def figures(report: Report | None) -> dict[str, dict[str, Any]]:
    """A benchmark's figures by id, whether it lists them flat or in sections."""
    if not report:
        return {}
    found = list(report.get("figures", []))
    sections = report.get("sections", [])
    for section in sections.values() if isinstance(sections, dict) else sections:
        found += [f for f in section["figures"] if f not in found]
    return {f["id"]: f for f in found}


def _value(found: dict[str, dict[str, Any]], key: str) -> float | None:
    item = found.get(key)
    return None if item is None else float(item["figure"])


def _n(value: float | None, unit: str = "") -> str:
    if value is None:
        return "not run"
    shown = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{shown} {unit}".strip()


def _why(found: dict[str, dict[str, Any]], key: str) -> str:
    item = found.get(key, {})
    return str(item.get("limited_by") or item.get("notes") or "")


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    return ours / theirs if ours is not None and theirs else None


def _met(value: float | None, ok: Callable[[float], bool]) -> bool | None:
    return None if value is None else ok(value)


def ingest_rows(found: dict[str, dict[str, Any]]) -> list[Row]:
    ours, peer, p99 = (_value(found, k) for k in ("payrelay.rate", "fastapi.rate", "payrelay.p99_ms"))
    ratio = _ratio(ours, peer)
    cpu = ", ".join(
        f"{who} {_n(_value(found, key), 'cores')}"
        for who, key in (("receiver", "payrelay.cpu_receiver"), ("RabbitMQ", "payrelay.cpu_broker"))
    )
    peer_p99 = _n(_value(found, "fastapi.p99_ms"), "ms (peer)")
    return [
        Row("1. single-event ingest ≥ 2× the FastAPI peer", _n(ours, "req/s"), _n(peer, "req/s (peer)"),
            ratio, _met(ratio, lambda r: r >= 2), f"receiver CPU-bound on one core: {cpu}"),
        Row("1. … p99 at 64 connections ≤ 30 ms", _n(p99, "ms"), peer_p99, None, _met(p99, lambda v: v <= 30),
            "queueing behind the receiver's one core"),
    ]  # fmt: skip


def batch_rows(found: dict[str, dict[str, Any]]) -> list[Row]:
    ours, raw = _value(found, "payrelay.events_per_s"), _value(found, "raw.events_per_s")
    ratio = _ratio(ours, raw)
    cpu = (
        f"receiver {_n(_value(found, 'payrelay.cpu_receiver'), 'cores')}, "
        f"RabbitMQ {_n(_value(found, 'payrelay.cpu_broker'), 'cores')}"
    )
    return [
        Row("2. batch ingest (100 a request) ≥ 0.8× raw aio-pika", _n(ours, "events/s"),
            _n(raw, "events/s (raw)"), ratio, _met(ratio, lambda r: r >= 0.8), cpu),
    ]  # fmt: skip


def end_to_end_rows(found: dict[str, dict[str, Any]]) -> list[Row]:
    rows = []
    one, peer = _value(found, "sqlite_1.events_per_s"), _value(found, "peer.events_per_s")
    rows.append(
        Row("3. end to end ≥ 1,000 events/s (1 consumer, SQLite)", _n(one, "events/s"), "1,000 events/s",
            _ratio(one, 1000.0), _met(one, lambda v: v >= 1000), _why(found, "sqlite_1.events_per_s"))
    )  # fmt: skip
    ratio = _ratio(one, peer)
    rows.append(
        Row("3. … ≥ 15× the FastStream + SDK peer", _n(one, "events/s"), _n(peer, "events/s (peer)"),
            ratio, _met(ratio, lambda r: r >= 15), _why(found, "peer.events_per_s"))
    )  # fmt: skip
    for key, what in (("sqlite_2", "2 consumers, SQLite"), ("postgresql_1", "1 consumer, PostgreSQL"),
                      ("postgresql_2", "2 consumers, PostgreSQL")):  # fmt: skip
        value = _value(found, f"{key}.events_per_s")
        rows.append(Row(f"3. … {what}", _n(value, "events/s"), "1,000 events/s", _ratio(value, 1000.0),
                        None, _why(found, f"{key}.events_per_s")))  # fmt: skip
    return rows


def ledger_rows(found: dict[str, dict[str, Any]]) -> list[Row]:
    rate, cpu = _value(found, "payments_per_s"), _value(found, "cpu_us")
    return [
        Row("3. … the ledger alone (SQLite, 64 at once): a payment's three writes", _n(rate, "payments/s"),
            "1,000 payments/s", _ratio(rate, 1000.0), None, f"{_n(cpu, 'µs')} of CPU a payment"),
    ]  # fmt: skip


def latency_rows(found: dict[str, dict[str, Any]], api: str) -> list[Row]:
    ours = _value(found, "latency.p64.throughput")
    item = found.get("latency.p64.throughput", {})
    reference = item.get("reference")
    ratio = _ratio(ours, reference)
    calls = _value(found, "latency.p64.calls_per_payment")
    why = (
        f"{_n(calls, 'sandbox calls')} a payment, one after another; {_why(found, 'latency.p64.throughput')}"
    )
    return [
        Row(f"4. latency-bound (200 ms), prefetch 64, API {api}: ≥ 90% of prefetch / latency",
            _n(ours, "payments/s"), _n(reference, "payments/s"), ratio, _met(ratio, lambda r: r >= 0.9), why),
    ]  # fmt: skip


def ratelimit_rows(found: dict[str, dict[str, Any]], api: str) -> list[Row]:
    most, used = _value(found, "ratelimit.window_max"), _value(found, "ratelimit.allowance_used")
    calls = _value(found, "ratelimit.calls_per_payment")
    limit = found.get("ratelimit.window_max", {}).get("reference")
    return [
        Row(f"5. rate limit, API {api}: never more than the limit in any 60 s", _n(most, "calls"),
            _n(limit, "calls (limit)"), _ratio(most, limit), _met(most, lambda v: v <= (limit or 0)),
            _why(found, "ratelimit.window_max")),
        Row(f"5. … ≥ 95% of the allowance used while a backlog waits, API {api}", _n(used), "0.95",
            _ratio(used, 0.95), _met(used, lambda v: v >= 0.95), _why(found, "ratelimit.allowance_used")),
        Row(f"5. … calls a payment costs, API {api}", _n(calls, "calls"), "1", calls, None,
            _why(found, "ratelimit.calls_per_payment")),
    ]  # fmt: skip


def memory_rows(found: dict[str, dict[str, Any]]) -> list[Row]:
    rows = []
    for who in ("receiver", "consumer"):
        growth, late = _value(found, f"memory.{who}.growth"), _value(found, f"memory.{who}.late_growth")
        absolute = ", ".join(
            f"{stage} {_n(_value(found, f'memory.{who}.rss_{stage}_mib'), 'MiB')}"
            for stage in ("start", "warm", "end", "max")
        )
        rows.append(Row(f"6. {who} RSS growth after warm-up < 10% (first 10% of events)", _n(growth), "0.10",
                        _ratio(growth, 0.10), _met(growth, lambda v: v < 0.10), absolute))  # fmt: skip
        why = _why(found, f"memory.{who}.late_growth")
        rows.append(Row(f"6. … {who}, over the second half (its caches full)", _n(late), "0.10",
                        _ratio(late, 0.10), _met(late, lambda v: v < 0.10), why))  # fmt: skip
    return rows


def bank_file_rows(found: dict[str, dict[str, Any]]) -> list[Row]:
    rows = []
    for key, name in (("camt053", "camt.053"), ("bai2", "BAI2")):
        parsed = _value(found, f"parse.{key}.entries_per_s")
        published = _value(found, f"publish.{key}.entries_per_s")
        peak = _value(found, f"memory.{key}.peak_mib")
        why = f"parse peak {_n(peak, 'MiB')}; {_why(found, f'publish.{key}.entries_per_s')}"
        shown = f"{_n(parsed, 'parsed/s')}; {_n(published, 'published/s')}"
        what = f"7. {name}: entries/s parsed, and parsed + published (POST to 202)"
        rows.append(Row(what, shown, "—", None, None, why))
    return rows


def summarise(reports: dict[str, Report]) -> list[Row]:
    """One row per target of the performance issue, for the benchmarks that ran."""
    builders: dict[str, Callable[[dict[str, dict[str, Any]]], list[Row]]] = {
        "ingest": ingest_rows,
        "batch": batch_rows,
        "end_to_end": end_to_end_rows,
        "ledger": ledger_rows,
        "latency": lambda found: latency_rows(found, "v1"),
        "latency_v2": lambda found: latency_rows(found, "v2"),
        "ratelimit": lambda found: ratelimit_rows(found, "v1"),
        "ratelimit_v2": lambda found: ratelimit_rows(found, "v2"),
        "memory": memory_rows,
        "bank_files": bank_file_rows,
    }
    return [
        row for name, build in builders.items() if name in reports for row in build(figures(reports[name]))
    ]


SCALING = [
    "Receivers keep no state: replicas behind the Service add up, each CPU-bound on one core at "
    "the single-event figure above, until RabbitMQ is the limit (the raw aio-pika reference of the "
    "batch benchmark is what one RabbitMQ node takes for one quorum queue on these cores).",
    "One quorum queue is served by its leader node: more nodes add safety, not throughput, for the "
    "one work queue; beyond one leader's rate, split sources across prefixes (a topology each).",
    "Consumers scale by processes (the HorizontalPodAutoscaler on queue depth). SQLite is one file "
    "and one writer: two consumer processes on it contend for its lock (the 2-consumer SQLite "
    "figure); more than one replica needs PostgreSQL (its 1 and 2 consumer figures).",
    "In production Chargebee's rate limit (150 a minute on a Starter or test site, 1,000 on "
    "Performance, 3,500 on Enterprise) bounds payments per site: the limit divided by the calls "
    "a payment costs (the rate-limit rows).",
]


def markdown(result: Report) -> str:
    box = result["machine"]
    lines = [
        f"# payrelay performance report ({result['date']})",
        "",
        f"- machine: {box['cores']} cores, {box['memory_gib']} GiB memory, Python {box['python']}",
        f"- command: `{result['command']}`"
        + (" (quick: sizes for the plumbing, not for quoting)" if result["quick"] else ""),  # fmt: skip
        f"- each benchmark's own report: {result['out']}",
        "",
        "| target | payrelay | reference | ratio | met | limited by |",
        "|---|---:|---:|---:|:-:|---|",
    ]
    for row in result["summary"]:
        ratio = "" if row["ratio"] is None else f"{row['ratio']:.2f}×"
        met = {True: "yes", False: "**no**", None: ""}[row["met"]]
        why = row["limited_by"].replace("|", "/")
        lines.append(
            f"| {row['target']} | {row['payrelay']} | {row['reference']} | {ratio} | {met} | {why} |"
        )
    lines += ["", "## Scaling out", "", *(f"- {line}" for line in SCALING)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: minutes, not an hour")
    parser.add_argument("--only", default=",".join(BENCHES), help="comma-separated: " + ",".join(BENCHES))
    parser.add_argument("--out", type=Path, help="where each benchmark's JSON and report.json go")
    parser.add_argument(
        "--keep", action="store_true", help="reuse a benchmark's JSON already in --out instead of running it"
    )
    args = parser.parse_args(argv)
    chosen = args.only.split(",")
    if unknown := set(chosen) - set(BENCHES):
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    out = args.out or Path(tempfile.mkdtemp(prefix="payrelay-report-"))
    out.mkdir(parents=True, exist_ok=True)
    reports: dict[str, Report] = {}
    for name in chosen:
        bench = BENCHES[name]
        print(f"\n=== {name} ===", flush=True)
        path = out / f"{name}.json"
        if args.keep and path.exists():
            print(f"(kept from {path})")
        else:
            bench.main([*(bench.quick if args.quick else bench.full), "--json", str(path)])
        reports[name] = orjson.loads(path.read_bytes())
    given = sys.argv[1:] if argv is None else argv
    result: Report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "command": " ".join([".venv/bin/python -m tests.benchmarks.report", *given]).strip(),
        "quick": args.quick,
        "out": str(out),
        "summary": [row.as_dict() for row in summarise(reports)],
        "scaling": SCALING,
        "reports": reports,
    }
    print()
    emit(result, markdown(result), out / "report.json")
    return result


if __name__ == "__main__":
    main()
