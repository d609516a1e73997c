"""The ops app over real HTTP (uvicorn), a real RabbitMQ and a SQLite ledger.

Dead letters are put in the way the consumer puts them: published to `{prefix}.dead-letter` with
the `x-payrelay-*` headers. Every request goes through aiohttp with cookies handled by hand, so
each test says exactly which credentials it sends.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import orjson
import pytest

from service.broker import Broker, declare_once
from service.ledger import Ledger, Recorded
from service.messages import DEAD_LETTER_REASONS
from service.ops.app import create_app
from service.ops.auth import new_token, token_digest
from service.queue_stats import queue_stats
from service.settings import ConfigError, Settings
from service.topology import build
from tests.conftest import AMQP_URL, free_port, get_all, make_settings, serve

pytestmark = pytest.mark.usefixtures("rabbitmq_reachable")

TOKEN = "ops-test-token-5e1f9c0b7d2a4863"
MANAGEMENT_URL = "http://127.0.0.1:15672"
# Operators by name, each with a token of their own (the configuration keeps only digests).
OPERATOR_TOKENS = {name: new_token() for name in ("Alice", "Bob", "Carol", "Dana", "Erin", "Frank")}
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]*)">')


def event(
    event_id: str, *, type_: str = "bank.deposit", invoice: str | None = "INV-1001", amount: str = "25.00"
) -> dict[str, Any]:
    data: dict[str, Any] = {"amount": amount, "currency": "USD"}
    if type_ == "bank.deposit":
        data |= {"booked_at": "2024-05-01T10:00:00Z", "bank_reference": f"REF-{event_id}"}
    else:
        data |= {"scanned_at": "2024-05-01T10:00:00Z", "check_number": "10042"}
    if invoice is not None:
        data["invoice_id"] = invoice
    source = "urn:acme:core-banking" if type_ == "bank.deposit" else "urn:lockbox:scanner"
    return {"specversion": "1.0", "id": event_id, "source": source, "type": type_, "data": data}


def ago(**delta: float) -> str:
    return (datetime.now(UTC) - timedelta(**delta)).isoformat().replace("+00:00", "Z")


@dataclass
class Harness:
    url: str
    http: aiohttp.ClientSession
    settings: Settings
    amqp: aio_pika.abc.AbstractConnection
    prefix: str

    async def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = TOKEN,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> tuple[int, dict[str, str], str]:
        sent = {"Authorization": f"Bearer {token}"} if token else {}
        sent.update(headers or {})
        async with self.http.request(
            method, self.url + path, headers=sent, allow_redirects=False, **kwargs
        ) as response:
            return response.status, dict(response.headers), await response.text()

    async def api(self, method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        status, headers, text = await self.request(method, path, json=body, **kwargs)
        return status, orjson.loads(text) if text else None

    async def dead_letter(
        self,
        event_id: str,
        *,
        reason: str = "invoice_not_found",
        origin: str = "acme-bank",
        type_: str = "bank.deposit",
        invoice: str | None = "INV-1001",
        failed_at: str | None = None,
        chargebee: dict[str, Any] | None = None,
        amount: str = "25.00",
    ) -> bytes:
        """Dead-letter an event as the consumer does; returns the body."""
        body = orjson.dumps(event(event_id, type_=type_, invoice=invoice, amount=amount))
        headers: dict[str, Any] = {
            "x-payrelay-source": origin,
            "x-payrelay-reason": reason,
            "x-payrelay-error": f"{reason} for {event_id}",
            "x-payrelay-attempts": 3,
            "x-payrelay-failed-at": failed_at or ago(seconds=5),
        }
        if chargebee is not None:
            headers["x-payrelay-chargebee-error"] = orjson.dumps(chargebee).decode()
        channel = await self.amqp.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(f"{self.prefix}.dead-letter", ensure=False)
        message = aio_pika.Message(
            body,
            message_id=event_id,
            content_type="application/cloudevents+json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers=headers,
            type=type_,
        )
        await exchange.publish(message, routing_key="")
        await channel.close()
        return body

    async def dead_letter_ids(self, query: str = "") -> list[str]:
        """The event ids of the letters the API lists."""
        status, body = await self.api("GET", f"/api/dead-letters{query}")
        assert status == 200, body
        return [d["event_id"] for d in body["dead_letters"]]

    async def waiting(self) -> int:
        """Dead letters not replayed or purged: kept in the ledger, or still on their way in the queue."""
        ledger = await Ledger.open(self.settings.ledger.url)
        try:
            kept = await ledger.letters(f"{self.prefix}.dead-letter").count()
        finally:
            await ledger.close()
        return kept + await self.depth("dead-letter")

    async def depth(self, queue: str) -> int:
        channel = await self.amqp.channel()
        declared = await channel.declare_queue(f"{self.prefix}.{queue}", passive=True)
        await channel.close()
        return declared.declaration_result.message_count or 0

    async def sign_in(self, name: str = "", token: str = TOKEN) -> tuple[str, str]:
        """Sign in through the form, as operator `name` (by their token) or with `token`; returns
        (cookie header value, CSRF token of the dashboard)."""
        status, headers, _ = await self.request(
            "POST",
            "/login",
            token=None,
            data={"token": OPERATOR_TOKENS[name] if name else token, "next": "/"},
            headers={"Origin": self.url},
        )
        assert status == 303, status
        cookie = headers["Set-Cookie"].split(";", 1)[0]
        status, _, page = await self.request("GET", "/", token=None, headers={"Cookie": cookie})
        assert status == 200
        match = CSRF_META.search(page)
        assert match is not None
        return cookie, match.group(1)


async def settle(
    ledger: Ledger,
    event_id: str,
    *,
    invoice: str | None = "INV-1001",
    failures: tuple[tuple[str | None, str], ...] = (),
    amount: int | None = None,
    currency: str = "USD",
) -> None:
    """A payment in the ledger as the consumer leaves it: each failure in turn, as (reason, error)
    (no reason: transient, waiting for a retry), then, given an `amount` in minor units, recorded."""
    key = ("acme-bank", "urn:acme:core-banking", event_id)
    for reason, error in failures:
        await ledger.claim(key, owner="test", lease_seconds=30, invoice_id=invoice)
        await ledger.record_failure(key, owner="test", error=error, reason=reason, final=reason is not None)
    if amount is not None:
        assert invoice is not None
        await ledger.claim(key, owner="test", lease_seconds=30, invoice_id=invoice)
        recorded = Recorded(
            transaction_id=f"txn_{event_id}", invoice_id=invoice, invoice_status="paid", amount_due=0,
            amount=amount, currency=currency, recorded_at=datetime.now(UTC), confirmation=b"{}",
        )  # fmt: skip
        await ledger.record_success(key, recorded, owner="test")


def moved_of(outcome: dict[str, Any]) -> tuple[int, int, bool, list[str]]:
    """(matched, moved, dry_run, event ids) of a replay or purge answer; its `ids` are letter ids."""
    assert all(i.startswith("dl-") for i in outcome["ids"]), outcome
    return outcome["matched"], outcome["moved"], outcome["dry_run"], outcome["event_ids"]


def ops_settings(prefix: str, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "admin_token": TOKEN,
        "ops_operators": {name: token_digest(token) for name, token in OPERATOR_TOKENS.items()},
        "ledger_url": f"sqlite:///{tmp_path}/ledger.db",
        "amqp_management_url": MANAGEMENT_URL,
        # Loopback, and the name a TLS proxy in front would use (the Secure-cookie test).
        "ops_trusted_hosts": ["127.0.0.1", "localhost", "::1", "ops.example.com"],
        "ops_cookie_secure": False,  # these tests speak plain http; test_the_cookie_is_secure_… turns it on
    }
    values.update(overrides)
    return make_settings(prefix, **values)


@pytest.fixture
async def harness(
    prefix: str, amqp: aio_pika.abc.AbstractConnection, tmp_path: Path
) -> AsyncIterator[Harness]:
    settings = ops_settings(prefix, tmp_path)
    topology = build(prefix, settings.broker.retry_delays_seconds, settings.broker.delivery_limit)
    await declare_once(AMQP_URL, topology)
    async with (
        serve(create_app(settings)) as url,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
    ):
        yield Harness(url, http, settings, amqp, prefix)


# -- authentication ---------------------------------------------------------------------------

PROTECTED = [
    ("GET", "/api/queues"),
    ("GET", "/api/overview"),
    ("GET", "/api/dead-letters"),
    ("GET", "/api/dead-letters/evt-1"),
    ("POST", "/api/dead-letters/replay"),
    ("POST", "/api/dead-letters/purge"),
    ("GET", "/api/events/lookup?q=evt-1"),
    ("GET", "/api/audit"),
    ("GET", "/api/no-such-route"),
    ("GET", "/"),
    ("GET", "/fragments/dashboard"),
    ("GET", "/dead-letters"),
    ("GET", "/dead-letters/evt-1"),
    ("POST", "/dead-letters/action"),
    ("GET", "/lookup?q=evt-1"),
    ("GET", "/audit"),
    ("POST", "/logout"),
]
WRONG_CREDENTIALS = {
    "none": {},
    "wrong bearer": {"Authorization": "Bearer not-the-token"},
    "bearer with a prefix of the token": {"Authorization": f"Bearer {TOKEN[:-1]}"},
    "token as basic auth": {"Authorization": "Basic " + base64.b64encode(f"admin:{TOKEN}".encode()).decode()},
    "forged cookie": {"Cookie": "payrelay_ops=forged-session-id"},
    "token as the cookie": {"Cookie": f"payrelay_ops={TOKEN}"},
}


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_every_route_rejects_missing_or_wrong_credentials(
    harness: Harness, method: str, path: str
) -> None:
    """API routes answer 401 problem+json; pages redirect (303) to the sign-in form; nothing is done."""
    await harness.dead_letter("evt-1")
    for label, credentials in WRONG_CREDENTIALS.items():
        headers = {"Origin": harness.url, **credentials}
        json_body = {"all": True, "confirm": True} if path.startswith("/api/") else None
        form = (
            None
            if json_body is not None
            else {"action": "purge", "mode": "run", "confirm": "yes", "all": "1"}
        )
        status, response_headers, body = await harness.request(
            method,
            path,
            token=None,
            headers=headers,
            json=json_body if method == "POST" else None,
            data=form if method == "POST" else None,
        )
        if path.startswith("/api/"):
            assert status == 401, label
            assert response_headers["Content-Type"] == "application/problem+json", label
            assert response_headers["WWW-Authenticate"].startswith("Bearer"), label
            assert orjson.loads(body)["status"] == 401
        else:
            assert status == 303, label
            assert response_headers["Location"].startswith("/login"), label
    assert await harness.waiting() == 1
    assert await harness.depth("record-payment") == 0


async def test_public_routes_need_no_credentials(harness: Harness) -> None:
    """/healthz, /readyz, /metrics, /login and /static/* answer without credentials."""
    for path, expected in [
        ("/healthz", '"ok"'),
        ("/readyz", '"ready"'),
        ("/metrics", "payrelay_replays_total"),
        ("/login", "Your token"),
        ("/static/ops.css", ".cards"),
        ("/static/ops.js", "/fragments/dashboard"),
    ]:
        status, headers, body = await harness.request("GET", path, token=None)
        assert status == 200, path
        assert expected in body, path
        assert "default-src 'self'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"


async def test_sign_in_sets_an_http_only_cookie_that_works_for_pages_and_the_api(harness: Harness) -> None:
    """The cookie is HttpOnly, SameSite=Strict, not the token, and opens both pages and /api."""
    status, headers, _ = await harness.request(
        "POST",
        "/login",
        token=None,
        data={"token": OPERATOR_TOKENS["Alice"], "next": "/dead-letters"},
        headers={"Origin": harness.url},
    )
    assert status == 303
    assert headers["Location"] == "/dead-letters"
    set_cookie = headers["Set-Cookie"]
    attributes = [a.strip().lower() for a in set_cookie.split(";")]
    name, value = set_cookie.split(";", 1)[0].split("=", 1)
    assert name == "payrelay_ops"
    assert value and value != OPERATOR_TOKENS["Alice"] and OPERATOR_TOKENS["Alice"] not in set_cookie
    assert "httponly" in attributes
    assert "samesite=strict" in attributes
    assert "path=/" in attributes
    assert "secure" not in attributes  # plain http on loopback only
    cookie = {"Cookie": f"payrelay_ops={value}"}

    status, _, page = await harness.request("GET", "/", token=None, headers=cookie)
    assert status == 200
    assert "Signed in as Alice" in page
    status, overview = await harness.api("GET", "/api/overview", token=None, headers=cookie)
    assert status == 200
    assert "queues" in overview

    # Logging out revokes the session on the server, not only in the browser.
    csrf = CSRF_META.search(page)
    assert csrf is not None
    status, headers, _ = await harness.request(
        "POST", "/logout", token=None, headers={**cookie, "Origin": harness.url}, data={"csrf": csrf.group(1)}
    )
    assert status == 303
    assert "payrelay_ops=" in headers["Set-Cookie"]
    status, _, _ = await harness.request("GET", "/", token=None, headers=cookie)
    assert status == 303
    status, _ = await harness.api("GET", "/api/overview", token=None, headers=cookie)
    assert status == 401


async def test_a_wrong_token_signs_nobody_in(harness: Harness) -> None:
    status, headers, page = await harness.request(
        "POST",
        "/login",
        token=None,
        data={"token": "guess", "name": "Mallory"},
        headers={"Origin": harness.url},
    )
    assert status == 401
    assert "Set-Cookie" not in headers
    assert "That token is not valid." in page
    assert "guess" not in page  # a mistyped token is not echoed back either


async def test_the_cookie_is_secure_by_configuration_not_by_host(
    prefix: str, amqp: aio_pika.abc.AbstractConnection, tmp_path: Path
) -> None:
    """Secure and `__Host-` named unless configured off: whatever Host a request names (it used
    to be decided from Host, so a request naming 127.0.0.1 got a cookie without Secure)."""
    settings = ops_settings(prefix, tmp_path, ops_cookie_secure=True)
    await declare_once(AMQP_URL, settings.broker.topology())
    async with (
        serve(create_app(settings)) as url,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
    ):
        secure = Harness(url, http, settings, amqp, prefix)
        for host in ("127.0.0.1", "ops.example.com"):
            status, headers, _ = await secure.request(
                "POST", "/login", token=None, data={"token": TOKEN},
                headers={"Host": host, "Origin": f"https://{host}"},
            )  # fmt: skip
            assert status == 303
            attributes = [a.strip().lower() for a in headers["Set-Cookie"].split(";")]
            assert headers["Set-Cookie"].startswith("__Host-payrelay_ops=")
            assert "secure" in attributes and "path=/" in attributes
            assert not any(a.startswith("domain=") for a in attributes)


async def test_sign_in_ignores_an_offsite_next(harness: Harness) -> None:
    status, headers, _ = await harness.request(
        "POST",
        "/login",
        token=None,
        data={"token": TOKEN, "next": "//evil.example/steal"},
        headers={"Origin": harness.url},
    )
    assert status == 303
    assert headers["Location"] == "/"


async def test_the_token_never_appears_in_responses_or_logs(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await harness.dead_letter("evt-1", chargebee={"api_error_code": "resource_not_found"})
    cookie, csrf = await harness.sign_in("Bob")
    seen: list[str] = []
    paths = [
        "/",
        "/fragments/dashboard",
        "/dead-letters",
        "/dead-letters/evt-1",
        "/lookup?q=evt-1",
        "/audit",
        "/login",
        "/metrics",
        "/healthz",
        "/api/queues",
        "/api/overview",
        "/api/dead-letters",
        "/api/dead-letters/evt-1",
        "/api/events/lookup?q=evt-1",
        "/api/audit",
    ]
    for path in paths:
        for credentials in ({"token": TOKEN}, {"token": None, "headers": {"Cookie": cookie}}):
            status, headers, body = await harness.request("GET", path, **credentials)
            assert status == 200, path
            seen += [body, repr(headers)]
    status, headers, body = await harness.request(
        "POST", "/login", token=None, data={"token": TOKEN, "name": "Bob"}, headers={"Origin": harness.url}
    )
    seen += [body, repr(headers)]
    status, headers, body = await harness.request("POST", "/login", token=None, data={"token": TOKEN + "x"})
    seen += [body, repr(headers)]
    status, body_json = await harness.api(
        "POST", "/api/dead-letters/replay", {"ids": ["evt-1"], "dry_run": True}
    )
    seen.append(orjson.dumps(body_json).decode())
    assert all(TOKEN not in text for text in seen)
    assert TOKEN not in caplog.text


async def test_cross_site_posts_are_refused(harness: Harness) -> None:
    """With the session cookie, a state change needs this host's Origin and the CSRF token."""
    await harness.dead_letter("evt-1")
    cookie, csrf = await harness.sign_in()
    replay = {"ids": ["evt-1"]}
    form = {"action": "replay", "mode": "run", "ids": "evt-1", "csrf": csrf}
    refused = [
        (
            "api, foreign Origin",
            "/api/dead-letters/replay",
            {"Origin": "http://evil.example", "X-CSRF-Token": csrf},
        ),
        ("api, no CSRF token", "/api/dead-letters/replay", {"Origin": harness.url}),
        ("api, wrong CSRF token", "/api/dead-letters/replay", {"Origin": harness.url, "X-CSRF-Token": "x"}),
        ("api, no Origin or Referer", "/api/dead-letters/replay", {"X-CSRF-Token": csrf}),
        ("form, foreign Origin", "/dead-letters/action", {"Origin": "http://evil.example"}),
        ("form, foreign Referer", "/dead-letters/action", {"Referer": "http://evil.example/page"}),
        ("form, Origin null", "/dead-letters/action", {"Origin": "null"}),
    ]
    for label, path, headers in refused:
        is_api = path.startswith("/api/")
        status, _, _ = await harness.request(
            "POST",
            path,
            token=None,
            headers={"Cookie": cookie, **headers},
            json=replay if is_api else None,
            data=None if is_api else form,
        )
        assert status == 403, label
    status, _, _ = await harness.request(
        "POST", "/dead-letters/action", token=None, headers={"Cookie": cookie, "Origin": harness.url},
        data={**form, "csrf": "wrong"},
    )  # fmt: skip
    assert status == 403
    assert await harness.waiting() == 1
    assert await harness.depth("record-payment") == 0

    # The same request from the page itself goes through (Referer is enough without Origin).
    status, headers, _ = await harness.request(
        "POST", "/dead-letters/action", token=None, headers={"Cookie": cookie, "Referer": harness.url + "/"},
        data=form,
    )  # fmt: skip
    assert status == 303
    assert headers["Location"] == "/dead-letters?done=replayed&n=1"
    assert await harness.depth("record-payment") == 1


async def test_sign_in_from_another_site_is_refused(harness: Harness) -> None:
    status, headers, _ = await harness.request(
        "POST", "/login", token=None, data={"token": TOKEN}, headers={"Origin": "http://evil.example"}
    )
    assert status == 403
    assert "Set-Cookie" not in headers


# -- the dead-letter browser ------------------------------------------------------------------


async def test_list_with_each_filter(harness: Harness) -> None:
    await harness.dead_letter("evt-a", failed_at=ago(hours=3), invoice="INV-1")
    await harness.dead_letter(
        "evt-b", reason="unmatched_invoice", origin="lockbox", type_="check.scan", invoice=None,
        failed_at=ago(minutes=10),
    )  # fmt: skip
    await harness.dead_letter("evt-c", origin="lockbox", invoice="INV-3", failed_at=ago(minutes=1))
    await harness.dead_letter(
        "evt-d", reason="retries_exhausted", type_="check.scan", invoice="INV-4", failed_at=ago(days=2)
    )
    assert await harness.dead_letter_ids() == ["evt-a", "evt-b", "evt-c", "evt-d"]
    expected = {
        "?reason=invoice_not_found": ["evt-a", "evt-c"],
        "?source=lockbox": ["evt-b", "evt-c"],
        "?source=urn:lockbox:scanner": ["evt-b", "evt-d"],
        "?type=check.scan": ["evt-b", "evt-d"],
        "?invoice=INV-3": ["evt-c"],
        "?older_than=1h": ["evt-a", "evt-d"],
        "?newer_than=30m": ["evt-b", "evt-c"],
        "?older_than=2h&newer_than=1d": ["evt-a"],
        "?reason=invoice_not_found&source=lockbox": ["evt-c"],
        "?limit=2": ["evt-a", "evt-b"],
    }
    for query, ids in expected.items():
        assert await harness.dead_letter_ids(query) == ids, query
    status, body = await harness.api("GET", "/api/dead-letters?reason=unmatched_invoice")
    (summary,) = body["dead_letters"]
    assert summary["id"].startswith("dl-")  # the letter's own id
    assert summary == {
        "id": summary["id"],
        "event_id": "evt-b",
        "state": "dead",
        "reason": "unmatched_invoice",
        "error": "unmatched_invoice for evt-b",
        "attempts": 3,
        "failed_at": summary["failed_at"],
        "origin": "lockbox",
        "source": "urn:lockbox:scanner",
        "type": "check.scan",
        "invoice_id": None,
        "amount": "25.00",
        "currency": "USD",
        "replays": 0,
    }
    for bad in ("?older_than=soon", "?limit=0", "?limit=5000", "?reason=no_such_reason"):
        status, problem = await harness.api("GET", f"/api/dead-letters{bad}")
        assert status == 422, bad
        assert problem["status"] == 422
    # Listing leaves the queue as it was, in order.
    assert await harness.waiting() == 4
    assert await harness.dead_letter_ids() == ["evt-a", "evt-b", "evt-c", "evt-d"]

    status, _, page = await harness.request("GET", "/dead-letters?source=lockbox")
    assert status == 200
    assert re.findall(r'data-event-id="([^"]+)"', page) == ["evt-b", "evt-c"]
    assert len(re.findall(r'href="/dead-letters/dl-[0-9]+"', page)) == 2  # each letter by its own id


async def test_the_pages_reason_filter_is_a_choice_of_the_known_reasons(harness: Harness) -> None:
    await harness.dead_letter("evt-a")
    await harness.dead_letter("evt-b", reason="overpayment")
    status, _, page = await harness.request("GET", "/dead-letters?reason=overpayment")
    assert status == 200
    select = re.search(r'<select id="f-reason" name="reason">(.*?)</select>', page)
    assert select is not None
    assert re.findall(r'<option value="([^"]*)"', select.group(1)) == ["", *DEAD_LETTER_REASONS]
    assert '<option value="">Any</option>' in select.group(1)
    assert '<option value="overpayment" selected>' in select.group(1)
    assert re.findall(r'data-event-id="([^"]+)"', page) == ["evt-b"]
    status, _, page = await harness.request("GET", "/dead-letters?reason=voided")
    assert status == 422
    assert "unknown reason &#39;voided&#39;; the reasons are: invalid_event, unmatched_invoice" in page


async def test_detail(harness: Harness) -> None:
    body = await harness.dead_letter("evt-1", chargebee={"api_error_code": "resource_not_found"})
    status, detail = await harness.api("GET", "/api/dead-letters/evt-1")
    assert status == 200
    assert detail["event_id"] == "evt-1" and detail["id"].startswith("dl-")
    assert detail["event"] == orjson.loads(body)
    assert detail["chargebee_error"] == {"api_error_code": "resource_not_found"}
    assert detail["headers"]["x-payrelay-reason"] == "invoice_not_found"
    assert detail["body"] is None

    status, problem = await harness.api("GET", "/api/dead-letters/evt-unknown")
    assert status == 404
    assert problem["status"] == 404

    status, _, page = await harness.request("GET", "/dead-letters/evt-1")
    assert status == 200
    assert "resource_not_found" in page
    assert "REF-evt-1" in page  # the event JSON
    assert "x-payrelay-attempts" in page  # the headers table
    status, _, _ = await harness.request("GET", "/dead-letters/evt-unknown")
    assert status == 404


async def test_a_dry_run_touches_nothing(harness: Harness) -> None:
    for event_id in ("evt-1", "evt-2", "evt-3"):
        await harness.dead_letter(event_id)
    before = await harness.dead_letter_ids()
    status, outcome = await harness.api(
        "POST", "/api/dead-letters/replay", {"ids": ["evt-2"], "dry_run": True}
    )
    assert status == 200
    assert moved_of(outcome) == (1, 0, True, ["evt-2"])
    status, outcome = await harness.api("POST", "/api/dead-letters/purge", {"all": True, "dry_run": True})
    assert moved_of(outcome) == (3, 0, True, ["evt-1", "evt-2", "evt-3"])
    assert await harness.waiting() == 3
    assert await harness.depth("record-payment") == 0
    assert await harness.dead_letter_ids() == before
    status, audit = await harness.api("GET", "/api/audit")
    assert audit == {"audit": []}


async def test_replay_by_id_moves_exactly_that_message(harness: Harness) -> None:
    await harness.dead_letter("evt-1")
    body = await harness.dead_letter("evt-2", reason="retries_exhausted")
    await harness.dead_letter("evt-3")
    status, outcome = await harness.api(
        "POST", "/api/dead-letters/replay", {"ids": ["evt-2"]}, token=OPERATOR_TOKENS["Carol"]
    )
    assert status == 200
    assert moved_of(outcome) == (1, 1, False, ["evt-2"])
    (moved,) = await get_all(harness.amqp, f"{harness.prefix}.record-payment", expect=1)
    assert moved.message_id == "evt-2"
    assert moved.body == body
    headers = moved.headers or {}
    assert headers["x-payrelay-generation"] == 1
    assert headers["x-payrelay-replayed-by"] == "ops:Carol"
    assert headers["x-payrelay-previous-reason"] == "retries_exhausted"
    assert "x-payrelay-reason" not in headers
    assert "x-payrelay-attempts" not in headers
    assert headers["x-payrelay-source"] == "acme-bank"
    assert await harness.dead_letter_ids() == ["evt-1", "evt-3"]

    status, _, metrics = await harness.request("GET", "/metrics", token=None)
    assert "payrelay_replays_total 1.0" in metrics


async def test_edit_and_replay_keeps_the_original(harness: Harness) -> None:
    original = await harness.dead_letter("evt-1", invoice="INV-1", reason="invoice_not_found")
    await harness.dead_letter("evt-2", invoice="INV-1")
    status, outcome = await harness.api(
        "POST", "/api/dead-letters/replay", {"ids": ["evt-1"], "set": {"invoice_id": "INV-1002"}}
    )
    assert status == 200
    assert outcome["moved"] == 1
    (moved,) = await get_all(harness.amqp, f"{harness.prefix}.record-payment", expect=1)
    assert orjson.loads(moved.body)["data"]["invoice_id"] == "INV-1002"
    assert orjson.loads(moved.body)["id"] == "evt-1"
    headers = moved.headers or {}
    assert headers["x-payrelay-original"] == original.decode()
    assert orjson.loads(headers["x-payrelay-edits"]) == {"invoice_id": "INV-1002"}
    assert await harness.dead_letter_ids() == ["evt-2"]
    status, audit = await harness.api("GET", "/api/audit")
    (record,) = audit["audit"]
    assert record["action"] == "edit-replay"
    assert record["details"]["edits"] == {"invoice_id": "INV-1002"}


async def test_an_invalid_edit_or_selector_moves_nothing(harness: Harness) -> None:
    await harness.dead_letter("evt-1")
    await harness.dead_letter("evt-2")
    requests = [
        {"ids": ["evt-1"], "set": {"transaction_id": "x"}},  # not editable
        {"ids": ["evt-1"], "set": {"amount": "twelve"}},  # leaves an invalid event
        {"ids": ["evt-1"], "set": {"currency": "XXX"}},
        {"reason": "invoice_not_found", "set": {"invoice_id": "not valid!"}},
        {},  # selects nothing
        {"all": False},
        {"ids": ["evt-1"], "older_than": "whenever"},
        {"ids": ["evt-1"], "unknown": 1},
    ]
    for request in requests:
        status, problem = await harness.api("POST", "/api/dead-letters/replay", request)
        assert status == 422, request
        assert problem["status"] == 422
    status, problem = await harness.api("POST", "/api/dead-letters/replay", [1, 2])
    assert status == 422
    status, _, _ = await harness.request("POST", "/api/dead-letters/replay", data=b"ids=evt-1")
    assert status == 415
    assert await harness.dead_letter_ids() == ["evt-1", "evt-2"]
    assert await harness.depth("record-payment") == 0


async def test_purge_requires_confirmation(harness: Harness) -> None:
    await harness.dead_letter("evt-1")
    await harness.dead_letter("evt-2", reason="invalid_event")
    status, problem = await harness.api("POST", "/api/dead-letters/purge", {"reason": "invalid_event"})
    assert status == 422
    assert "confirm" in problem["detail"]
    status, _ = await harness.api("POST", "/api/dead-letters/purge", {"confirm": True})
    assert status == 422  # confirmed, but selecting nothing
    assert await harness.waiting() == 2
    status, outcome = await harness.api(
        "POST", "/api/dead-letters/purge", {"reason": "invalid_event", "confirm": True}
    )
    assert status == 200
    assert moved_of(outcome) == (1, 1, False, ["evt-2"])
    assert await harness.dead_letter_ids() == ["evt-1"]
    assert await harness.depth("record-payment") == 0


async def test_a_confirmed_action_takes_exactly_the_letters_previewed(harness: Harness) -> None:
    """SPEC §6: a letter that arrives between the preview and the confirmation is not swept along,
    on the page (the confirm form carries the previewed letter ids) and in the API (a dry run's
    `ids` sent back)."""
    await harness.dead_letter("evt-1", reason="invalid_event")
    cookie, csrf = await harness.sign_in("Dana")
    session = {"Cookie": cookie, "Origin": harness.url}
    status, _, page = await harness.request(
        "POST", "/dead-letters/action", token=None, headers=session,
        data={"csrf": csrf, "action": "purge", "mode": "preview", "reason": "invalid_event"},
    )  # fmt: skip
    assert status == 200
    kept = re.findall(r'<input type="hidden" name="ids" value="([^"]+)"', page)
    assert len(kept) == 1 and kept[0].startswith("dl-")
    assert 'name="reason"' not in page  # the confirmation does not select afresh
    await harness.dead_letter("evt-late", reason="invalid_event")
    form = [("csrf", csrf), ("action", "purge"), ("mode", "run"), ("confirm", "yes"), ("ids", kept[0])]
    status, headers, _ = await harness.request(
        "POST", "/dead-letters/action", token=None, headers=session, data=form
    )
    assert (status, headers["Location"]) == (303, "/dead-letters?done=purged&n=1")
    assert await harness.dead_letter_ids() == ["evt-late"]

    status, preview = await harness.api(
        "POST", "/api/dead-letters/replay", {"reason": "invalid_event", "dry_run": True}
    )
    await harness.dead_letter("evt-later", reason="invalid_event")
    status, outcome = await harness.api("POST", "/api/dead-letters/replay", {"ids": preview["ids"]})
    assert moved_of(outcome) == (1, 1, False, ["evt-late"])
    assert await harness.dead_letter_ids() == ["evt-later"]


async def test_page_actions_preview_then_act_with_the_operator_in_the_audit(harness: Harness) -> None:
    await harness.dead_letter("evt-1")
    await harness.dead_letter("evt-2", reason="invalid_event")
    cookie, csrf = await harness.sign_in("Dana")
    session = {"Cookie": cookie, "Origin": harness.url}

    async def post(**form: str) -> tuple[int, dict[str, str], str]:
        return await harness.request(
            "POST", "/dead-letters/action", token=None, headers=session, data={"csrf": csrf, **form}
        )

    status, _, page = await post(action="replay", mode="preview", ids="evt-1")
    assert status == 200
    assert "Dry run: replay would move 1 dead letter" in page
    status, _, page = await post(action="purge", mode="preview", reason="invalid_event")
    assert status == 200
    assert 'name="confirm"' in page
    status, _, _ = await post(action="purge", mode="run", reason="invalid_event")  # box not ticked
    assert status == 200
    assert await harness.waiting() == 2
    _, _, detail = await harness.request("GET", "/dead-letters/evt-1")
    letter_id = re.findall(r'name="ids" value="(dl-[0-9]+)"', detail)[0]
    status, _, page = await post(
        action="replay", mode="run", ids=letter_id, field="invoice_id", value="bad id!"
    )
    assert status == 422
    assert "Nothing was changed" in page
    assert f'<a href="/dead-letters/{letter_id}">Back to the dead letter</a>' in page  # not the list
    assert await harness.waiting() == 2

    status, headers, _ = await post(action="purge", mode="run", reason="invalid_event", confirm="yes")
    assert (status, headers["Location"]) == (303, "/dead-letters?done=purged&n=1")
    status, headers, _ = await post(
        action="replay", mode="run", ids="evt-1", field="invoice_id", value="INV-7"
    )
    assert (status, headers["Location"]) == (303, "/dead-letters?done=replayed&n=1")
    status, _, page = await harness.request(
        "GET", headers["Location"], token=None, headers={"Cookie": cookie}
    )
    assert "Replayed 1 dead letter to the work queue." in page
    assert await harness.waiting() == 0
    (moved,) = await get_all(harness.amqp, f"{harness.prefix}.record-payment", expect=1)
    assert (moved.headers or {})["x-payrelay-replayed-by"] == "ops:Dana"

    status, audit = await harness.api("GET", "/api/audit")
    assert [(r["action"], r["actor"], r["count"]) for r in audit["audit"]] == [
        ("edit-replay", "ops:Dana", 1),
        ("purge", "ops:Dana", 1),
    ]
    status, _, page = await harness.request("GET", "/audit")
    assert "ops:Dana" in page and "edit-replay" in page


async def test_lookup_tells_an_events_story(harness: Harness) -> None:
    ledger = await Ledger.open(harness.settings.ledger.url)
    try:
        key = ("acme-bank", "urn:acme:core-banking", "evt-story")
        await ledger.claim(key, owner="test", lease_seconds=30, invoice_id="INV-77")
        await ledger.record_failure(
            key, owner="test", error="invoice INV-77 not found", reason="invoice_not_found", final=True
        )
    finally:
        await ledger.close()
    await harness.dead_letter("evt-story", invoice="INV-77")
    await harness.dead_letter("evt-other", invoice="INV-8")

    status, story = await harness.api("GET", "/api/events/lookup?q=evt-story")
    assert status == 200
    (entry,) = story["ledger"]
    assert entry["event_id"] == "evt-story"
    assert entry["state"] == "dead_lettered"
    assert entry["reason"] == "invoice_not_found"
    assert [d["event_id"] for d in story["dead_letters"]] == ["evt-story"]
    assert story["audit"] == []

    await harness.api("POST", "/api/dead-letters/replay", {"ids": ["evt-story"]})
    status, story = await harness.api("GET", "/api/events/lookup?q=evt-story")
    assert [(d["event_id"], d["state"]) for d in story["dead_letters"]] == [("evt-story", "replayed")]
    assert [r["action"] for r in story["audit"]] == ["replay"]
    status, by_invoice = await harness.api("GET", "/api/events/lookup?q=INV-77")
    assert [e["event_id"] for e in by_invoice["ledger"]] == ["evt-story"]

    status, _, page = await harness.request("GET", "/lookup?q=evt-story")
    assert status == 200
    assert "invoice INV-77 not found" in page
    status, problem = await harness.api("GET", "/api/events/lookup?q=")
    assert status == 422


async def test_a_recorded_event_shows_its_state_first_and_its_failures_as_history(harness: Harness) -> None:
    """The issue's event: voided, dead-lettered, replayed, then recorded. The page leads with
    "recorded" and its transaction; the failure and the replayed letter are history."""
    ledger = await Ledger.open(harness.settings.ledger.url)
    try:
        voided = (("invoice_not_payable", "invoice INV-1042 is voided"),)
        await settle(ledger, "evt-7", invoice="INV-1042", failures=voided)
        await harness.dead_letter("evt-7", reason="invoice_not_payable", invoice="INV-1042")
        status, _ = await harness.api("POST", "/api/dead-letters/replay", {"ids": ["evt-7"]})
        assert status == 200
        await settle(ledger, "evt-7", invoice="INV-1042", amount=2500)
        # Another payment for the invoice, its letter waiting: found by its event, naming no invoice.
        mismatch = (("currency_mismatch", "a EUR payment for a USD invoice"),)
        await settle(ledger, "evt-9", invoice="INV-1042", failures=mismatch)
        await harness.dead_letter("evt-9", reason="currency_mismatch", invoice=None)
    finally:
        await ledger.close()
    status, _, page = await harness.request("GET", "/lookup?q=INV-1042")
    assert status == 200
    current, history = page.split('<h2 id="history-heading">History</h2>')
    ledger_rows = current.split('id="ledger-table"')[1].split("</table>")[0]
    assert '<span class="badge good">recorded</span>' in ledger_rows and "txn_evt-7" in ledger_rows
    assert "invoice_not_payable" not in current and "voided" not in current
    assert "a EUR payment for a USD invoice" in ledger_rows  # evt-9's state now
    waiting = current.split('id="waiting-table"')[1]
    assert re.findall(r'data-event-id="([^"]+)"', waiting) == ["evt-9"]
    assert "invoice_not_payable" in history and "invoice INV-1042 is voided" in history
    assert 'data-letter-state="replayed"' in history.split('id="settled-table"')[1]


# -- queues and the dashboard -----------------------------------------------------------------


async def test_queue_stats_include_unacked_from_the_management_api(harness: Harness) -> None:
    """A message held by a consumer shows as unacked (management API) and as a consumer (AMQP)."""
    channel = await harness.amqp.channel()
    await channel.set_qos(prefetch_count=1)
    work = f"{harness.prefix}.record-payment"
    await channel.default_exchange.publish(aio_pika.Message(b"{}", message_id="held"), routing_key=work)
    await channel.default_exchange.publish(aio_pika.Message(b"{}", message_id="waiting"), routing_key=work)
    queue = await channel.get_queue(work, ensure=False)
    held: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()
    await queue.consume(held.put)
    await held.get()

    deadline = asyncio.get_running_loop().time() + 20  # the management API samples every 5 s
    while True:
        status, body = await harness.api("GET", "/api/queues")
        assert status == 200
        stats = {q["name"]: q for q in body["queues"]}
        if stats[work]["unacked"] == 1 or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.5)
    assert stats[work] | {"publish_rate": 0, "deliver_rate": 0} == {
        "name": work,
        "role": "work",
        "label": "Work queue",
        "ready": 1,
        "unacked": 1,
        "consumers": 1,
        "publish_rate": 0,
        "deliver_rate": 0,
    }
    assert isinstance(stats[work]["publish_rate"], float)
    assert body["consumers"] == 1
    assert list(stats) == [
        work,
        *(f"{harness.prefix}.retry.{t}" for t in ("5s", "30s", "2m", "10m", "30m")),
        f"{harness.prefix}.dead-letter",
    ]
    status, _, metrics = await harness.request("GET", "/metrics", token=None)
    assert f'payrelay_queue_messages{{queue="{work}",state="unacked"}} 1.0' in metrics
    assert f'payrelay_queue_consumers{{queue="{work}"}} 1.0' in metrics
    status, overview = await harness.api("GET", "/api/overview")
    assert overview["consumers_healthy"] is True
    await channel.close()


async def test_queue_stats_without_the_management_api(
    prefix: str, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """Unconfigured or unreachable, the management API leaves unacked and rates unknown (None)."""
    topology = build(prefix, [5, 30, 120, 600, 1800], 20)
    broker = Broker(AMQP_URL, topology)
    await broker.start(wait=5)
    try:
        channel = await amqp.channel()
        await channel.default_exchange.publish(aio_pika.Message(b"{}"), routing_key=f"{prefix}.dead-letter")
        await channel.close()
        for management in (None, f"http://127.0.0.1:{free_port()}"):
            settings = make_settings(prefix, amqp_management_url=management)
            stats = await queue_stats(settings, broker, None)
            dead = stats[-1]
            assert (dead.name, dead.ready, dead.unacked, dead.publish_rate) == (
                f"{prefix}.dead-letter", 1, None, None,
            )  # fmt: skip
    finally:
        await broker.stop()


async def test_the_overview_tells_chargebee_errors_from_dead_letters(harness: Harness) -> None:
    """`chargebee_error_rate` counts only payments whose outcome was Chargebee's; `dead_letter_rate`
    every dead letter; recent outcomes carry what was recorded, shown in major units."""
    ledger = await Ledger.open(harness.settings.ledger.url)
    try:
        for n in range(3):
            await settle(ledger, f"evt-ok-{n}", amount=2500)
        await settle(ledger, "evt-big", invoice="INV-1042", amount=9_999_999_900)
        await settle(ledger, "evt-nomatch", invoice=None, failures=(("unmatched_invoice", "no invoice id"),))
        await settle(ledger, "evt-void", failures=(("invoice_not_payable", "invoice INV-1001 is voided"),))
        await settle(ledger, "evt-503", failures=((None, "Chargebee answered 503"),))
        gave_up = ((None, "Chargebee answered 503"), ("retries_exhausted", "503, five times"))
        await settle(ledger, "evt-gave-up", failures=gave_up)
    finally:
        await ledger.close()
    status, overview = await harness.api("GET", "/api/overview")
    assert status == 200
    assert overview["ledger"]["counts"] == {"recorded": 4, "failed": 1, "dead_lettered": 3}
    # Chargebee: the retrying one and the one that ran out of retries, of 6 that reached it.
    assert overview["ledger"]["reached_chargebee"] == 6
    assert overview["chargebee_error_rate"] == 0.3333
    assert overview["dead_letter_rate"] == 0.375  # 3 of 8 settled, whatever the reason
    recent = {r["event_id"]: r for r in overview["recent"]}
    assert (recent["evt-big"]["amount"], recent["evt-big"]["currency"]) == (9_999_999_900, "USD")
    assert (recent["evt-void"]["amount"], recent["evt-void"]["currency"]) == (None, None)

    status, _, page = await harness.request("GET", "/")
    errors = re.search(r'<div class="card" id="card-errors">(.*?)</div>', page, re.S)
    dead = re.search(r'<div class="card" id="card-dead-letter-rate">(.*?)</div>', page, re.S)
    assert errors is not None and dead is not None
    assert "Chargebee error rate" in errors.group(1) and ">33.3%<" in errors.group(1)
    assert '<span data-summary="reached">6 payments</span> that reached it' in errors.group(1)
    assert "payrelay dead-letter rate" in dead.group(1) and ">37.5%<" in dead.group(1)
    assert '<td class="num nowrap">99999999.00 USD</td>' in page


async def test_dashboard_shows_depths_with_stable_hooks(harness: Harness) -> None:
    await harness.dead_letter("evt-1")
    await harness.dead_letter("evt-2")
    status, _, page = await harness.request("GET", "/")
    assert status == 200
    dead = f"{harness.prefix}.dead-letter"
    cell = re.search(rf'<td[^>]*data-queue="{re.escape(dead)}" data-field="ready"[^>]*>(\d+)</td>', page)
    # The queue only carries letters to the ledger: the dashboard took both in before it counted.
    assert cell is not None and cell.group(1) == "0"
    assert 'aria-live="polite"' in page
    assert 'data-summary="dead_letters">2<' in page


async def test_the_dashboard_fragment_is_the_pages_live_part_rendered_anew(harness: Harness) -> None:
    """/fragments/dashboard is the page's `#overview`, alone and current, never cached."""
    await harness.dead_letter("evt-1")
    status, _, page = await harness.request("GET", "/")
    status, headers, fragment = await harness.request("GET", "/fragments/dashboard")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Cache-Control"] == "no-store"
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert fragment.lstrip().startswith('<div id="overview" data-live-overview')
    assert "<html" not in fragment and "<script" not in fragment and "csrf" not in fragment
    assert 'data-summary="dead_letters">1<' in fragment
    # The page includes the same partial: apart from the times, the page holds the fragment as is.
    assert _without_times(fragment) in _without_times(page)

    await harness.dead_letter("evt-2")
    status, _, fragment = await harness.request("GET", "/fragments/dashboard")
    assert 'data-summary="dead_letters">2<' in fragment
    assert 'data-broker="open"' in fragment


async def test_an_unauthenticated_fragment_fetch_is_sent_to_sign_in_like_a_page(harness: Harness) -> None:
    status, headers, body = await harness.request("GET", "/fragments/dashboard", token=None)
    assert (status, headers["Location"]) == (303, "/login?next=%2Ffragments%2Fdashboard")
    assert "overview" not in body


def _without_times(html: str) -> str:
    html = re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z", "T", html)
    return re.sub(r"\d\d:\d\d:\d\d UTC", "T", html)


async def test_text_from_messages_and_query_strings_is_escaped(harness: Harness) -> None:
    """A `<script>` in a message id, an error, a filter or a lookup shows as text, never as markup."""
    attack = "<script>alert(1)</script>"
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    await harness.dead_letter(f"evt-{attack}", invoice=None)
    assert await harness.dead_letter_ids() == [f"evt-{attack}"]  # the id itself carries the markup
    quoted = "evt-%3Cscript%3Ealert(1)%3C%2Fscript%3E"
    for path in (
        "/dead-letters",
        f"/dead-letters/{quoted}",
        "/dead-letters?source=%3Cscript%3Ealert(1)%3C/script%3E",
        f"/dead-letters?reason={quoted}",  # refused (not a known reason), and quoted as text
        f"/lookup?q={quoted}",
        "/lookup?q=%22%3E%3Cscript%3Ealert(1)%3C/script%3E",
    ):
        status, _, page = await harness.request("GET", path)
        assert status == (422 if "reason=" in path else 200), path
        assert attack not in page, path
        assert escaped in page, path
    status, _, page = await harness.request("GET", "/lookup?q=%22%3E%3Cscript%3Ealert(1)%3C/script%3E")
    assert 'value="&#34;&gt;&lt;script&gt;' in page  # the quote cannot end the attribute


# -- configuration ----------------------------------------------------------------------------


async def test_no_admin_token_is_a_config_error_unless_allowed_on_loopback(
    prefix: str, amqp: aio_pika.abc.AbstractConnection, tmp_path: Path
) -> None:
    settings = ops_settings(prefix, tmp_path, admin_token=None, ops_operators={})
    with pytest.raises(ConfigError, match="PAYRELAY_ADMIN_TOKEN"):
        create_app(settings)
    with pytest.raises(ConfigError):
        create_app(ops_settings(prefix, tmp_path, admin_token="", ops_operators={}))

    await declare_once(
        AMQP_URL, build(prefix, settings.broker.retry_delays_seconds, settings.broker.delivery_limit)
    )
    async with (
        serve(create_app(settings, allow_no_token_on_loopback=True)) as url,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
    ):
        open_app = Harness(url, http, settings, amqp, prefix)
        await open_app.dead_letter("evt-1")
        status, _, page = await open_app.request("GET", "/", token=None)
        assert status == 200
        assert "Open access" in page
        status, outcome = await open_app.api(
            "POST", "/api/dead-letters/replay", {"all": True, "dry_run": True}, token=None
        )
        assert (status, outcome["matched"]) == (200, 1)
        status, _ = await open_app.api(
            "POST", "/api/dead-letters/purge", {"all": True, "confirm": True}, token=None,
            headers={"Origin": "http://evil.example"},
        )  # fmt: skip
        assert status == 403
        status, _, _ = await open_app.request(
            "POST", "/dead-letters/action", token=None, data={"action": "purge", "all": "1", "mode": "run"},
            headers={"Origin": "http://evil.example"},
        )  # fmt: skip
        assert status == 403
        assert await open_app.waiting() == 1
