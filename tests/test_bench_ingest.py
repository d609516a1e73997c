"""The side-by-side ingest benchmark runs at a small size and reports every figure; no speed asserted."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.benchmarks import ingest

pytestmark = pytest.mark.usefixtures("rabbitmq_reachable")


def test_a_short_run_reports_both_receivers(tmp_path: Path) -> None:
    out = tmp_path / "ingest.json"
    result = ingest.main(["--seconds", "2", "--runs", "1", "--connections", "8", "--json", str(out)])
    ids = {f["id"] for f in result["figures"]}
    assert ids == {f"{t}.{key}" for t in ingest.TARGETS for key, _, _ in ingest.MEASURES} | {"ratio"}
    for target in ingest.TARGETS:
        [run] = result["runs"][target]
        assert run["requests"] > 0 and run["non_2xx"] == 0, (target, run)  # every answer a 202
        assert run["rate"] > 0 and run["p99_ms"] >= run["p50_ms"] > 0 and run["cpu_receiver"] > 0
    assert orjson.loads(out.read_bytes())["figures"] == result["figures"]


def test_wrk_output_is_read_in_milliseconds() -> None:
    text = """
  Latency Distribution
     50%  812.00us
     90%    2.10ms
     99%    1.20s
  2000 requests in 2.00s, 400.00KB read
  Non-2xx or 3xx responses: 3
Requests/sec:   1000.50
"""
    assert ingest.parse_wrk(text) == {
        "rate": 1000.5, "requests": 2000.0, "non_2xx": 3.0, "p50_ms": 0.812, "p90_ms": 2.1, "p99_ms": 1200.0
    }  # fmt: skip
