"""`payrelay ops` (and the ops app of `payrelay dev`): the app with Chargebee's invoices open beside it."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from consumers.directory import open_directory
from service.cli import LOOPBACK
from service.metrics import create_metrics
from service.ops.app import create_app
from service.review.service import InvoiceReader
from service.serving import serve_until
from service.settings import Settings

log = logging.getLogger("payrelay.cli")


async def serve_ops(settings: Settings, host: str, port: int, stop: asyncio.Event) -> None:
    """Serve the ops app on `host`:`port` until `stop`, with a `Directory` of Chargebee's invoices
    open for the server's whole life: review decisions are checked against it. Without a Chargebee
    site configured the app still serves, and review decisions answer 503.

    Only on a loopback `host` may the app run without any token (`create_app`).
    """
    metrics = create_metrics()
    # Opened once before serving, so a ledger that cannot be used stops the command with one line
    # (service/cli/mistakes.py) instead of a traceback from the app's start-up under uvicorn.
    await (await settings.ledger.open()).close()
    async with contextlib.AsyncExitStack() as stack:
        invoices: InvoiceReader | None = None
        if settings.chargebee.site or settings.chargebee.base_url:
            invoices = await stack.enter_async_context(open_directory(settings, metrics))
        else:
            log.warning("no Chargebee site configured: review decisions cannot be made in the ops app")
        app = create_app(
            settings, metrics=metrics, invoices=invoices, allow_no_token_on_loopback=host in LOOPBACK
        )
        await serve_until(app, host, port, stop)
