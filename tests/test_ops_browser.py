"""The ops dashboard in a real browser: Debian's chromium, driven by Playwright, against the real app.

Fails (never skips) without /usr/bin/chromium: CI installs it with apt-get. Screenshots go to
`artifacts/` (git-ignored) for people to look at.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import aiohttp
import pytest
from playwright.async_api import Dialog, Page, async_playwright, expect

from service.broker import declare_once
from service.ledger import Ledger, Recorded
from service.ops.app import create_app
from tests.conftest import AMQP_URL, get_all, serve
from tests.test_ops_app import OPERATOR_TOKENS, Harness, ops_settings

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("rabbitmq_reachable")]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


async def some_history(ledger_url: str) -> None:
    """Three outcomes in the ledger, so the dashboard has recent outcomes and an error rate to show."""
    ledger = await Ledger.open(ledger_url)
    try:
        for n, invoice in ((1000, "INV-1000"), (999, "INV-0999")):
            key = ("acme-bank", "urn:acme:core-banking", f"evt-{n}")
            await ledger.claim(key, owner="test", lease_seconds=30, invoice_id=invoice)
            recorded = Recorded(
                transaction_id=f"txn_{n}",
                invoice_id=invoice,
                invoice_status="paid",
                amount_due=0,
                amount=2500,
                currency="USD",
                recorded_at=datetime.now(UTC),
                confirmation=b"{}",
            )
            await ledger.record_success(key, recorded, owner="test")
        key = ("acme-bank", "urn:acme:core-banking", "evt-1001")
        await ledger.claim(key, owner="test", lease_seconds=30, invoice_id="INV-1001")
        await ledger.record_failure(
            key, owner="test", error="404 resource_not_found", reason="invoice_not_found", final=True
        )
    finally:
        await ledger.close()


async def sign_in(page: Page, url: str, name: str) -> None:
    """Open the dashboard, get sent to the sign-in form, sign in and be back on the dashboard."""
    await page.goto(url + "/")
    await expect(page).to_have_url(re.compile(r"/login$"))
    await page.get_by_label("Your token").fill(OPERATOR_TOKENS[name])
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Dashboard", level=1)).to_be_visible()


@pytest.fixture
def chromium() -> str:
    """The browser binary; its absence fails the test (CI installs it), it never skips it."""
    assert CHROMIUM.exists(), "Debian's chromium is missing: apt-get install -y chromium"
    ARTIFACTS.mkdir(exist_ok=True)
    return str(CHROMIUM)


@pytest.mark.timeout(120)
async def test_sign_in_watch_the_dead_letter_depth_and_replay_one(
    prefix: str, amqp: aio_pika.abc.AbstractConnection, tmp_path: Path, chromium: str
) -> None:
    """Sign in, watch the depth change live, open a dead letter and replay it into the work queue."""
    settings = ops_settings(prefix, tmp_path)
    await declare_once(AMQP_URL, settings.broker.topology())
    await some_history(settings.ledger.url)
    async with (
        serve(create_app(settings)) as url,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
        async_playwright() as playwright,
    ):
        ops = Harness(url, http, settings, amqp, prefix)
        await ops.dead_letter(
            "evt-1001", chargebee={"api_error_code": "resource_not_found", "http_status_code": 404}
        )
        await ops.dead_letter("evt-1002", reason="unmatched_invoice", invoice=None, origin="lockbox")
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            fetched: list[str] = []
            page.on("request", lambda request: fetched.append(request.url))
            await sign_in(page, url, "Erin")

            depth = page.locator('[data-summary="dead_letters"]')  # kept in the ledger, waiting
            await expect(depth).to_have_text("2")
            await page.evaluate("window.notReloaded = true")
            await ops.dead_letter("evt-1003", reason="retries_exhausted", invoice="INV-1003")
            await expect(depth).to_have_text("3", timeout=10_000)
            await expect(page.locator('[data-summary="error_rate"]')).to_have_text("33.3%")
            await expect(page.locator("#recent-rows tr")).to_have_count(3)
            assert await page.evaluate("window.notReloaded === true"), "the page was reloaded"
            # The refresh swaps in the server's rendering; the page never formats /api/overview itself.
            assert url + "/fragments/dashboard" in fetched
            assert not [u for u in fetched if "/api/" in u]
            await page.wait_for_timeout(1500)  # let the change highlight fade before the screenshot
            await page.screenshot(path=str(ARTIFACTS / "ops-dashboard.png"), full_page=True)

            await page.get_by_role("link", name="Dead letters", exact=True).click()
            rows = page.locator("[data-dead-letter]")
            await expect(rows).to_have_count(3)
            await page.locator('[data-event-id="evt-1002"] a').click()
            await expect(
                page.get_by_role("heading", name=re.compile(r"^Dead letter dl-[0-9]+$"))
            ).to_be_visible()
            await expect(page.get_by_role("link", name="evt-1002", exact=True)).to_be_visible()  # its story
            await page.screenshot(path=str(ARTIFACTS / "ops-dead-letter.png"), full_page=True)

            prompts: list[str] = []

            async def accept(dialog: Dialog) -> None:
                prompts.append(dialog.message)
                await dialog.accept()

            page.once("dialog", accept)
            await page.get_by_role("button", name="Replay", exact=True).click()
            await expect(page.get_by_role("status")).to_have_text("Replayed 1 dead letter to the work queue.")
            assert prompts == ["Replay this message to the work queue?"]
            await expect(rows).to_have_count(2)
            await expect(page.locator('[data-event-id="evt-1002"]')).to_have_count(0)
        finally:
            await browser.close()
    (moved,) = await get_all(amqp, f"{prefix}.record-payment", expect=1)
    assert moved.message_id == "evt-1002"
    assert (moved.headers or {})["x-payrelay-replayed-by"] == "ops:Erin"


@pytest.mark.timeout(120)
async def test_pause_holds_the_figures_and_a_revoked_session_leaves_for_sign_in(
    prefix: str, amqp: aio_pika.abc.AbstractConnection, tmp_path: Path, chromium: str
) -> None:
    """Paused, the dashboard keeps its figures; resumed, it catches up; signed out, it goes to sign-in."""
    settings = ops_settings(prefix, tmp_path)
    await declare_once(AMQP_URL, settings.broker.topology())
    async with (
        serve(create_app(settings)) as url,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
        async_playwright() as playwright,
    ):
        ops = Harness(url, http, settings, amqp, prefix)
        await ops.dead_letter("evt-1")
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await sign_in(page, url, "Frank")
            depth = page.locator('[data-summary="dead_letters"]')
            await expect(depth).to_have_text("1")

            toggle = page.get_by_role("button", name="Pause live updates")
            await toggle.click()
            await expect(toggle).to_have_attribute("aria-pressed", "true")
            await expect(page.locator("#updated-at")).to_have_text("paused")
            await page.wait_for_timeout(500)  # a refresh already on its way is dropped
            await ops.dead_letter("evt-2")
            await page.wait_for_timeout(4_000)  # two refresh intervals
            await expect(depth).to_have_text("1")
            await toggle.click()
            await expect(toggle).to_have_attribute("aria-pressed", "false")
            await expect(depth).to_have_text("2", timeout=10_000)

            # Signed out elsewhere (the session is revoked on the server): the next refresh,
            # redirected like any page, takes the browser to the sign-in form.
            (cookie,) = await page.context.cookies()
            csrf = await page.locator('meta[name="csrf-token"]').get_attribute("content")
            status, _, _ = await ops.request(
                "POST",
                "/logout",
                token=None,
                headers={"Cookie": f"{cookie['name']}={cookie['value']}", "Origin": url},
                data={"csrf": csrf or ""},
            )
            assert status == 303
            await expect(page).to_have_url(re.compile(r"/login$"), timeout=10_000)
        finally:
            await browser.close()
