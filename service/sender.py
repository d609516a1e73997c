"""`payrelay send`: build or read CloudEvents, sign them as Standard Webhooks, post them."""

from __future__ import annotations

import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from service.event_data import FieldError, payment_of
from service.events import BATCH
from service.settings import ConfigError, Settings
from service.signatures import decode_secret, sign


def example_event(
    event_type: str,
    *,
    amount: str,
    currency: str,
    invoice_id: str | None = None,
    remittance: str | None = None,
    reference: str | None = None,
    event_id: str | None = None,
    payer_name: str | None = None,
    payer_fingerprint: str | None = None,
) -> dict[str, Any]:
    """A well-formed event of either type, for trying a setup; `data.payer` only when given a part."""
    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    ref = reference or uuid.uuid4().hex[:12].upper()
    data: dict[str, Any] = {"amount": amount, "currency": currency}
    if event_type == "bank.deposit":
        data |= {"booked_at": now, "bank_reference": ref}
    else:
        data |= {"scanned_at": now, "check_number": ref}
    if invoice_id:
        data["invoice_id"] = invoice_id
    if remittance:
        data["remittance_information"] = remittance
    payer = {"name": payer_name, "account_fingerprint": payer_fingerprint}
    if any(value is not None for value in payer.values()):
        data["payer"] = {key: value for key, value in payer.items() if value is not None}
    return {
        "specversion": "1.0",
        "id": event_id or str(uuid.uuid4()),
        "source": "urn:payrelay:send",
        "type": event_type,
        "time": now,
        "data": data,
    }


def check_payer(field: str, value: str) -> str:
    """`value` if the event contract takes it as `data.payer.<field>`, else ValueError saying why.

    The contract's own check (`payment_of`), so `send` never builds a payer the receiver refuses.
    """
    errors: list[FieldError] = []
    payment_of("bank.deposit", {"payer": {field: value}}, errors)
    refused = next((e for e in errors if e.field == f"data.payer.{field}"), None)
    if refused is not None:
        raise ValueError(f"data.payer.{field} {refused.message}")
    return value


def signed_headers(secret: str, body: bytes, content_type: str, msg_id: str | None = None) -> dict[str, str]:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time())
    return {
        "content-type": content_type,
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }


async def post_signed(
    session: aiohttp.ClientSession, url: str, source: str, secret: str, payload: Any
) -> tuple[int, bytes]:
    """Sign and post one event (a dict) or a batch (a list); returns (status, body)."""
    body = orjson.dumps(payload)
    content_type = BATCH if isinstance(payload, list) else "application/cloudevents+json"
    headers = signed_headers(secret, body, content_type)
    async with session.post(f"{url.rstrip('/')}/v1/ingest/{source}", data=body, headers=headers) as response:
        return response.status, await response.read()


def secret_for(settings: Settings, source: str, given: str | None = None) -> str:
    """`given`, else the source's first configured secret; ConfigError if neither is a usable secret."""
    if given:
        try:
            decode_secret(given)
        except ValueError as exc:  # the message says what is wrong, never the secret
            raise ConfigError(f"--secret cannot sign ({exc}): give the source's whsec_... secret") from None
        return given
    configured = settings.sources.get(source)
    if configured is None:
        raise ConfigError(f"no [sources.{source}] configured; pass --secret whsec_...")
    return configured.secrets[0].get_secret_value()


def read_payload(path: str) -> Any:
    """One event or a batch from a JSON file (`-`: standard input)."""
    raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    return orjson.loads(raw)


async def send(url: str, source: str, secret: str, payloads: list[Any]) -> int:
    """Post each payload signed, printing each answer; 0 when every one was a 2xx."""
    failures = 0
    async with aiohttp.ClientSession() as session:
        for payload in payloads:
            status, body = await post_signed(session, url, source, secret, payload)
            print(f"{status} {body.decode(errors='replace')}")
            failures += not 200 <= status < 300
    return 1 if failures else 0
