"""The OpenAPI 3.1 description of the ingest API, served at `/openapi.json`.

Written by hand to say exactly what the receiver accepts, so that fuzzers (schemathesis) and
integrators can rely on it.
"""

from __future__ import annotations

from typing import Any

from service.event_data import (
    FINGERPRINT_PATTERN,
    INVOICE_ID_PATTERN,
    LAST4_PATTERN,
    MAX_ALLOCATIONS,
    MAX_NAME,
    MAX_REFERENCE,
    MAX_REFERENCES,
    MAX_TEXT,
    ROUTING_NUMBER_PATTERN,
)
from service.events import MAX_IDENTITY_BYTES
from service.money import DECIMAL_PATTERN, known_currencies
from service.settings import Settings


def _whole(body: str) -> str:
    """A contract pattern body as a JSON Schema pattern for the whole string."""
    return f"^(?:{body})$"


# [0-9], not \d: a Python-based fuzzer reads \d as any Unicode digit, which the receiver refuses.
_DECIMAL = {
    "type": "string",
    "pattern": DECIMAL_PATTERN,
    "description": "Major units, at most the currency's ISO 4217 decimals, greater than zero",
    "examples": ["1250.00"],
}
_TIME = {"type": "string", "format": "date-time"}
_INVOICE_ID = {"type": "string", "pattern": _whole(INVOICE_ID_PATTERN)}
_LAST4 = {"type": "string", "pattern": _whole(LAST4_PATTERN)}
_PARTY = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": MAX_NAME},
        "account_last4": _LAST4,
        "account_fingerprint": {"type": "string", "pattern": _whole(FINGERPRINT_PATTERN)},
    },
    "additionalProperties": False,
}
_ALLOCATIONS = {
    "type": "array",
    "description": (
        "One payment for several invoices: each invoice once, amounts in the payment's currency "
        "summing exactly to `amount`; not together with `invoice_id`"
    ),
    "minItems": 1,
    "maxItems": MAX_ALLOCATIONS,
    "items": {
        "type": "object",
        "required": ["invoice_id", "amount"],
        "properties": {"invoice_id": _INVOICE_ID, "amount": _DECIMAL},
        "additionalProperties": False,
    },
}
_CONTROL = r"\u0000-\u001f\u007f-\u009f"
_NO_CONTROL = f"[^{_CONTROL}]"
_REFERENCES = {
    "type": "array",
    "description": "Invoice numbers or creditor references the remitter gave, in their order",
    "minItems": 1,
    "maxItems": MAX_REFERENCES,
    # Not blank, and no control character anywhere.
    "items": {
        "type": "string",
        "maxLength": MAX_REFERENCE,
        "pattern": rf"^{_NO_CONTROL}*[^\s{_CONTROL}]{_NO_CONTROL}*$",
    },
}
_COMMON_DATA = {
    "amount": _DECIMAL,
    "currency": {"type": "string", "enum": known_currencies(), "examples": ["USD"]},
    "invoice_id": _INVOICE_ID,
    "allocations": _ALLOCATIONS,
    "references": _REFERENCES,
    "remittance_information": {"type": "string", "pattern": r"\S", "maxLength": MAX_TEXT},
    "memo": {"type": "string", "pattern": r"\S", "maxLength": MAX_TEXT},
    "payer": _PARTY,
}
# `id` becomes the AMQP message_id: at most 255 bytes in UTF-8, which JSON Schema cannot count;
# maxLength (characters) is the bound it can state.
_IDENTITY = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_IDENTITY_BYTES,
    "description": f"At most {MAX_IDENTITY_BYTES} bytes in UTF-8",
}


def _event(event_type: str, reference: str, when: str, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["specversion", "id", "source", "type", "data"],
        "properties": {
            "specversion": {"const": "1.0"},
            "id": _IDENTITY,
            "source": _IDENTITY,
            "type": {"const": event_type},
            "time": _TIME,
            "datacontenttype": {"const": "application/json"},
            "data": {
                "type": "object",
                "required": ["amount", "currency", when, reference],
                "not": {"required": ["invoice_id", "allocations"]},
                "properties": {
                    **_COMMON_DATA,
                    when: _TIME,
                    reference: {"type": "string", "pattern": r"\S", "maxLength": MAX_REFERENCE},
                    **extra,
                },
            },
        },
    }


def _problem() -> dict[str, Any]:
    return {
        "description": "RFC 9457 problem details",
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def openapi_document(settings: Settings) -> dict[str, Any]:
    """The document for this receiver's configured sources."""
    signature_headers = [
        {"name": name, "in": "header", "required": True, "schema": {"type": "string"}, "description": text}
        for name, text in (
            ("webhook-id", "Standard Webhooks message id"),
            ("webhook-timestamp", "Unix seconds; must be within the source's tolerance"),
            ("webhook-signature", "Space-separated `v1,<base64 HMAC-SHA256>` signatures"),
        )
    ]
    event = {"$ref": "#/components/schemas/Event"}
    body_schema = {
        "application/cloudevents+json": {"schema": event},
        "application/json": {"schema": event},
        "application/cloudevents-batch+json": {
            "schema": {
                "type": "array",
                "items": event,
                "minItems": 1,
                "maxItems": settings.receiver.max_batch_events,
            }
        },
    }
    micr = {
        "type": "object",
        "properties": {
            "routing_number": {"type": "string", "pattern": _whole(ROUTING_NUMBER_PATTERN)},
            "account_last4": _LAST4,
        },
        "additionalProperties": False,
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "payrelay ingest API", "version": "1"},
        "paths": {
            "/v1/ingest/{source}": {
                "post": {
                    "operationId": "ingest",
                    "summary": "Submit signed bank.deposit / check.scan CloudEvents",
                    "parameters": [
                        {
                            "name": "source",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "enum": sorted(settings.sources) or ["acme-bank"]},
                        },
                        *signature_headers,
                    ],
                    "requestBody": {"required": True, "content": body_schema},
                    "responses": {
                        "202": {
                            "description": "Every event is durably stored in RabbitMQ",
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}
                            },
                        },
                        **{str(code): _problem() for code in (400, 401, 404, 408, 413, 415, 422, 500)},
                        "431": {
                            "description": "Request line and headers over the limit; the connection is closed"
                        },
                        "503": {**_problem(), "headers": {"Retry-After": {"schema": {"type": "integer"}}}},
                    },
                }
            },
            "/healthz": {"get": {"operationId": "healthz", "responses": {"200": {"description": "alive"}}}},
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "responses": {
                        "200": {"description": "broker channel open"},
                        "503": {"description": "not ready"},
                    },
                }
            },
        },
        "components": {
            "schemas": {
                "Event": {
                    "oneOf": [
                        _event("bank.deposit", "bank_reference", "booked_at", {}),
                        _event("check.scan", "check_number", "scanned_at", {"micr": micr}),
                    ]
                },
                "Accepted": {
                    "type": "object",
                    "required": ["accepted", "published", "ids"],
                    "properties": {
                        "accepted": {"type": "integer"},
                        "published": {"type": "integer"},
                        "ids": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status", "detail"],
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "errors": {"type": "array", "items": {"type": "object"}},
                        "invalid_indexes": {"type": "array", "items": {"type": "integer"}},
                    },
                },
            }
        },
    }
