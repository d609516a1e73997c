"""The three consumer scenarios run at tiny sizes and report every figure; no speed or memory asserted.

What is asserted is what the scenarios promise whatever the machine: every figure present and
finite, the client's rate limit kept in every 60-second window of the sandbox's log, no invoice
recorded twice (the scenarios raise if one is), and the JSON written.
"""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pytest

from tests.benchmarks import scenarios

pytestmark = pytest.mark.usefixtures("rabbitmq_reachable")

RATE = 60  # calls a minute, sandbox and consumer
LATENCY = {"throughput", "vs_calls", "calls_per_payment"}
RATELIMIT = {"window_max", "refused", "allowance_used", "calls_per_payment", "payments_per_minute"}
GROWTH = ("growth", "late_growth", "rss_start_mib", "rss_warm_mib", "rss_end_mib", "rss_max_mib")
MEMORY = {
    "rate",
    "ledger_mib",
    *(f"{who}.{m}" for who in ("receiver", "consumer", "sandbox") for m in GROWTH),
}
CPU = {"consumer", "sandbox", "benchmark", "others", "stolen"}


@pytest.mark.timeout(150)  # ~50 s on a quiet machine; the other benchmarks may share its 2 cores
def test_tiny_runs_report_every_figure_and_record_each_payment_once(tmp_path: Path) -> None:
    """Latency 50 ms x 100 events, 60/min for 15 s, memory over 3,000 events: all figures, JSON too."""
    out = tmp_path / "scenarios.json"
    report = scenarios.main(
        ["--latency-events", "100", "--latency-ms", "50", "--prefetch", "64",
         "--rate", str(RATE), "--ratelimit-minutes", "0.25",
         "--memory-events", "3000", "--sample-seconds", "1", "--json", str(out)]
    )  # fmt: skip
    figures = {f["id"]: f for f in report["figures"]}
    expected = (
        {f"latency.p64.{m}" for m in LATENCY}
        | {f"ratelimit.{m}" for m in RATELIMIT}
        | {f"memory.{m}" for m in MEMORY}
        | {f"{key}.cpu.{who}" for key in ("latency.p64", "ratelimit", "memory") for who in CPU}
        | {"memory.cpu.receiver"}
    )
    assert expected <= set(figures), expected - set(figures)
    for key, item in figures.items():
        assert isinstance(item["figure"], int | float) and math.isfinite(item["figure"]), key
        assert item["what"] and item["unit"], key
    assert figures["latency.p64.throughput"]["figure"] > 0
    assert figures["latency.p64.calls_per_payment"]["figure"] >= 1

    sections = report["sections"]
    latency = sections["latency.p64"]["raw"]
    assert latency["record_payment"]["recorded"] == 100  # exactly once each (recorded_once raises else)
    limited = sections["ratelimit"]["raw"]
    assert 0 < figures["ratelimit.window_max"]["figure"] <= RATE
    assert limited["record_payment"]["recorded"] >= limited["confirmed"] > 0
    memory = sections["memory"]["raw"]
    assert sum(check["recorded"] for check in memory["log_checks"]) == 3000
    assert memory["samples"][-1]["confirmed"] == 3000 and len(memory["samples"]) >= 3

    written = orjson.loads(out.read_bytes())
    assert written["figures"] == orjson.loads(orjson.dumps(report["figures"]))
    assert written["machine"]["cores"] >= 1 and "--memory-events 3000" in written["command"]
