"""`payrelay dev`: the receiver, the consumer, the ops app and the Chargebee sandbox in one process.

For a newcomer's first five minutes: the local RabbitMQ, a SQLite ledger, the sandbox's demo
invoices, one source (`acme-bank`) with a development-only secret, and a ready-to-paste
`payrelay send` command. Beside the ledger it writes `payrelay-dev.toml` (the ledger, the broker
and the prefix), which the CLI reads when it runs in that directory without PAYRELAY_CONFIG, so
`payrelay dlq` sees the dev ledger; the banner also prints the same as `export` lines.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from pydantic import ValidationError

from consumers.app import run as run_consumer
from service.bankfiles import demo
from service.chargebee_sandbox import SandboxConfig
from service.chargebee_sandbox import create_app as create_sandbox
from service.cli.mistakes import ensure_free
from service.cli.ops import serve_ops
from service.serving import serve_receiver, serve_until, stop_on_signals
from service.settings import (
    DEFAULT_INVOICE_PATTERN,
    ConfigError,
    Settings,
    SourceSettings,
    describe,
    load_settings,
)
from service.settings.model import DEV_CONFIG

log = logging.getLogger("payrelay.dev")

# Not a secret: it exists so that `payrelay dev` works out of the box, and only on loopback.
DEV_SECRET = "whsec_ZGV2LW9ubHktc2VjcmV0LWRvLW5vdC11c2U="
DEV_LOCKBOX_SECRET = "whsec_ZGV2LWxvY2tib3gtc2VjcmV0LWRvLW5vdC11c2U="
DEV_FINGERPRINT_KEY = "dev-fingerprint-key-not-a-secret"
DEV_ADMIN_TOKEN = "dev-admin-token-not-a-secret"
SANDBOX_KEY = "test_sandbox_key"


def dev_settings(host: str, sandbox_port: int, ledger: str, metrics_port: int = 0) -> Settings:
    values: dict[str, Any] = {
        "receiver_metrics_port": metrics_port,
        "chargebee_base_url": f"http://{host}:{sandbox_port}",
        "chargebee_api_key": SANDBOX_KEY,
        "ledger_url": f"sqlite:///{ledger}",
        "admin_token": DEV_ADMIN_TOKEN,
        "ops_cookie_secure": False,  # the dashboard is served over plain http on loopback
        # The dashboard's unacked counts and rates; it falls back to AMQP counts if this is off.
        "amqp_management_url": os.environ.get("PAYRELAY_AMQP_MANAGEMENT_URL", "http://127.0.0.1:15672"),
        "payer_fingerprint_key": DEV_FINGERPRINT_KEY,
        "sources": {
            "acme-bank": SourceSettings(secrets=[DEV_SECRET], invoice_pattern=DEFAULT_INVOICE_PATTERN),
            # Paper checks from a lockbox service: files only, in the default lockbox layout.
            "acme-lockbox": SourceSettings(secrets=[DEV_LOCKBOX_SECRET], format="lockbox"),
        },
    }
    if "PAYRELAY_CONFIG" in os.environ:
        return load_settings(**values)
    try:  # not DEV_CONFIG, which this command writes: its values come from the flags and the environment
        return Settings(**values)
    except ValidationError as exc:
        raise ConfigError(describe(exc)) from None


def shared(settings: Settings) -> dict[str, str]:
    """What the CLI needs to work with this dev setup, by flat name; the broker's URL unless it has a
    real password (RabbitMQ's local guest account is no secret; anything else is not written out).
    The dev sources and fingerprint key are written too (`source_tables`), for `payrelay import`."""
    values = {"ledger_url": settings.ledger.url, "amqp_prefix": settings.broker.prefix}
    url = settings.broker.url.get_secret_value()
    if urlsplit(url).password in (None, "guest"):
        values["amqp_url"] = url
    return values


def source_tables() -> list[str]:
    """The dev sources as TOML, with their development-only secrets (published in this file)."""
    return [
        f'payer_fingerprint_key = "{DEV_FINGERPRINT_KEY}"',
        "[sources.acme-bank]",
        f'secrets = ["{DEV_SECRET}"]',
        "[sources.acme-lockbox]",
        f'secrets = ["{DEV_LOCKBOX_SECRET}"]',
        'format = "lockbox"',
    ]


def write_config(path: Path, values: dict[str, str]) -> None:
    """`payrelay-dev.toml`: `values` as TOML (a JSON string is a TOML basic string) and the dev
    sources, replaced at once."""
    lines = [
        f"# Written by `payrelay dev` at {datetime.now(UTC):%Y-%m-%d %H:%M:%S}Z. payrelay reads this file",
        "# when it runs in this directory and PAYRELAY_CONFIG is not set; PAYRELAY_* variables still",
        "# override it. It is rewritten by the next `payrelay dev`; delete it when you are done.",
        *(f"{name} = {orjson.dumps(value).decode()}" for name, value in values.items()),
        *source_tables(),
    ]
    partial = path.with_name(path.name + ".partial")
    partial.write_text("\n".join(lines) + "\n")
    partial.replace(path)


def exports(values: dict[str, str]) -> str:
    lines = [f"  export PAYRELAY_{name.upper()}={shlex.quote(value)}" for name, value in values.items()]
    if "amqp_url" not in values:
        lines.append("  export PAYRELAY_AMQP_URL=...   # the broker's URL, as this terminal has it")
    return "\n".join(lines)


def banner(host: str, ports: dict[str, int], ledger: str, config: Path, values: dict[str, str]) -> str:
    base = f"http://{host}"
    here = Path.cwd().resolve() == config.parent.resolve()
    where = "in this directory" if here else f"in {config.parent}"
    return f"""
payrelay dev is running (Ctrl-C stops everything)

  receiver   {base}:{ports["receiver"]}/v1/ingest/acme-bank   (openapi: /openapi.json)
             {base}:{ports["receiver metrics"]}/metrics  /readyz
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

Or a bank file (a camt.054 paying INV-1003, INV-1004 and INV-1006; also bai2, mt940, and a
lockbox file for --source acme-lockbox, beside it):

  .venv/bin/payrelay import {demo_file("camt054")} --source acme-bank --dry-run
  .venv/bin/payrelay import {demo_file("camt054")} --source acme-bank

See what Chargebee received:  curl -s {base}:{ports["sandbox"]}/sandbox/requests

The CLI run {where} (`.venv/bin/payrelay dlq list`, `dlq audit`...) uses this
dev ledger and broker: {config.name} there says which, unless PAYRELAY_CONFIG is set.
Anywhere else, paste:

{exports(values)}
"""


def demo_file(kind: str) -> str:
    """A demo bank file's path, relative to here when it is below (a checkout), else absolute."""
    path = demo.path(kind).resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def announce(host: str, ports: dict[str, int], ledger: str, settings: Settings) -> None:
    """Everything is up: write `payrelay-dev.toml` for the CLI, and print the banner."""
    config = Path(ledger).parent / DEV_CONFIG.name
    values = shared(settings)
    try:
        write_config(config, values)
    except OSError as exc:  # the banner's export lines still say it all
        log.warning("could not write %s: %s", config, exc.strerror)
    print(banner(host, ports, ledger, config, values), flush=True)


async def run_dev(host: str, port: int, ledger: str) -> int:
    """Everything on `host`: the receiver on `port`, ops on port+1, sandbox +10, consumer +1022,
    the receiver's metrics +1023 (9102 and 9103 for the default 8080, as in production).

    `ledger` is the SQLite file's absolute path; `payrelay-dev.toml` is written beside it.
    """
    ports = {
        "receiver": port,
        "ops": port + 1,
        "sandbox": port + 10,
        "consumer": port + 1022,
        "receiver metrics": port + 1023,
    }
    settings = dev_settings(host, ports["sandbox"], ledger, ports["receiver metrics"])
    ensure_free(host, {f"the {name}'s port": number for name, number in ports.items()})
    stop = asyncio.Event()
    stop_on_signals(stop)
    tasks = [
        asyncio.create_task(
            serve_until(
                create_sandbox(SandboxConfig(api_key=SANDBOX_KEY, demo_book=True)),
                host,
                ports["sandbox"],
                stop,
            )
        ),
        # The receiver as production serves it: the slow-client guard, metrics on their own port.
        asyncio.create_task(serve_receiver(settings, host, ports["receiver"], stop)),
        asyncio.create_task(run_consumer(settings, stop, host=host, port=ports["consumer"])),
    ]
    tasks.append(asyncio.create_task(serve_ops(settings, host, ports["ops"], stop)))
    await asyncio.sleep(1.0)
    if not any(t.done() for t in tasks):
        announce(host, ports, ledger, settings)
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    failed = [t.exception() for t in done if not t.cancelled() and t.exception() is not None]
    for exc in failed:
        log.error("a dev component failed: %s", exc)
    return 1 if failed else 0
