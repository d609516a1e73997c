"""The performance report runs a benchmark for real and sums every target up; no speed is asserted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.benchmarks import report

pytestmark = pytest.mark.usefixtures("rabbitmq_reachable")


def test_a_quick_run_writes_each_report_and_the_summary(tmp_path: Path) -> None:
    result = report.main(["--quick", "--only", "ingest", "--out", str(tmp_path)])
    rows = {row["target"]: row for row in result["summary"]}
    ingest = rows["1. single-event ingest ≥ 2× the FastAPI peer"]
    assert ingest["payrelay"].endswith("req/s") and ingest["ratio"] > 0 and ingest["met"] in (True, False)
    assert all(row["target"].startswith("1.") for row in result["summary"])  # only what ran
    written = orjson.loads((tmp_path / "report.json").read_bytes())
    assert written["summary"] == result["summary"] and written["machine"]["cores"] >= 1
    assert (tmp_path / "ingest.json").exists() and "ingest" in written["reports"]
    assert "## Scaling out" in report.markdown(result)


def _figure(key: str, value: float, **more: Any) -> dict[str, Any]:
    return {"id": key, "what": key, "figure": value, "unit": "", "notes": "", **more}


def test_every_target_reads_the_figures_its_benchmark_writes() -> None:
    """The ids are the ones each benchmark's own smoke test checks; a rename shows here as 'not run'."""
    memory = [
        _figure(f"memory.{who}.{what}", value)
        for who, what, value in (
            ("receiver", "growth", 0.3),
            ("receiver", "late_growth", 0.07),
            ("consumer", "growth", 0.2),
            ("consumer", "late_growth", 0.05),
        )
    ]
    reports = {
        "end_to_end": {"figures": [_figure("sqlite_1.events_per_s", 600), _figure("peer.events_per_s", 40),
                                   _figure("sqlite_2.events_per_s", 620)]},
        "latency_v2": {"sections": {"latency.p64": {"figures": [
            _figure("latency.p64.throughput", 160, reference=320, limited_by="two calls"),
            _figure("latency.p64.calls_per_payment", 2)]}}},
        "ratelimit": {"figures": [_figure("ratelimit.window_max", 150, reference=150),
                                  _figure("ratelimit.allowance_used", 0.99),
                                  _figure("ratelimit.calls_per_payment", 2.0)]},
        "memory": {"figures": memory},
        "ledger": {"figures": [_figure("payments_per_s", 1400), _figure("cpu_us", 345)]},
        "bank_files": {"sections": [{"figures": [_figure("parse.camt053.entries_per_s", 9e3)]}]},
    }  # fmt: skip
    rows = {row.target: row for row in report.summarise(reports)}
    e2e = rows["3. end to end ≥ 1,000 events/s (1 consumer, SQLite)"]
    assert (e2e.payrelay, e2e.ratio, e2e.met) == ("600 events/s", 0.6, False)
    assert rows["3. … ≥ 15× the FastStream + SDK peer"].ratio == 15.0
    alone = rows["3. … the ledger alone (SQLite, 64 at once): a payment's three writes"]
    assert (alone.payrelay, alone.limited_by) == ("1,400 payments/s", "345 µs of CPU a payment")
    latency = rows["4. latency-bound (200 ms), prefetch 64, API v2: ≥ 90% of prefetch / latency"]
    assert (latency.ratio, latency.met) == (0.5, False) and "2 sandbox calls" in latency.limited_by
    assert rows["5. rate limit, API v1: never more than the limit in any 60 s"].met is True
    assert rows["5. … ≥ 95% of the allowance used while a backlog waits, API v1"].met is True
    grown = rows["6. receiver RSS growth after warm-up < 10% (first 10% of events)"]
    assert grown.met is False and rows["6. … receiver, over the second half (its caches full)"].met is True
    camt = rows["7. camt.053: entries/s parsed, and parsed + published (POST to 202)"]
    assert camt.payrelay.startswith("9,000")
    assert not any(target.startswith(("1.", "2.")) for target in rows)  # not run, not shown
