"""The bank-file benchmark runs end to end at a small size and reports every figure; no timing asserted."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pytest

from tests.benchmarks import bank_files

pytestmark = pytest.mark.usefixtures("rabbitmq_reachable")

FILES = ("camt053", "bai2", "camt053_big")
EXPECTED = {
    *(f"parse.{f}.{m}" for f in FILES for m in ("entries_per_s", "credits_per_s")),
    *(
        f"memory.{f}.{m}"
        for f in FILES
        for m in ("file_mib", "peak_mib", "rss_per_file_mib", "kib_per_event")
    ),
    *(f"publish.{f}.{m}" for f in FILES[:2] for m in ("entries_per_s", "events_per_s")),
    *(f"publish.{f}.cpu.{who}" for f in FILES[:2] for who in ("receiver", "benchmark")),
    "publish.receiver_peak_rss_mib",
}
# A few hundred entries parse within pages already resident: their growth may honestly be zero.
MAY_BE_ZERO = {f"memory.{f}.{m}" for f in FILES for m in ("peak_mib", "rss_per_file_mib", "kib_per_event")}


def test_small_run_reports_every_figure_as_a_positive_number(tmp_path: Path) -> None:
    """A 200-entry run through the real receiver and RabbitMQ writes every figure, each a positive number."""
    path = tmp_path / "report.json"
    printed = bank_files.main(["--entries", "200", "--big-entries", "500", "--json", str(path)])
    report = orjson.loads(path.read_bytes())
    assert report == orjson.loads(orjson.dumps(printed))
    figures = {item["id"]: item for section in report["sections"] for item in section["figures"]}
    assert EXPECTED <= set(figures)
    for key, item in figures.items():
        value = item["figure"]
        assert isinstance(value, int | float) and math.isfinite(value), key
        assert value > 0 or (key in MAY_BE_ZERO and value == 0), (key, value)
        assert item["unit"] and item["what"], key
    assert report["machine"]["cores"] >= 1 and report["machine"]["memory_gib"] > 0
    assert "--entries 200" in report["command"]
