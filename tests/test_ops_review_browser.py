"""The review queue in a real browser: Debian's chromium, driven by Playwright, against the real app.

The app, the ledgers, RabbitMQ and the Chargebee sandbox are those of `test_ops_review.py`.
Fails (never skips) without /usr/bin/chromium. Screenshots go to `artifacts/`.
"""

from __future__ import annotations

import re

import pytest
from playwright.async_api import async_playwright, expect

from tests.test_ops_browser import ARTIFACTS, CHROMIUM_ARGS, chromium, sign_in  # noqa: F401  (the fixture)
from tests.test_ops_review import Desk, desk  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("rabbitmq_reachable")]


@pytest.mark.timeout(120)
async def test_open_the_queue_open_an_item_and_accept_its_first_suggestion(
    desk: Desk,  # noqa: F811
    chromium: str,  # noqa: F811
) -> None:
    """From the dashboard's count to the item, Accept on suggestion 0: the page says what was
    done, the item is accepted, and its event is back on the work queue."""
    item = await desk.item()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            await sign_in(page, desk.ops.url, "Erin")
            await expect(page.locator('[data-summary="review_open"]')).to_have_text("1")
            await page.screenshot(path=str(ARTIFACTS / "ops-review-dashboard.png"))

            await page.get_by_role("link", name="Review", exact=True).click()
            await expect(page.get_by_role("heading", name="Review", level=1)).to_be_visible()
            row = page.locator(f'[data-review="{item.id}"]')
            await expect(row).to_contain_text("100.00 USD")
            await expect(row).to_contain_text("Globex Corporation")
            await row.get_by_role("link", name=item.id).click()

            await expect(page.get_by_role("heading", name=f"Review {item.id} open")).to_be_visible()
            await expect(page.locator('[data-invoice="GX-1003"]')).to_contain_text("100.00 USD")
            event = page.get_by_label("Event JSON")
            await expect(event).to_be_hidden()  # collapsed until asked for
            await page.get_by_text("The event as it came in (JSON)").click()
            await expect(event).to_contain_text('"remittance_information": "May services, thank you"')
            await page.screenshot(path=str(ARTIFACTS / "ops-review-item.png"), full_page=True)

            await page.get_by_role("button", name="Accept suggestion 0").click()
            await expect(page).to_have_url(re.compile(rf"/review/{item.id}\?done=accepted$"))
            notice = page.locator("#notice")
            await expect(notice).to_have_text(re.compile(r"^Accepted: recorded on GX-1003 \(100\.00 USD\)"))
            await expect(page.locator("#review-state")).to_have_text("accepted")
            await expect(page.locator("#decision")).to_contain_text("Accepted by ops:Erin")
            await expect(page.get_by_role("button", name="Accept suggestion 1")).to_have_count(0)
            await page.screenshot(path=str(ARTIFACTS / "ops-review-accepted.png"), full_page=True)
        finally:
            await browser.close()
    (message,) = await desk.work(1)
    assert message.headers["x-payrelay-review"] == item.id
