"""`payrelay dev`, `check` and `send` as people run them: real subprocesses, real servers."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import orjson
import pytest

from service.cli.dev import DEV_ADMIN_TOKEN, DEV_SECRET
from service.receiver import create_app
from service.sender import example_event
from tests.conftest import AMQP_URL, SECRET, free_port, make_settings, serve
from tests.pipeline import API_KEY, sandbox_server

pytestmark = pytest.mark.usefixtures("rabbitmq_reachable")

PAYRELAY = str(Path(sys.executable).parent / "payrelay")


async def run(*args: str, env: dict[str, str], within: float = 60) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        PAYRELAY, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), within)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def base_env(prefix: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    config = tmp_path / "payrelay.toml"
    config.write_text(f'[sources.acme-bank]\nsecrets = ["{SECRET}"]\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYRELAY_")}
    return env | {
        "PAYRELAY_CONFIG": str(config),
        "PAYRELAY_AMQP_URL": AMQP_URL,
        "PAYRELAY_AMQP_PREFIX": prefix,
        "PAYRELAY_LEDGER_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
        **extra,
    }


async def test_check_reports_each_dependency(
    prefix: str, tmp_path: Path, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """All reachable and the key accepted: exit 0, one line each, and no secret printed."""
    async with sandbox_server() as sandbox_url:
        env = base_env(
            prefix, tmp_path, PAYRELAY_CHARGEBEE_BASE_URL=sandbox_url, PAYRELAY_CHARGEBEE_API_KEY=API_KEY
        )
        code, out, err = await run("check", env=env)
    assert code == 0, out + err
    assert "config: valid; 1 source(s): acme-bank" in out
    assert "broker: reachable" in out and "ledger: reachable" in out
    assert f"chargebee: API key accepted by {sandbox_url}/api/v1" in out
    assert API_KEY not in out + err and "guest:guest" not in out + err and SECRET not in out + err


async def test_check_fails_on_a_refused_key_and_a_missing_broker(
    prefix: str, tmp_path: Path, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """A refused key and an unreachable broker are each a FAILED line and exit 1."""
    async with sandbox_server() as sandbox_url:
        env = base_env(
            prefix,
            tmp_path,
            PAYRELAY_CHARGEBEE_BASE_URL=sandbox_url,
            PAYRELAY_CHARGEBEE_API_KEY="cb_wrong_key",
            PAYRELAY_AMQP_URL=f"amqp://guest:guest@127.0.0.1:{free_port()}/",
        )
        code, out, _ = await run("check", env=env)
    assert code == 1
    assert "broker: FAILED" in out
    assert "chargebee: FAILED: Chargebee refuses payrelay's configuration: Chargebee 401" in out
    assert "cb_wrong_key" not in out


async def test_check_says_what_the_ledger_database_answered_on_one_line(prefix: str, tmp_path: Path) -> None:
    """A SQLite file that cannot be opened: one FAILED line in SQLite's words, exit 1."""
    missing = tmp_path / "no-such-directory" / "ledger.db"
    env = base_env(prefix, tmp_path, PAYRELAY_LEDGER_URL=f"sqlite:///{missing}")
    code, out, _ = await run("check", env=env)
    assert code == 1
    [ledger] = [line for line in out.splitlines() if "ledger" in line or "sqlalche" in line]
    assert ledger == "ledger: FAILED: OperationalError: unable to open database file"


async def test_invalid_configuration_exits_2_naming_the_key(prefix: str, tmp_path: Path) -> None:
    """Start-up validation: a bad value stops the command with exit 2 and the key's name."""
    env = base_env(prefix, tmp_path, PAYRELAY_CHARGEBEE_RATE_LIMIT="fast")
    code, _, err = await run("check", env=env)
    assert code == 2
    assert "chargebee_rate_limit" in err


async def test_send_posts_a_file_single_or_batch(
    prefix: str, tmp_path: Path, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """`payrelay send FILE` signs and posts the event or the batch in it; a rejected one exits 1."""
    settings = make_settings(prefix)
    batch = [example_event("bank.deposit", amount="1.00", currency="USD") for _ in range(2)]
    (tmp_path / "batch.json").write_bytes(orjson.dumps(batch))
    bad = example_event("bank.deposit", amount="1.001", currency="USD")
    (tmp_path / "bad.json").write_bytes(orjson.dumps(bad))
    env = base_env(prefix, tmp_path)
    async with serve(create_app(settings)) as url:
        code, out, _ = await run("send", str(tmp_path / "batch.json"), "--url", url, env=env)
        assert code == 0 and out.startswith("202 ") and '"accepted":2' in out
        code, out, _ = await run("send", str(tmp_path / "bad.json"), "--url", url, env=env)
        assert code == 1 and out.startswith("422 ")


@pytest.fixture
async def dev(
    prefix: str, tmp_path: Path, amqp: aio_pika.abc.AbstractConnection
) -> AsyncIterator[dict[str, Any]]:
    port = free_port()
    while any(_busy(p) for p in (port + 1, port + 10, port + 1022, port + 1023)):
        port = free_port()
    env = base_env(prefix, tmp_path)
    env.pop("PAYRELAY_CONFIG")
    env.pop("PAYRELAY_LEDGER_URL")
    process = await asyncio.create_subprocess_exec(
        PAYRELAY,
        "dev",
        "--port",
        str(port),
        "--ledger",
        str(tmp_path / "dev.db"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    yield {"process": process, "port": port, "env": env}
    if process.returncode is None:
        process.kill()
        await process.wait()


def _busy(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def test_dev_runs_everything_and_events_flow(dev: dict[str, Any]) -> None:
    """`payrelay dev`: the banner's send command records a payment in the sandbox; Ctrl-C exits 0."""
    process, port = dev["process"], dev["port"]
    assert process.stdout is not None
    banner = ""
    deadline = time.monotonic() + 30
    while "See what Chargebee received" not in banner:
        assert time.monotonic() < deadline, f"no banner: {banner!r}"
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        assert line, "payrelay dev exited"
        banner += line.decode()
    assert DEV_SECRET in banner and f"http://127.0.0.1:{port}/v1/ingest/acme-bank" in banner
    code, out, _ = await run(
        "send",
        "--url",
        f"http://127.0.0.1:{port}",
        "--source",
        "acme-bank",
        "--secret",
        DEV_SECRET,
        "--remittance",
        "Payment for INV-1002, thanks",
        "--amount",
        "125.50",
        env=dev["env"],
    )
    assert code == 0, out
    async with aiohttp.ClientSession() as http:
        calls: list[dict[str, Any]] = []
        while not any(c["status"] == 200 for c in calls):
            assert time.monotonic() < deadline + 30, "the payment never reached the sandbox"
            await asyncio.sleep(0.2)
            async with http.get(f"http://127.0.0.1:{port + 10}/sandbox/requests") as response:
                calls = (await response.json())["requests"]
        assert calls[0]["invoice_id"] == "INV-1002" and calls[0]["form"]["amount"] == "12550"
        for health in (
            f"http://127.0.0.1:{port + 1}/healthz",
            f"http://127.0.0.1:{port + 1022}/readyz",
            f"http://127.0.0.1:{port + 1023}/readyz",  # the receiver's metrics port, as in production
        ):
            async with http.get(health) as response:
                assert response.status == 200, health
        async with http.get(f"http://127.0.0.1:{port + 1023}/metrics") as response:
            assert response.status == 200 and "payrelay_ingest_requests_total" in await response.text()
        async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
            assert response.status == 404  # never on the public port
    process.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(process.wait(), 30) == 0


async def _banner(process: asyncio.subprocess.Process) -> None:
    assert process.stdout is not None
    banner, deadline = "", time.monotonic() + 30
    while "See what Chargebee received" not in banner:
        assert time.monotonic() < deadline, f"no banner: {banner!r}"
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        assert line, "payrelay dev exited"
        banner += line.decode()


async def test_dev_walks_through_cash_application(dev: dict[str, Any]) -> None:
    """The README's cash-application walkthrough on `payrelay dev`'s demo book, command by command:
    a known account paying one invoice and then two without a reference (matched), an ambiguous
    payment (review, accepted in the ops API), and the next one from that account (matched)."""
    port, env = dev["port"], dev["env"]
    await _banner(dev["process"])
    url = f"http://127.0.0.1:{port}"

    async def send(*args: str) -> None:
        code, out, err = await run("send", "--url", url, "--secret", DEV_SECRET, *args, env=env)
        assert code == 0, out + err

    async with aiohttp.ClientSession() as http:

        async def recorded(count: int) -> list[dict[str, Any]]:
            deadline = time.monotonic() + 30
            while True:
                async with http.get(f"http://127.0.0.1:{port + 10}/sandbox/requests") as response:
                    ok = [c for c in (await response.json())["requests"] if c["status"] == 200]
                if len(ok) >= count:
                    return ok
                assert time.monotonic() < deadline, f"{len(ok)} of {count} payments recorded"
                await asyncio.sleep(0.2)

        async def ops(method: str, path: str, body: Any = None) -> Any:
            bearer = {"Authorization": f"Bearer {DEV_ADMIN_TOKEN}"}
            address = f"http://127.0.0.1:{port + 1}{path}"
            async with http.request(method, address, json=body, headers=bearer) as response:
                assert response.status == 200, await response.text()
                return await response.json()

        globex = ("--payer-fingerprint", "hmac-sha256:globex-demo")
        await send(
            "--invoice", "GX-1001", "--amount", "1200.00", "--payer-name", "Globex Corporation", *globex
        )
        await recorded(1)
        await send("--amount", "300.00", *globex)
        assert (await recorded(2))[-1]["invoice_id"] == "GX-1003"
        await send("--amount", "2950.00", *globex)
        assert {c["invoice_id"] for c in (await recorded(4))[-2:]} == {"GX-1002", "GX-1004"}

        initech = ("--payer-name", "INITECH LIMITED", "--payer-fingerprint", "hmac-sha256:initech-demo")
        await send("--amount", "500.00", *initech)
        deadline = time.monotonic() + 30
        while not (items := (await ops("GET", "/api/review"))["items"]):
            assert time.monotonic() < deadline, "the ambiguous payment never reached review"
            await asyncio.sleep(0.2)
        [item] = items
        assert [s["allocations"][0]["invoice_id"] for s in item["suggestions"]] == ["IT-2001", "IT-2002"]
        await ops("POST", f"/api/review/{item['id']}/accept", {"suggestion": 0})
        assert (await recorded(5))[-1]["invoice_id"] == "IT-2001"
        await send("--amount", "500.00", *initech)
        assert (await recorded(6))[-1]["invoice_id"] == "IT-2002"
        assert (await ops("GET", "/api/review"))["items"] == []
