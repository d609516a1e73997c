"""The ops dashboard in a real browser: Debian's chromium, driven by Playwright, against the real app.

Fails (never skips) without /usr/bin/chromium: CI installs it with apt-get. Screenshots go to
`artifacts/` (git-ignored) for people to look at.
"""

from __future__ import annotations

import re
from pathlib import Path

import aio_pika
import aiohttp
import pytest
from playwright.async_api import Dialog, Page, async_playwright, expect

from service.broker import declare_once
from service.ledger import Ledger
from service.messages import DEAD_LETTER_REASONS
from service.ops.app import create_app
from tests.conftest import AMQP_URL, get_all, serve
from tests.test_ops_app import OPERATOR_TOKENS, Harness, ops_settings, settle

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
    """Three outcomes in the ledger, so the dashboard has recent outcomes and rates to show."""
    ledger = await Ledger.open(ledger_url)
    try:
        await settle(ledger, "evt-999", invoice="INV-0999", amount=2500)
        await settle(ledger, "evt-1000", invoice="INV-1000", amount=2500)
        await settle(ledger, "evt-1001", failures=(("invoice_not_found", "404 resource_not_found"),))
    finally:
        await ledger.close()


async def gave_up(ledger_url: str, event_id: str) -> None:
    """A payment Chargebee kept failing until the retries ran out."""
    ledger = await Ledger.open(ledger_url)
    try:
        failures = ((None, "Chargebee answered 503"), ("retries_exhausted", "503, five times"))
        await settle(ledger, event_id, invoice="INV-1003", failures=failures)
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
            # Chargebee has failed nothing yet; the dead letter is the invoice's problem.
            await expect(page.locator('[data-summary="error_rate"]')).to_have_text("0.0%")
            await expect(page.locator('[data-summary="reached"]')).to_have_text("2 payments")
            await expect(page.locator('[data-summary="dead_letter_rate"]')).to_have_text("33.3%")
            await ops.dead_letter("evt-1003", reason="retries_exhausted", invoice="INV-1003")
            await gave_up(settings.ledger.url, "evt-1003")
            await expect(depth).to_have_text("3", timeout=10_000)
            await expect(page.locator('[data-summary="error_rate"]')).to_have_text("33.3%")
            await expect(page.locator('[data-summary="reached"]')).to_have_text("3 payments")
            await expect(page.locator('[data-summary="dead_letter_rate"]')).to_have_text("50.0%")
            await expect(page.get_by_role("heading", name="Chargebee error rate")).to_be_visible()
            await expect(page.get_by_role("heading", name="payrelay dead-letter rate")).to_be_visible()
            await expect(page.locator("#recent-rows tr")).to_have_count(4)
            recorded = page.locator("#recent-rows tr", has_text="evt-1000")
            await expect(recorded.locator("td").nth(4)).to_have_text("25.00 USD")
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


# Each cell's text as line boxes: one per line it takes up on the screen.
LINES = """cells => cells.map(cell => {
  const range = document.createRange();
  range.selectNodeContents(cell);
  const tops = new Set(Array.from(range.getClientRects()).map(r => Math.round(r.top)));
  return [cell.textContent.trim(), tops.size];
})"""
OVERFLOW = (
    """wrap => [wrap.scrollWidth > wrap.clientWidth, document.documentElement.scrollWidth <= innerWidth]"""
)


async def one_line_each(page: Page, table: str) -> list[str]:
    """The texts of `table`'s nowrap cells; fails if any takes more than one line."""
    cells: list[tuple[str, int]] = await page.locator(f"{table} .nowrap").evaluate_all(LINES)
    assert cells, table
    assert [text for text, lines in cells if lines != 1] == [], table
    scrolls, page_fits = await page.locator(".table-wrap", has=page.locator(table)).evaluate(OVERFLOW)
    assert (scrolls, page_fits) == (True, True), "the table scrolls inside its wrapper, not the page"
    return [text for text, _ in cells]


@pytest.mark.timeout(120)
async def test_ids_invoices_origins_and_amounts_never_break_on_a_narrow_screen(
    prefix: str, amqp: aio_pika.abc.AbstractConnection, tmp_path: Path, chromium: str
) -> None:
    """The issue's `INV-/1042`, `acme-/bank`, `99999999.00/USD`: whole, the table scrolls instead."""
    settings = ops_settings(prefix, tmp_path)
    await declare_once(AMQP_URL, settings.broker.topology())
    ledger = await Ledger.open(settings.ledger.url)
    try:
        await settle(ledger, "evt-20240501-0001", invoice="INV-1042", amount=9_999_999_900)
    finally:
        await ledger.close()
    async with (
        serve(create_app(settings)) as url,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
        async_playwright() as playwright,
    ):
        ops = Harness(url, http, settings, amqp, prefix)
        await ops.dead_letter("evt-20240501-0002", invoice="INV-1042", amount="99999999.00")
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 720, "height": 900})
            await sign_in(page, url, "Erin")
            shown = await one_line_each(page, "#recent")
            assert {"INV-1042", "acme-bank", "99999999.00 USD"} <= set(shown)
            await page.goto(url + "/dead-letters")
            shown = await one_line_each(page, "#dead-letter-table")
            assert {"INV-1042", "acme-bank", "99999999.00 USD", "evt-20240501-0002"} <= set(shown)
        finally:
            await browser.close()


@pytest.mark.timeout(120)
async def test_filter_by_reason_and_come_back_to_the_letter_from_a_refused_edit(
    prefix: str, amqp: aio_pika.abc.AbstractConnection, tmp_path: Path, chromium: str
) -> None:
    """The reason filter is a list of the known reasons; a refused edit's "back" is its letter."""
    settings = ops_settings(prefix, tmp_path)
    await declare_once(AMQP_URL, settings.broker.topology())
    async with (
        serve(create_app(settings)) as url,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
        async_playwright() as playwright,
    ):
        ops = Harness(url, http, settings, amqp, prefix)
        await ops.dead_letter("evt-1")
        await ops.dead_letter("evt-2", reason="unmatched_invoice", invoice=None)
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await sign_in(page, url, "Frank")
            await page.goto(url + "/dead-letters")
            reason = page.get_by_label("Reason")
            choices = await reason.locator("option").all_text_contents()
            assert choices == ["Any", *DEAD_LETTER_REASONS]
            await reason.select_option("unmatched_invoice")
            await page.get_by_role("button", name="Apply filters").click()
            await expect(page).to_have_url(re.compile(r"reason=unmatched_invoice"))
            await expect(page.locator("[data-dead-letter]")).to_have_count(1)
            await page.locator('[data-event-id="evt-2"] a').click()
            heading = page.get_by_role("heading", name=re.compile(r"^Dead letter dl-[0-9]+$"))
            await expect(heading).to_be_visible()
            letter_url = page.url

            await page.get_by_label("New value").fill("not an invoice!")
            await page.get_by_role("button", name="Preview edit (dry run)").click()
            await expect(page.get_by_role("heading", name="Nothing was changed")).to_be_visible()
            await page.get_by_role("link", name="Back to the dead letter").click()
            await expect(page).to_have_url(letter_url)
            await expect(heading).to_be_visible()
        finally:
            await browser.close()


@pytest.mark.timeout(120)
async def test_the_lookup_leads_with_the_current_state(
    prefix: str, amqp: aio_pika.abc.AbstractConnection, tmp_path: Path, chromium: str
) -> None:
    """A recorded event shows "recorded" and its transaction first; the failure it had before its
    replay and the replayed letter come after, under History."""
    settings = ops_settings(prefix, tmp_path)
    await declare_once(AMQP_URL, settings.broker.topology())
    async with (
        serve(create_app(settings)) as url,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
        async_playwright() as playwright,
    ):
        ops = Harness(url, http, settings, amqp, prefix)
        ledger = await Ledger.open(settings.ledger.url)
        try:
            voided = (("invoice_not_payable", "invoice INV-1042 is voided"),)
            await settle(ledger, "evt-7", invoice="INV-1042", failures=voided)
            await ops.dead_letter("evt-7", reason="invoice_not_payable", invoice="INV-1042")
            status, _ = await ops.api("POST", "/api/dead-letters/replay", {"ids": ["evt-7"]})
            assert status == 200
            await settle(ledger, "evt-7", invoice="INV-1042", amount=2500)
        finally:
            await ledger.close()
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            await sign_in(page, url, "Erin")
            await page.get_by_role("link", name="Lookup").click()
            await page.get_by_label("Event id or invoice id").fill("evt-7")
            await page.get_by_role("button", name="Look up").click()
            current = page.locator("section", has=page.get_by_role("heading", name="Current state"))
            history = page.locator("section", has=page.get_by_role("heading", name="History"))
            await expect(current.locator("#ledger-table tbody tr")).to_have_count(1)
            row = current.locator("#ledger-table tbody tr")
            await expect(row.locator(".badge")).to_have_text("recorded")
            await expect(row).to_contain_text("txn_evt-7")
            await expect(current).not_to_contain_text("voided")
            await expect(history.locator("#earlier-table")).to_contain_text("invoice INV-1042 is voided")
            await expect(history.locator('#settled-table [data-letter-state="replayed"]')).to_have_text(
                "replayed"
            )
            first, second = [await s.bounding_box() for s in (current, history)]
            assert first is not None and second is not None and first["y"] < second["y"]
            await page.screenshot(path=str(ARTIFACTS / "ops-lookup.png"), full_page=True)
        finally:
            await browser.close()
