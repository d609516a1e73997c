"""The parts of the settings, one per concern, each building the objects it configures."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from service.settings.sources import compiled

if TYPE_CHECKING:
    from service.broker import Broker
    from service.ledger import Ledger
    from service.topology import Topology

DEFAULT_INVOICE_PATTERN = r"\bINV-?\d+\b"


class ConfigError(Exception):
    """The configuration is invalid; the message names every bad key and never a secret."""


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BrokerSettings(_Part):
    """RabbitMQ: where, the names (prefix), the work queue's delivery limit and the retry tiers."""

    url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    prefix: str = Field(default="payrelay", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    publish_timeout_seconds: float = Field(default=5.0, gt=0)
    delivery_limit: int = Field(default=20, ge=1)
    retry_delays_seconds: list[int] = Field(default_factory=lambda: [5, 30, 120, 600, 1800])
    # RabbitMQ's management API (unacked counts and rates); credentials come from `url`.
    management_url: str | None = Field(default=None, pattern=r"^https?://[^/\s]+$")
    # "declare": every process declares the topology at start (SPEC §3). "check": it only checks
    # that it exists (passive), so its broker user needs no configure rights; `payrelay topology
    # declare` (the Kubernetes topology job) declares it.
    declare: Literal["declare", "check"] = "declare"

    @field_validator("retry_delays_seconds")
    @classmethod
    def _check_delays(cls, value: list[int]) -> list[int]:
        if not value or any(d <= 0 for d in value):
            raise ValueError("needs at least one delay, every one a positive number of seconds")
        return value

    def topology(self) -> Topology:
        from service.topology import build

        return build(self.prefix, self.retry_delays_seconds, self.delivery_limit)

    def broker(self, name: str, *, publishes: bool = True) -> Broker:
        """A supervised connection to this broker, not started, named `name` in RabbitMQ."""
        from service.broker import Broker

        return Broker(
            self.url.get_secret_value(),
            self.topology(),
            publish_timeout=self.publish_timeout_seconds,
            name=name,
            publishes=publishes,
            declares=self.declare == "declare",
        )


class ReceiverSettings(_Part):
    """The receiver: request limits, slow-client limits (service/connection_guard.py), its metrics
    port and the host names it answers to (README, "Receiver limits")."""

    max_body_bytes: int = Field(default=1024 * 1024, ge=1)
    max_batch_events: int = Field(default=500, ge=1)
    # The request line and headers together, and how many header lines: beyond either, a 431.
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    max_headers: int = Field(default=100, ge=10)
    # From a connection (or the previous answer) to the end of the headers; then the whole body.
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    body_timeout_seconds: float = Field(default=30.0, gt=0)
    # Open connections per process; kept below the open-file limit. At the cap, the connection that
    # has been reading its request longest is dropped to make room (so /healthz still answers).
    max_connections: int = Field(default=1000, ge=2)
    # /metrics (with /healthz and /readyz) on a port of their own, never the public one; 0 = none.
    metrics_port: int = Field(default=9103, ge=0, le=65535)
    trusted_hosts: list[str] = Field(default_factory=lambda: ["*"], min_length=1)

    @field_validator("trusted_hosts")
    @classmethod
    def _check_hosts(cls, value: list[str]) -> list[str]:
        from service.hosts import check_pattern

        return [check_pattern(pattern) for pattern in value]


class ChargebeeSettings(_Part):
    """The Chargebee site, the key, the API version, the client-side limit, the skip headers."""

    site: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9-]*$")
    base_url: str | None = Field(default=None, pattern=r"^https?://[^/\s]+$")
    api_key: SecretStr = SecretStr("")
    api_version: Literal["v1", "v2"] = "v1"
    rate_limit: int = Field(default=150, ge=0)  # requests per minute per process; 0 = none
    timeout_seconds: float = Field(default=30.0, gt=0)
    skip_emails: bool = False
    skip_webhooks: bool = False
    skip_actions: bool = False

    @property
    def api_base(self) -> str:
        """Where `/invoices/...` lives: the base URL (or the site's) plus `/api/v1` or `/api/v2`."""
        if self.base_url:
            root = self.base_url.rstrip("/")
        elif self.site:
            root = f"https://{self.site}.chargebee.com"
        else:
            raise ConfigError("set PAYRELAY_CHARGEBEE_SITE or PAYRELAY_CHARGEBEE_BASE_URL")
        return f"{root}/api/{self.api_version}"


class LedgerSettings(_Part):
    url: str = "sqlite:///payrelay-ledger.db"
    retention_days: int = Field(default=30, ge=1)
    # How long a consumer may hold a payment before another replica may take it over.
    lease_seconds: float = Field(default=90.0, gt=0)
    # No ledger statement waits longer: a hung database fails the write instead of holding messages.
    statement_timeout_seconds: float = Field(default=10.0, gt=0)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not re.match(r"^(sqlite:///.+|postgres(ql)?://.+)$", value):
            raise ValueError("must be sqlite:///path/to/file.db or postgresql://user@host:port/db")
        return value

    async def open(self) -> Ledger:
        from service.ledger import Ledger

        return await Ledger.open(self.url, statement_timeout=self.statement_timeout_seconds)


class FilesSettings(_Part):
    """Bank files (SPEC §9): how large one may be, how long its body may take to arrive, and the key
    payers' account numbers are fingerprinted under (service/bankfiles/events.py)."""

    max_file_bytes: int = Field(default=25 * 1024 * 1024, ge=1)
    body_timeout_seconds: float = Field(default=120.0, gt=0)
    # Without a key, events carry a payer's last four digits but no fingerprint.
    payer_fingerprint_key: SecretStr | None = None

    @field_validator("payer_fingerprint_key")
    @classmethod
    def _check_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and 0 < len(value.get_secret_value()) < 16:
            raise ValueError("is too short: at least 16 characters (e.g. `openssl rand -hex 32`)")
        return value

    def key(self) -> bytes | None:
        secret = self.payer_fingerprint_key.get_secret_value() if self.payer_fingerprint_key else ""
        return secret.encode() or None


class ConsumerSettings(_Part):
    prefetch: int = Field(default=64, ge=1)
    max_attempts: int = Field(default=6, ge=1)
    auth_retry_seconds: float = Field(default=30.0, gt=0)
    shutdown_grace_seconds: float = Field(default=30.0, ge=0)
    metrics_port: int = Field(default=9102, ge=0, le=65535)
    invoice_pattern: str = DEFAULT_INVOICE_PATTERN
    # A payment above the invoice's amount due: record it (Chargebee keeps the excess as the
    # customer's excess payments) or send it to a person (review, SPEC §10).
    overpayment: Literal["record", "review"] = "record"

    _check_pattern = field_validator("invoice_pattern")(compiled)


_TOLERANCE = re.compile(r"(?:[0-9]{1,12}|[0-9]{1,2}(?:\.[0-9]{1,4})?%)", re.ASCII)


class MatchingSettings(_Part):
    """Cash application (SPEC §10): payments that name no invoice, matched to a customer's open ones."""

    enabled: bool = True  # off: such payments are dead-lettered `unmatched_invoice`, as before
    auto_threshold: float = Field(default=0.9, ge=0.5, le=1.0)  # below 0.5 would apply guesses
    name_threshold: float = Field(default=0.85, ge=0.5, le=1.0)  # a fuzzy payer-name match
    max_invoices: int = Field(default=5, ge=1, le=10)  # the most invoices one payment is matched to
    tolerance: str = "1%"  # a short or over payment: minor units ("500") or a percentage ("2%")
    customers_ttl_seconds: float = Field(default=300.0, ge=0)
    invoices_ttl_seconds: float = Field(default=30.0, ge=0)

    @field_validator("tolerance", mode="before")
    @classmethod
    def _check_tolerance(cls, value: Any) -> str:
        text = str(value).strip()
        if not _TOLERANCE.fullmatch(text):
            raise ValueError('must be minor units ("500") or a percentage under 100 ("2%")')
        return text


_OPERATOR_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._@+-]{0,39}", re.ASCII)
_TOKEN_DIGEST = re.compile(r"sha256:[0-9a-f]{64}", re.ASCII)
MIN_ADMIN_TOKEN = 24


def check_operator_name(name: str) -> str:
    if not _OPERATOR_NAME.fullmatch(name):
        raise ValueError(
            f"operator name {name!r}: 1 to 40 letters, digits, spaces or ._@+- , starting with a "
            "letter or digit"
        )
    return name


class OpsSettings(_Part):
    """Who may use the ops app: operators by name with their tokens' digests, and the bootstrap token.

    `operators` maps a name to `sha256:<hex>` of that operator's token (`payrelay ops-token NAME`
    makes one); the audit names whoever's token was presented. `admin_token` is the bootstrap
    credential, recorded as "admin".
    """

    admin_token: SecretStr | None = None
    operators: dict[str, str] = Field(default_factory=dict)
    # The names the app may be reached by (the Host header): anything else is refused, so a page
    # on another site whose name was rebound to this address (DNS rebinding) cannot use it.
    # `*.example.com` matches subdomains, `*` anything. Probes and /metrics are not checked.
    trusted_hosts: list[str] = Field(default_factory=lambda: ["127.0.0.1", "localhost", "::1"])
    # The session cookie's Secure attribute (and its `__Host-` name). Off only for plain-http
    # development (`payrelay dev`): a browser drops a Secure cookie it got over http.
    cookie_secure: bool = True

    @field_validator("operators")
    @classmethod
    def _check_operators(cls, value: dict[str, str]) -> dict[str, str]:
        for name, digest in value.items():
            check_operator_name(name)
            if not _TOKEN_DIGEST.fullmatch(digest):
                raise ValueError(
                    f"operator {name!r}: give the token's digest (sha256:<64 hex digits>, as "
                    "`payrelay ops-token NAME` prints it), never the token itself"
                )
        if len(set(value.values())) < len(value):
            raise ValueError("two operators have the same token: each needs their own")
        return value

    @field_validator("trusted_hosts")
    @classmethod
    def _check_hosts(cls, value: list[str]) -> list[str]:
        from service.hosts import check_pattern

        return [check_pattern(pattern) for pattern in value]

    @field_validator("admin_token")
    @classmethod
    def _check_admin_token(cls, value: SecretStr | None) -> SecretStr | None:
        # "" is unset (loopback development); anything else must not be guessable.
        if value is not None and 0 < len(value.get_secret_value()) < MIN_ADMIN_TOKEN:
            raise ValueError(
                f"is too short: at least {MIN_ADMIN_TOKEN} characters (e.g. `openssl rand -hex 32`)"
            )
        return value
