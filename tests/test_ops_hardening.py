"""The ops app under hostile clients: each test reproduces an attack from the security review.

Over real HTTP (uvicorn), a real RabbitMQ and a SQLite ledger, with the harness of
`test_ops_app.py`; a few checks drive the ASGI app or its helpers directly where that is the
precise way to see the attack (an endless request body).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.broker import declare_once
from service.ops.app import create_app
from service.ops.auth import MAX_FORM_BYTES, host_allowed
from service.ops.layout import read_form
from service.ops.operations import BadRequest
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
