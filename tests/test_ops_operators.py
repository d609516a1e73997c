"""Who the ops app says did it: operators by their own tokens, never by a name the caller supplies.

The app over real HTTP, a real RabbitMQ and a SQLite ledger (the harness of `test_ops_app.py`).
The probe that started it: a bearer with the shared token and `X-Payrelay-Operator: nobody` could
replay a 10.00 letter as 1,000.00 and be recorded as whoever it claimed to be.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import orjson
import pytest
from pydantic import ValidationError

from service.broker import declare_once
from service.ops.app import create_app
from service.ops.auth import new_token, token_digest
from service.settings import ConfigError, Settings, load_settings
from tests.conftest import AMQP_URL, get_all, serve
from tests.test_ops_app import CSRF_META, TOKEN, Harness, ops_settings

pytestmark = pytest.mark.usefixtures("rabbitmq_reachable")

ANA, BOB = new_token(), new_token()
OPERATORS = {"ana": token_digest(ANA), "bob": token_digest(BOB)}
PAYRELAY = str(Path(sys.executable).parent / "payrelay")


@pytest.fixture
async def ops(prefix: str, amqp: aio_pika.abc.AbstractConnection, tmp_path: Path) -> AsyncIterator[Harness]:
    settings = ops_settings(prefix, tmp_path, ops_operators=OPERATORS)
    await declare_once(AMQP_URL, settings.broker.topology())
    async with (
        serve(create_app(settings)) as url,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
    ):
        yield Harness(url, http, settings, amqp, prefix)


async def replayed_by(ops: Harness) -> str:
    (moved,) = await get_all(ops.amqp, f"{ops.prefix}.record-payment", expect=1)
    return str((moved.headers or {})["x-payrelay-replayed-by"])


async def test_a_bearer_is_the_operator_whose_token_it_is_whatever_it_claims(ops: Harness) -> None:
    await ops.dead_letter("evt-1")
    status, _ = await ops.api(
        "POST", "/api/dead-letters/replay", {"ids": ["evt-1"]}, token=ANA,
        headers={"X-Payrelay-Operator": "nobody"},
    )  # fmt: skip
    assert status == 200
    assert await replayed_by(ops) == "ops:ana"
    status, audit = await ops.api("GET", "/api/audit", token=BOB)
    assert [r["actor"] for r in audit["audit"]] == ["ops:ana"]


async def test_the_admin_token_is_admin_and_a_digest_is_not_a_token(ops: Harness) -> None:
    await ops.dead_letter("evt-1")
    status, _ = await ops.api("POST", "/api/dead-letters/purge", {"all": True, "confirm": True}, token=TOKEN)
    assert status == 200
    status, audit = await ops.api("GET", "/api/audit", token=TOKEN)
    assert [r["actor"] for r in audit["audit"]] == ["ops:admin"]
    for wrong in (OPERATORS["ana"], OPERATORS["ana"].removeprefix("sha256:"), ANA[:-1], ""):
        status, _ = await ops.api("GET", "/api/audit", token=wrong or "x")
        assert status == 401, wrong


async def test_a_session_is_the_operator_whose_token_signed_in(ops: Harness) -> None:
    """A `name` field in the sign-in form (the old way) is ignored: the token says who."""
    await ops.dead_letter("evt-1")
    status, headers, page = await ops.request(
        "POST", "/login", token=None, data={"token": BOB, "name": "Mallory", "next": "/"},
        headers={"Origin": ops.url},
    )  # fmt: skip
    assert status == 303
    cookie = headers["Set-Cookie"].split(";", 1)[0]
    status, _, page = await ops.request("GET", "/", token=None, headers={"Cookie": cookie})
    assert "Signed in as bob" in page and "Mallory" not in page
    match = CSRF_META.search(page)
    assert match is not None
    status, headers, _ = await ops.request(
        "POST", "/dead-letters/action", token=None, headers={"Cookie": cookie, "Origin": ops.url},
        data={"csrf": match.group(1), "action": "replay", "mode": "run", "ids": "evt-1"},
    )  # fmt: skip
    assert status == 303
    assert await replayed_by(ops) == "ops:bob"
    status, _, page = await ops.request(
        "POST", "/login", token=None, data={"token": "guess", "next": "/"}, headers={"Origin": ops.url}
    )
    assert status == 401 and "That token is not valid." in page


async def test_an_edit_that_changes_how_much_arrived_is_refused(ops: Harness) -> None:
    """The probe: `set` amount 1000.00 on a 25.00 letter. Refused, nothing moves, the letter waits."""
    await ops.dead_letter("evt-1", invoice=None)
    for edit in ({"invoice_id": "INV-1010", "amount": "1000.00"}, {"currency": "EUR"}):
        status, problem = await ops.api(
            "POST", "/api/dead-letters/replay", {"ids": ["evt-1"], "set": edit}, token=ANA
        )
        assert status == 422, edit
        assert "never editable" in problem["detail"]
    assert await ops.dead_letter_ids() == ["evt-1"]
    assert await get_all(ops.amqp, f"{ops.prefix}.record-payment", expect=0) == []


def test_operators_need_digests_of_their_own() -> None:
    with pytest.raises(ValidationError, match="never the token itself"):
        Settings(ops_operators={"ana": ANA})
    with pytest.raises(ValidationError, match="the same token"):
        Settings(ops_operators={"ana": OPERATORS["ana"], "bob": OPERATORS["ana"]})
    with pytest.raises(ValidationError, match="operator name"):
        Settings(ops_operators={"<script>": OPERATORS["ana"]})


def test_operators_come_from_the_environment_or_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYRELAY_OPS_OPERATORS", orjson.dumps({"ana": OPERATORS["ana"]}).decode())
    monkeypatch.setenv("PAYRELAY_CONFIG", "")
    assert load_settings().ops.operators == {"ana": OPERATORS["ana"]}
    monkeypatch.delenv("PAYRELAY_OPS_OPERATORS")
    config = tmp_path / "payrelay.toml"
    config.write_text(f'[ops.operators]\n"bob" = "{OPERATORS["bob"]}"\n')
    monkeypatch.setenv("PAYRELAY_CONFIG", str(config))
    assert load_settings().ops.operators == {"bob": OPERATORS["bob"]}


def test_operators_alone_are_enough_and_nothing_at_all_is_refused(prefix: str, tmp_path: Path) -> None:
    create_app(ops_settings(prefix, tmp_path, admin_token="", ops_operators=OPERATORS))
    with pytest.raises(ConfigError, match="ops-token"):
        create_app(ops_settings(prefix, tmp_path, admin_token="", ops_operators={}))


async def test_ops_token_prints_a_token_and_the_line_that_lets_it_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYRELAY_")} | {"PAYRELAY_CONFIG": ""}
    process = await asyncio.create_subprocess_exec(
        PAYRELAY,
        "ops-token",
        "carol",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err
    text = out.decode()
    token = re.search(r"^  (\S+)$", text, re.M)
    line = re.search(r'^  "carol" = "(sha256:[0-9a-f]{64})"$', text, re.M)
    assert token is not None and line is not None, text
    assert token_digest(token.group(1)) == line.group(1)
    config = tmp_path / "payrelay.toml"
    config.write_text("[ops.operators]\n" + line.group(0).strip() + "\n")
    monkeypatch.setenv("PAYRELAY_CONFIG", str(config))
    settings: Any = load_settings()
    assert settings.ops.operators == {"carol": line.group(1)}


@pytest.mark.parametrize("token", ["x", "short-token", "a" * 23])
def test_an_admin_token_that_could_be_guessed_is_refused(token: str) -> None:
    """A 1-character admin token used to be accepted, on 0.0.0.0 too."""
    with pytest.raises(ValidationError, match="at least 24 characters"):
        Settings(admin_token=token)
    Settings(admin_token="a" * 24)
    Settings(admin_token="")  # unset: only loopback development may run so
