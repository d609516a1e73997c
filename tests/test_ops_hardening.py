"""The ops app under hostile clients: each test reproduces an attack from the security review.

Over real HTTP (uvicorn), a real RabbitMQ and a SQLite ledger, with the harness of
`test_ops_app.py`; a few checks drive the ASGI app or its helpers directly where that is the
precise way to see the attack (an endless request body).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.broker import declare_once
from service.hosts import host_allowed
from service.ops.app import create_app
from service.ops.auth import MAX_FORM_BYTES
from service.ops.layout import read_form
from service.ops.operations import BadRequest
from service.ops.throttle import Throttle
from tests.conftest import AMQP_URL, serve
from tests.test_ops_app import TOKEN, Harness, harness, ops_settings  # noqa: F401  (the fixture)

pytestmark = pytest.mark.usefixtures("rabbitmq_reachable")


async def test_an_absurd_age_is_a_422_not_a_500(harness: Harness) -> None:  # noqa: F811
    status, headers, body = await harness.request("GET", "/api/dead-letters?older_than=9999999999d")
    assert status == 422, body
    assert "at most 36500d" in body
    assert "default-src 'self'" in headers["Content-Security-Policy"]


async def test_a_500_carries_the_security_headers(prefix: str, tmp_path: Path) -> None:
    """Starlette's error middleware answers a crash outside the user middleware: the headers are
    added outermost, so even that answer has them."""
    settings = ops_settings(prefix, tmp_path)
    await declare_once(AMQP_URL, settings.broker.topology())
    app = create_app(settings)

    async def boom(request: Request) -> Response:
        raise RuntimeError("a bug")

    app.router.routes.insert(0, Route("/boom", boom))
    async with serve(app) as url, aiohttp.ClientSession() as http:
        async with http.get(url + "/boom", headers={"Authorization": f"Bearer {TOKEN}"}) as response:
            status, headers, body = response.status, response.headers, await response.text()
    assert status == 500
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"
    assert "a bug" not in body


async def test_a_form_is_refused_as_soon_as_it_passes_the_limit() -> None:
    """An endless chunked body: `read_form` stops at MAX_FORM_BYTES instead of reading it all."""
    sent = 0

    async def endless() -> dict[str, Any]:
        nonlocal sent
        sent += 1
        return {"type": "http.request", "body": b"x" * 65_536, "more_body": True}

    scope = {"type": "http", "method": "POST", "path": "/login", "headers": [], "query_string": b""}
    with pytest.raises(BadRequest, match="too large"):
        await asyncio.wait_for(read_form(Request(scope, endless)), 5)
    assert sent <= MAX_FORM_BYTES // 65_536 + 1


async def test_a_huge_chunked_sign_in_is_a_413(harness: Harness) -> None:  # noqa: F811
    async def chunks() -> AsyncIterator[bytes]:
        yield b"token=x&next=%2F&pad="
        for _ in range(64):  # 4 MiB, far past the limit, with no Content-Length to refuse it by
            yield b"a" * 65_536

    status, _, _ = await harness.request(
        "POST", "/login", token=None, data=chunks(), headers={"Origin": harness.url,
        "Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert status == 413


@pytest.mark.parametrize(
    ("host", "trusted", "allowed"),
    [
        ("127.0.0.1:8081", ["127.0.0.1"], True),
        ("localhost", ["127.0.0.1", "localhost"], True),
        ("[::1]:8081", ["::1"], True),
        ("OPS.Example.com:443", ["ops.example.com"], True),
        ("a.ops.example.com", ["*.example.com"], True),
        ("example.com", ["*.example.com"], False),  # a wildcard is for subdomains
        ("evil.example", ["127.0.0.1", "localhost", "::1"], False),
        ("127.0.0.1.evil.example", ["127.0.0.1"], False),
        ("", ["127.0.0.1"], False),
        ("anything", ["*"], True),
    ],
)
def test_which_host_names_are_trusted(host: str, trusted: list[str], allowed: bool) -> None:
    assert host_allowed(host, trusted) is allowed


async def test_dns_rebinding_reaches_nothing(prefix: str, tmp_path: Path) -> None:
    """Loopback mode without a token: a page on evil.example rebound to 127.0.0.1 sends
    `Host: evil.example`; it gets a 400, not the dashboard and its CSRF token. Probes still answer."""
    settings = ops_settings(prefix, tmp_path, admin_token="", ops_operators={})
    await declare_once(AMQP_URL, settings.broker.topology())
    async with (
        serve(create_app(settings, allow_no_token_on_loopback=True)) as url,
        aiohttp.ClientSession() as http,
    ):
        for path in ("/", "/api/overview", "/dead-letters", "/login"):
            async with http.get(
                url + path, headers={"Host": "evil.example"}, allow_redirects=False
            ) as response:
                body = await response.text()
                assert response.status == 400, path
                assert "csrf" not in body.lower(), path
        async with http.get(url + "/healthz", headers={"Host": "10.0.0.7:8081"}) as response:
            assert response.status == 200
        async with http.get(url + "/") as response:  # Host 127.0.0.1:port, trusted by default
            assert response.status == 200


# -- sign-in: guessing, tokens in URLs, sessions shared by replicas ----------------------------


def test_the_throttle_lets_a_few_typos_through_then_doubles_the_wait() -> None:
    now = [1000.0]
    throttle = Throttle(clock=lambda: now[0])
    for _ in range(5):
        assert throttle.wait("10.0.0.9") == 0.0
        throttle.failed("10.0.0.9")
    assert throttle.wait("10.0.0.9") == 2.0
    assert throttle.wait("10.0.0.8") == 0.0  # per client
    now[0] += 2.0
    throttle.failed("10.0.0.9")
    assert throttle.wait("10.0.0.9") == 4.0
    for _ in range(20):
        throttle.failed("10.0.0.9")
    assert throttle.wait("10.0.0.9") == 300.0  # at most five minutes
    now[0] += 901
    assert throttle.wait("10.0.0.9") == 0.0  # a quiet quarter of an hour forgets
    throttle.failed("10.0.0.7")
    throttle.succeeded("10.0.0.7")
    assert throttle.wait("10.0.0.7") == 0.0


async def test_guessing_bearers_is_logged_and_slowed(
    harness: Harness,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    """200 wrong bearers went by in 0.16 s, unlogged. Now each is logged (never the token) and
    after five the client must wait: 429 with Retry-After, even for the right token."""
    caplog.set_level(logging.WARNING, logger="payrelay.ops")
    for attempt in range(5):
        status, _ = await harness.api("GET", "/api/audit", token=f"guess-{attempt}")
        assert status == 401
    status, headers, body = await harness.request("GET", "/api/audit", token=TOKEN)
    assert status == 429 and int(headers["Retry-After"]) >= 1  # not even looked at
    wrong = [r.getMessage() for r in caplog.records if "wrong bearer" in r.getMessage()]
    assert len(wrong) == 5 and not any("guess" in line for line in wrong)


async def test_guessing_at_the_sign_in_form_is_slowed(harness: Harness) -> None:  # noqa: F811
    for attempt in range(5):
        status, _, _ = await harness.request(
            "POST", "/login", token=None, data={"token": f"guess-{attempt}"}, headers={"Origin": harness.url}
        )
        assert status == 401
    status, _, page = await harness.request(
        "POST", "/login", token=None, data={"token": TOKEN}, headers={"Origin": harness.url}
    )
    assert status == 429 and "Too many wrong tokens" in page


async def test_a_token_in_the_query_string_is_not_carried_into_the_sign_in_page(
    harness: Harness,  # noqa: F811
) -> None:
    secret = "leaked-in-a-url-0123456789"
    status, headers, _ = await harness.request("GET", f"/dead-letters?reason=x&token={secret}", token=None)
    assert status == 303
    assert secret not in headers["Location"] and "reason%3Dx" in headers["Location"]
    status, _, page = await harness.request("GET", f"/login?next=%2F%3Faccess_token%3D{secret}", token=None)
    assert status == 200 and secret not in page


async def test_a_session_signed_in_on_one_replica_works_on_another(
    prefix: str, amqp: aio_pika.abc.AbstractConnection, tmp_path: Path
) -> None:
    """Two ops replicas on one ledger: sign in on the first, use the second; sign out, refused on both."""
    settings = ops_settings(prefix, tmp_path)
    await declare_once(AMQP_URL, settings.broker.topology())
    async with (
        serve(create_app(settings)) as first,
        serve(create_app(settings)) as second,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
    ):
        one, two = Harness(first, http, settings, amqp, prefix), Harness(second, http, settings, amqp, prefix)
        cookie, csrf = await one.sign_in()
        status, _, page = await two.request("GET", "/", token=None, headers={"Cookie": cookie})
        assert status == 200 and f'content="{csrf}"' in page
        status, _, _ = await one.request(
            "POST", "/logout", token=None, headers={"Cookie": cookie, "Origin": one.url}, data={"csrf": csrf}
        )
        assert status == 303
        for replica in (one, two):
            status, headers, _ = await replica.request("GET", "/", token=None, headers={"Cookie": cookie})
            assert (status, headers["Location"]) == (303, "/login")
