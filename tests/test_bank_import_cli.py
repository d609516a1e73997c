"""`payrelay import FILE --source S` as people run it: a subprocess, the real RabbitMQ (SPEC §9).

The same parsing path as `POST /v1/files/{source}`; `--dry-run` shows and publishes nothing.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import aio_pika
import orjson
import pytest

from service.bankfiles import demo
from tests.conftest import AMQP_URL, SECRET, get_all

pytestmark = pytest.mark.usefixtures("rabbitmq_reachable")

PAYRELAY = str(Path(sys.executable).parent / "payrelay")
CAMT054 = demo.path("camt054")
CHECKS_SECRET = "whsec_Y2hlY2tzLW9ubHktc2VjcmV0LWZvci10ZXN0cw=="
IDS = ["DEMO-20261130-0001-A", "DEMO-20261130-0001-B", "DEMO-20261130-0002"]


async def run(*args: str, env: dict[str, str], within: float = 60) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        PAYRELAY, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), within)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
def env(prefix: str, tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "payrelay.toml"
    config.write_text(
        'payer_fingerprint_key = "fingerprint-key-for-tests-only"\n'
        f'[sources.acme-bank]\nsecrets = ["{SECRET}"]\n'
        f'[sources.checks]\nsecrets = ["{CHECKS_SECRET}"]\nformat = "lockbox"\n'
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PAYRELAY_")}
    return clean | {
        "PAYRELAY_CONFIG": str(config),
        "PAYRELAY_AMQP_URL": AMQP_URL,
        "PAYRELAY_AMQP_PREFIX": prefix,
        "COLUMNS": "200",
    }


async def queued(amqp: aio_pika.abc.AbstractConnection, prefix: str, expect: int) -> list[str]:
    return [m.message_id or "" for m in await get_all(amqp, f"{prefix}.record-payment", expect, within=3)]


async def test_a_dry_run_shows_the_events_and_publishes_nothing(
    env: dict[str, str], prefix: str, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """The table names each event, its amount and invoices, the skipped debit, and says nothing was sent."""
    await run("topology", "declare", env=env)
    code, out, err = await run("import", str(CAMT054), "--source", "acme-bank", "--dry-run", env=env)
    assert code == 0, err
    for expected in (*IDS, "199.99 USD", "INV-1003=199.99", "Globex Corporation", "skipped", "debit"):
        assert expected in out
    assert "nothing was published" in out
    assert await queued(amqp, prefix, 0) == []


async def test_a_dry_run_in_json_gives_the_events_without_account_numbers(env: dict[str, str]) -> None:
    """--dry-run --json: the answer of the endpoint plus the events; no full IBAN anywhere."""
    code, out, err = await run(
        "import", str(CAMT054), "--source", "acme-bank", "--dry-run", "--json", env=env
    )
    assert code == 0, err
    answer = orjson.loads(out)
    assert answer["file"]["format"] == "camt.054" and answer["published"] == 0
    assert [e["id"] for e in answer["events"]] == IDS == answer["ids"]
    assert "GB29NWBK60161331926819" not in out and "DE89370400440532013000" not in out
    assert answer["events"][0]["data"]["payer"]["account_fingerprint"].startswith("hmac-sha256:")


async def test_an_import_publishes_every_event_with_confirms(
    env: dict[str, str], prefix: str, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """Without --dry-run the events are on the work queue when the command says so."""
    code, out, err = await run("import", str(CAMT054), "--source", "acme-bank", "--json", env=env)
    assert code == 0, err
    assert orjson.loads(out)["published"] == 3
    assert sorted(await queued(amqp, prefix, 3)) == IDS


async def test_a_broken_file_is_one_line_and_nothing_published(
    env: dict[str, str], prefix: str, amqp: aio_pika.abc.AbstractConnection, tmp_path: Path
) -> None:
    """A truncated file: exit 2, where and why in one line, no traceback, an empty queue."""
    await run("topology", "declare", env=env)
    broken = tmp_path / "broken.xml"
    broken.write_bytes(CAMT054.read_bytes()[:900])
    code, out, err = await run("import", str(broken), "--source", "acme-bank", env=env)
    assert code == 2
    assert err.startswith("payrelay: ") and len(err.strip().splitlines()) == 1
    assert "nothing was published" in err and "Traceback" not in err
    assert await queued(amqp, prefix, 0) == []


async def test_the_source_format_decides_unless_format_is_given(env: dict[str, str]) -> None:
    """A lockbox source refuses camt; --format camt reads the same file for that source."""
    code, _, err = await run("import", str(CAMT054), "--source", "checks", "--dry-run", env=env)
    assert code == 2 and "lockbox" in err
    code, out, err = await run(
        "import", str(CAMT054), "--source", "checks", "--format", "camt", "--dry-run", "--json", env=env
    )
    assert code == 0, err
    assert orjson.loads(out)["accepted"] == 3


async def test_an_unknown_source_says_which_exist(env: dict[str, str]) -> None:
    """One line naming the configured sources."""
    code, _, err = await run("import", str(CAMT054), "--source", "nobody", env=env)
    assert code == 2 and "acme-bank" in err and "checks" in err
