"""The batch ingest benchmark runs at a small size and reports every figure; no speed asserted."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.benchmarks import batch

pytestmark = pytest.mark.usefixtures("rabbitmq_reachable")


def test_a_short_run_reports_payrelay_and_its_raw_reference(tmp_path: Path) -> None:
    out = tmp_path / "batch.json"
    argv = ["--seconds", "2", "--runs", "1", "--batch", "50", "--connections", "4", "--json", str(out)]
    result = batch.main(argv)
    ids = {f["id"] for f in result["figures"]}
    measured = {f"{target}.{key}" for target, measures in batch.MEASURES.items() for key, _, _ in measures}
    assert ids == measured | {"ratio"}
    [ours] = result["runs"]["payrelay"]
    assert ours["requests"] > 0 and ours["non_2xx"] == 0, ours  # every batch answered 202
    assert ours["events"] == ours["requests"] * 50 <= ours["queued"]  # and its events queued
    assert ours["p99_ms"] >= ours["p50_ms"] > 0 and ours["cpu_receiver"] > 0 and ours["cpu_wrk"] > 0
    [raw] = result["runs"]["raw"]
    assert raw["events"] == raw["queued"] > 0 and raw["cpu_publisher"] > 0, raw
    idle = {"payrelay.non_2xx"} | {f"{t}.{key}" for t in batch.TARGETS for key in ("cpu_other", "cpu_stolen")}
    assert all(f["figure"] > 0 for f in result["figures"] if f["id"] not in idle)  # idle ones: 0 if quiet
    assert all(f["figure"] >= 0 for f in result["figures"])
    assert [r["ratio"] for r in result["rounds"]] == [ours["events_per_s"] / raw["events_per_s"]]
    assert orjson.loads(out.read_bytes())["figures"] == result["figures"]


def test_batches_escape_for_lua_as_single_requests_do() -> None:
    """The C-speed escaping gives ingest.lua_requests' per-byte result for every byte value."""
    raw = bytes(range(256)) + b'{"a":"\\"}\r\n'
    expected = "".join(chr(b) if 32 <= b <= 126 and b not in (34, 92) else f"\\{b:03d}" for b in raw)
    assert batch._lua_string(raw) == expected
