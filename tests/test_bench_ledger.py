"""The ledger benchmark runs small on both ledgers and reports its figures; no speed is asserted."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.benchmarks import ledger


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_short_run_reports_its_figures(kind: str, tmp_path: Path) -> None:
    out = tmp_path / "ledger.json"
    result = ledger.main(["--payments", "200", "--concurrency", "16", "--runs", "1", "--ledger", kind,
                          "--json", str(out)])  # fmt: skip
    figures = {f["id"]: f["figure"] for f in result["figures"]}
    assert set(figures) == {"payments_per_s", "cpu_us", "cores"}
    assert all(value > 0 for value in figures.values()), figures
    assert orjson.loads(out.read_bytes())["figures"] == result["figures"]
