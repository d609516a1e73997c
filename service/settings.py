"""Settings: one typed object from a TOML file (`PAYRELAY_CONFIG`) and `PAYRELAY_*` overrides.

Built once at the entry point and passed down; nothing here reads the environment at import.
Environment variables override the file, which overrides the defaults. Secrets are `SecretStr`
so that a repr, a log line or an error message never shows them.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from service.events import EVENT_TYPES, EventType
from service.signatures import decode_secret

DEFAULT_INVOICE_PATTERN = r"\bINV-?\d+\b"
LEASE_MARGIN_SECONDS = 1.0  # the ledger write after a call, and clock skew between replicas


class ConfigError(Exception):
    """The configuration is invalid; the message names every bad key and never a secret."""


def _compile(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    return pattern


class SourceSettings(BaseModel):
    """One upstream sender, `[sources.NAME]` in the TOML file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    secrets: list[SecretStr] = Field(default_factory=list)
    secrets_file: Path | None = None
    types: list[EventType] = Field(default_factory=lambda: list(EVENT_TYPES))
    tolerance_seconds: int = Field(default=300, ge=0)
    skip_emails: bool | None = None
    skip_webhooks: bool | None = None
    skip_actions: bool | None = None
    invoice_pattern: str | None = None

    _check_pattern = field_validator("invoice_pattern")(lambda v: v if v is None else _compile(v))

    @model_validator(mode="after")
    def _load_secrets(self) -> SourceSettings:
        secrets = list(self.secrets)
        if self.secrets_file is not None:
            try:
                text = self.secrets_file.read_text()
            except OSError as exc:
                raise ValueError(f"secrets_file cannot be read: {exc.strerror}") from None
            secrets += [SecretStr(s) for s in text.split()]
        if not secrets:
            raise ValueError("a source needs at least one secret (secrets or secrets_file)")
        for secret in secrets:
            decode_secret(secret.get_secret_value())  # ValueError says what is wrong, not the value
        object.__setattr__(self, "secrets", secrets)
        return self


class Settings(BaseSettings):
    """Everything payrelay's processes are configured with."""

    model_config = SettingsConfigDict(
        env_prefix="PAYRELAY_",
        extra="forbid",
        frozen=True,
        env_nested_delimiter="__",
        # A model-level error would otherwise quote its input, secrets included.
        hide_input_in_errors=True,
    )

    # Broker
    amqp_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    amqp_prefix: str = Field(default="payrelay", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    publish_timeout_seconds: float = Field(default=5.0, gt=0)
    delivery_limit: int = Field(default=20, ge=1)
    retry_delays_seconds: list[int] = Field(default_factory=lambda: [5, 30, 120, 600, 1800])

    # Receiver
    max_body_bytes: int = Field(default=1024 * 1024, ge=1)
    max_batch_events: int = Field(default=500, ge=1)
    invoice_pattern: str = DEFAULT_INVOICE_PATTERN
    sources: dict[str, SourceSettings] = Field(default_factory=dict)

    # Chargebee
    chargebee_site: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9-]*$")
    chargebee_base_url: str | None = Field(default=None, pattern=r"^https?://[^/\s]+$")
    chargebee_api_key: SecretStr = SecretStr("")
    chargebee_api_version: Literal["v1", "v2"] = "v1"
    chargebee_rate_limit: int = Field(default=150, ge=0)
    chargebee_timeout_seconds: float = Field(default=30.0, gt=0)
    skip_emails: bool = False
    skip_webhooks: bool = False
    skip_actions: bool = False
    # A payment above the invoice's amount due: record it (Chargebee keeps the excess as the
    # customer's excess payments) or send it to a person (dead letter `overpayment`, until review).
    overpayment: Literal["record", "review"] = "record"

    # Consumer
    consumer_prefetch: int = Field(default=64, ge=1)
    max_attempts: int = Field(default=6, ge=1)
    auth_retry_seconds: float = Field(default=30.0, gt=0)
    ledger_url: str = "sqlite:///payrelay-ledger.db"
    ledger_retention_days: int = Field(default=30, ge=1)
    # No ledger statement waits longer: a hung database fails the write instead of holding messages.
    ledger_statement_timeout_seconds: float = Field(default=10.0, gt=0)
    # How long a consumer may hold an event before another replica may take it over.
    ledger_lease_seconds: float = Field(default=90.0, gt=0)
    shutdown_grace_seconds: float = Field(default=30.0, ge=0)
    metrics_port: int = Field(default=9102, ge=0, le=65535)

    # Ops
    admin_token: SecretStr | None = None
    # RabbitMQ's management API (unacked counts and rates); credentials come from amqp_url.
    amqp_management_url: str | None = Field(default=None, pattern=r"^https?://[^/\s]+$")

    # The parsed TOML file, set on a subclass by load_settings; empty when built directly.
    toml_data: ClassVar[dict[str, Any]] = {}

    _check_pattern = field_validator("invoice_pattern")(_compile)

    @field_validator("ledger_url")
    @classmethod
    def _check_ledger_url(cls, value: str) -> str:
        if not re.match(r"^(sqlite:///.+|postgres(ql)?://.+)$", value):
            raise ValueError("must be sqlite:///path/to/file.db or postgresql://user@host:port/db")
        return value

    @field_validator("retry_delays_seconds")
    @classmethod
    def _check_delays(cls, value: list[int]) -> list[int]:
        if not value or any(d <= 0 for d in value):
            raise ValueError("needs at least one delay, every one a positive number of seconds")
        return value

    @model_validator(mode="after")
    def _one_source_per_secret(self) -> Settings:
        """Refuse a signing key shared by two sources: a request could be replayed to the other.

        Keys are compared decoded, so one key written in two base64 spellings is still caught.
        The message names the sources, never the secret.
        """
        owners: dict[bytes, str] = {}
        for name, source in self.sources.items():
            for secret in source.secrets:
                owner = owners.setdefault(decode_secret(secret.get_secret_value()), name)
                if owner != name:
                    raise ValueError(
                        f"sources {owner} and {name} share a signing secret: the signature does not "
                        "cover the URL, so a request replayed to the other source would be recorded "
                        "twice; give each source its own secret"
                    )
        return self

    @model_validator(mode="after")
    def _lease_outlasts_a_call(self) -> Settings:
        """Refuse a lease that could lapse while its holder waits for the rate limit and then calls.

        The consumer renews its lease after each rate-limit permit; between two renewals it may
        wait for every other in-flight message's permit, then make one call.
        """
        wait = self.consumer_prefetch * 60 / self.chargebee_rate_limit if self.chargebee_rate_limit else 0.0
        needed = wait + self.chargebee_timeout_seconds + LEASE_MARGIN_SECONDS
        if self.ledger_lease_seconds < needed:
            raise ValueError(
                f"ledger_lease_seconds is {self.ledger_lease_seconds:g} but must be at least {needed:g}: "
                f"consumer_prefetch ({self.consumer_prefetch}) x 60 / chargebee_rate_limit "
                f"({self.chargebee_rate_limit}) + chargebee_timeout_seconds "
                f"({self.chargebee_timeout_seconds:g}) + {LEASE_MARGIN_SECONDS:g}, or another replica "
                "could take over a payment whose call is still in flight"
            )
        return self

    @property
    def chargebee_api_base(self) -> str:
        """Where `/invoices/...` lives: the base URL (or the site's) plus `/api/v1` or `/api/v2`."""
        if self.chargebee_base_url:
            root = self.chargebee_base_url.rstrip("/")
        elif self.chargebee_site:
            root = f"https://{self.chargebee_site}.chargebee.com"
        else:
            raise ConfigError("set PAYRELAY_CHARGEBEE_SITE or PAYRELAY_CHARGEBEE_BASE_URL")
        return f"{root}/api/{self.chargebee_api_version}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Explicit arguments, then PAYRELAY_* variables, then the TOML file (see load_settings).
        toml: dict[str, Any] = getattr(settings_cls, "toml_data", {})
        return (init_settings, env_settings, InitSettingsSource(settings_cls, init_kwargs=toml))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"PAYRELAY_CONFIG: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"PAYRELAY_CONFIG: {path} is not valid TOML: {exc}") from None


def describe(error: ValidationError) -> str:
    """One line per bad key, in the `PAYRELAY_*`/TOML vocabulary, with no input values."""
    lines = []
    for item in error.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in item["loc"]) or "(settings)"
        lines.append(f"  {loc}: {item['msg']}")
    return "invalid configuration:\n" + "\n".join(lines)


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from `PAYRELAY_CONFIG` (if set), the environment and `overrides`.

    Raises `ConfigError` with a readable message naming each bad key.
    """
    path = os.environ.get("PAYRELAY_CONFIG")
    toml = _read_toml(Path(path)) if path else {}
    # A subclass carries the file's data to settings_customise_sources without a global.
    loaded = type("Settings", (Settings,), {"toml_data": toml})
    try:
        settings: Settings = loaded(**overrides)
        return settings
    except ValidationError as exc:
        raise ConfigError(describe(exc)) from None
