"""The documented flat names (`PAYRELAY_AMQP_URL`, TOML `amqp_url`, …) and the parts they set.

SPEC §7, the README and the Kubernetes manifests name settings flat; the settings are kept in
parts (`broker.url`). This table is the one mapping between the two: a flat key in the TOML file,
in `PAYRELAY_<KEY>` or as a keyword argument lands in its part, and an error about a part's field
is reported under the flat name people set. The nested forms (`[broker] url = …`,
`PAYRELAY_BROKER__URL`) work too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Final

import orjson

FLAT: Final[Mapping[str, tuple[str, str]]] = {
    "amqp_url": ("broker", "url"),
    "amqp_prefix": ("broker", "prefix"),
    "publish_timeout_seconds": ("broker", "publish_timeout_seconds"),
    "delivery_limit": ("broker", "delivery_limit"),
    "retry_delays_seconds": ("broker", "retry_delays_seconds"),
    "amqp_management_url": ("broker", "management_url"),
    "amqp_declare": ("broker", "declare"),
    "max_body_bytes": ("receiver", "max_body_bytes"),
    "max_batch_events": ("receiver", "max_batch_events"),
    "receiver_max_header_bytes": ("receiver", "max_header_bytes"),
    "receiver_max_headers": ("receiver", "max_headers"),
    "receiver_header_timeout_seconds": ("receiver", "header_timeout_seconds"),
    "receiver_body_timeout_seconds": ("receiver", "body_timeout_seconds"),
    "receiver_max_connections": ("receiver", "max_connections"),
    "receiver_metrics_port": ("receiver", "metrics_port"),
    "receiver_trusted_hosts": ("receiver", "trusted_hosts"),
    "max_file_bytes": ("files", "max_file_bytes"),
    "file_body_timeout_seconds": ("files", "body_timeout_seconds"),
    "payer_fingerprint_key": ("files", "payer_fingerprint_key"),
    "chargebee_site": ("chargebee", "site"),
    "chargebee_base_url": ("chargebee", "base_url"),
    "chargebee_api_key": ("chargebee", "api_key"),
    "chargebee_api_version": ("chargebee", "api_version"),
    "chargebee_rate_limit": ("chargebee", "rate_limit"),
    "chargebee_timeout_seconds": ("chargebee", "timeout_seconds"),
    "skip_emails": ("chargebee", "skip_emails"),
    "skip_webhooks": ("chargebee", "skip_webhooks"),
    "skip_actions": ("chargebee", "skip_actions"),
    "ledger_url": ("ledger", "url"),
    "ledger_retention_days": ("ledger", "retention_days"),
    "ledger_lease_seconds": ("ledger", "lease_seconds"),
    "ledger_statement_timeout_seconds": ("ledger", "statement_timeout_seconds"),
    "consumer_prefetch": ("consumer", "prefetch"),
    "max_attempts": ("consumer", "max_attempts"),
    "auth_retry_seconds": ("consumer", "auth_retry_seconds"),
    "shutdown_grace_seconds": ("consumer", "shutdown_grace_seconds"),
    "metrics_port": ("consumer", "metrics_port"),
    "invoice_pattern": ("consumer", "invoice_pattern"),
    "overpayment": ("consumer", "overpayment"),
    "admin_token": ("ops", "admin_token"),
    "ops_operators": ("ops", "operators"),
    "ops_trusted_hosts": ("ops", "trusted_hosts"),
    "ops_cookie_secure": ("ops", "cookie_secure"),
}
_BY_PART: Final = {nested: flat for flat, nested in FLAT.items()}
# Given as JSON in the environment.
_LISTS: Final = frozenset(
    {"retry_delays_seconds", "ops_operators", "ops_trusted_hosts", "receiver_trusted_hosts"}
)


def nest(values: Mapping[str, Any]) -> dict[str, Any]:
    """Move flat keys into their parts; a flat key wins over the same field given nested."""
    out = {
        key: (dict(value) if isinstance(value, Mapping) else value)
        for key, value in values.items()
        if key not in FLAT
    }
    for key, value in values.items():
        if key in FLAT:
            part, field = FLAT[key]
            out.setdefault(part, {})
            if not isinstance(out[part], dict):
                continue  # a part given as a scalar: let validation say so
            out[part][field] = value
    return out


def from_environment(prefix: str = "PAYRELAY_") -> dict[str, Any]:
    """The flat `PAYRELAY_<KEY>` variables that are set, nested into their parts."""
    found: dict[str, Any] = {}
    for key in FLAT:
        raw = os.environ.get(f"{prefix}{key.upper()}")
        if raw is None:
            continue
        found[key] = orjson.loads(raw) if key in _LISTS else raw
    return nest(found)


def flat_name(location: tuple[int | str, ...]) -> str:
    """An error location as people wrote it: ("broker", "url") is `amqp_url`."""
    if len(location) >= 2 and (str(location[0]), str(location[1])) in _BY_PART:
        head = _BY_PART[(str(location[0]), str(location[1]))]
        return ".".join([head, *(str(p) for p in location[2:])])
    return ".".join(str(p) for p in location) or "(settings)"
