"""The end-to-end benchmark runs each scenario small and reports every figure; no speed is asserted."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.benchmarks import end_to_end

pytestmark = [pytest.mark.usefixtures("rabbitmq_reachable"), pytest.mark.postgres]


@pytest.mark.timeout(180)  # five scenarios, each starting a sandbox, a receiver and its consumers
def test_a_short_run_reports_every_scenario_and_records_each_payment_once(tmp_path: Path) -> None:
    out = tmp_path / "end_to_end.json"
    result = end_to_end.main(["--events", "200", "--peer-events", "30", "--runs", "1", "--json", str(out)])
    keys = [s.key for s in end_to_end.SCENARIOS]
    ratios = {f"ratio.{key}" for key in keys if key != "peer"} | {"ratio.vs_peer"}
    ids = {f["id"] for f in result["figures"]}
    assert ids == {f"{key}.{what}" for key in keys for what in ("events_per_s", "startup_s")} | ratios
    assert all(f["figure"] > 0 for f in result["figures"]), result["figures"]
    for s in end_to_end.SCENARIOS:
        [run] = result["runs"][s.key]
        events = 30 if s.peer else 200
        assert run["events"] == run["payments"] == run["record_payment_calls"] == events, (s.key, run)
        # payrelay reads each invoice before its first payment (SPEC §4); the peer only records.
        assert run["api_calls"] == events if s.peer else run["api_calls"] >= 2 * events, (s.key, run)
        assert run["log_trouble"]["lines"] == 0, (s.key, run["log_trouble"])
        workers = ["peer"] if s.peer else [f"consumer-{i}" for i in range(s.processes)]
        assert set(workers) | {"sandbox", "benchmark", "others", "stolen"} <= set(run["cpu"]), run["cpu"]
        assert ("postgres" in run["cpu"]) == (s.ledger == "postgresql")
    rows = {row["key"]: row for row in result["table"]}
    assert set(rows) == {*keys, "vs_peer"} and rows["vs_peer"]["reference"] == rows["peer"]["reference"]
    assert orjson.loads(out.read_bytes())["figures"] == result["figures"]
    assert end_to_end.markdown(result).count("\n| payrelay, ") >= 5
