"""`payrelay dev`: the receiver, the consumer, the ops app and the Chargebee sandbox in one process.

For a newcomer's first five minutes: the local RabbitMQ, a SQLite ledger, the sandbox's demo
invoices, one source (`acme-bank`) with a development-only secret, and a ready-to-paste
`payrelay send` command.
"""

from __future__ import annotations

import asyncio
import logging
import os

from consumers.app import run as run_consumer
from service.chargebee_sandbox import SandboxConfig
from service.chargebee_sandbox import create_app as create_sandbox
from service.ops.app import create_app as create_ops
from service.receiver import create_app as create_receiver
from service.serving import serve_until, stop_on_signals
from service.settings import Settings, SourceSettings, load_settings

log = logging.getLogger("payrelay.dev")

# Not a secret: it exists so that `payrelay dev` works out of the box, and only on loopback.
DEV_SECRET = "whsec_ZGV2LW9ubHktc2VjcmV0LWRvLW5vdC11c2U="
DEV_ADMIN_TOKEN = "dev-admin-token"
SANDBOX_KEY = "test_sandbox_key"


def dev_settings(host: str, sandbox_port: int, ledger: str) -> Settings:
    return load_settings(
        chargebee_base_url=f"http://{host}:{sandbox_port}",
        chargebee_api_key=SANDBOX_KEY,
        ledger_url=f"sqlite:///{ledger}",
        admin_token=DEV_ADMIN_TOKEN,
        # The dashboard's unacked counts and rates; it falls back to AMQP counts if this is off.
        amqp_management_url=os.environ.get("PAYRELAY_AMQP_MANAGEMENT_URL", "http://127.0.0.1:15672"),
        sources={"acme-bank": SourceSettings(secrets=[DEV_SECRET], invoice_pattern=r"\bINV-\d+\b")},
    )


def banner(host: str, ports: dict[str, int], ledger: str) -> str:
    base = f"http://{host}"
    return f"""
payrelay dev is running (Ctrl-C stops everything)

  receiver   {base}:{ports["receiver"]}/v1/ingest/acme-bank   (openapi: /openapi.json, metrics: /metrics)
  ops        {base}:{ports["ops"]}/   admin token: {DEV_ADMIN_TOKEN}
  consumer   {base}:{ports["consumer"]}/metrics  /readyz
  sandbox    {base}:{ports["sandbox"]}/api/v1
             invoices INV-1001..INV-1010 (USD), INV-2001 (JPY), INV-3001 (BHD)
  ledger     {ledger} (SQLite)

Send a signed bank deposit for INV-1001 (in another terminal):

  .venv/bin/payrelay send --url {base}:{ports["receiver"]} --source acme-bank \\
      --secret {DEV_SECRET} --invoice INV-1001 --amount 25.00

or let payrelay find the invoice in the remittance text:

  .venv/bin/payrelay send --url {base}:{ports["receiver"]} --source acme-bank \\
      --secret {DEV_SECRET} --remittance "Payment for INV-1002, thanks" --amount 125.50

See what Chargebee received:  curl -s {base}:{ports["sandbox"]}/sandbox/requests
"""


async def run_dev(host: str, port: int, ledger: str) -> int:
    """Everything on `host`: the receiver on `port`, ops on port+1, sandbox +10, consumer +1022."""
    ports = {"receiver": port, "ops": port + 1, "sandbox": port + 10, "consumer": port + 1022}
    settings = dev_settings(host, ports["sandbox"], ledger)
    stop = asyncio.Event()
    stop_on_signals(stop)
    tasks = [
        asyncio.create_task(
            serve_until(create_sandbox(SandboxConfig(api_key=SANDBOX_KEY)), host, ports["sandbox"], stop)
        ),
        asyncio.create_task(serve_until(create_receiver(settings), host, ports["receiver"], stop)),
        asyncio.create_task(run_consumer(settings, stop, host=host, port=ports["consumer"])),
    ]
    ops = create_ops(settings, allow_no_token_on_loopback=True)
    tasks.append(asyncio.create_task(serve_until(ops, host, ports["ops"], stop)))
    await asyncio.sleep(1.0)
    if not any(t.done() for t in tasks):
        print(banner(host, ports, ledger), flush=True)
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    failed = [t.exception() for t in done if not t.cancelled() and t.exception() is not None]
    for exc in failed:
        log.error("a dev component failed: %s", exc)
    return 1 if failed else 0
