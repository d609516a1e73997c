"""`Settings`: the parts, the sources, the checks across parts, and loading from TOML and the environment.

Built once at the entry point and passed down; nothing here reads the environment at import.
Environment variables override the file, which overrides the defaults. Secrets are `SecretStr`
so that a repr, a log line or an error message never shows them.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from service.settings.flat import flat_name, from_environment, nest
from service.settings.parts import (
    BrokerSettings,
    ChargebeeSettings,
    ConfigError,
    ConsumerSettings,
    FilesSettings,
    LedgerSettings,
    MatchingSettings,
    OpsSettings,
    ReceiverSettings,
)
from service.settings.sources import EffectiveSource, SourceSettings, effective
from service.signatures import decode_secret

LEASE_MARGIN_SECONDS = 1.0  # the ledger write after a call, and clock skew between replicas


class _FlatEnvironment(PydanticBaseSettingsSource):
    """`PAYRELAY_AMQP_URL` and the other documented flat names (service/settings/flat.py)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything is read at once in __call__

    def __call__(self) -> dict[str, Any]:
        return from_environment()


class Settings(BaseSettings):
    """Everything payrelay's processes are configured with, in parts."""

    model_config = SettingsConfigDict(
        env_prefix="PAYRELAY_",
        extra="forbid",
        frozen=True,
        env_nested_delimiter="__",
        # A model-level error would otherwise quote its input, secrets included.
        hide_input_in_errors=True,
    )

    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    receiver: ReceiverSettings = Field(default_factory=ReceiverSettings)
    chargebee: ChargebeeSettings = Field(default_factory=ChargebeeSettings)
    ledger: LedgerSettings = Field(default_factory=LedgerSettings)
    consumer: ConsumerSettings = Field(default_factory=ConsumerSettings)
    ops: OpsSettings = Field(default_factory=OpsSettings)
    files: FilesSettings = Field(default_factory=FilesSettings)
    matching: MatchingSettings = Field(default_factory=MatchingSettings)
    sources: dict[str, SourceSettings] = Field(default_factory=dict)

    # The parsed TOML file, set on a subclass by load_settings; empty when built directly.
    toml_data: ClassVar[dict[str, Any]] = {}

    @model_validator(mode="before")
    @classmethod
    def _flat_names(cls, values: Any) -> Any:
        """Keyword arguments may use the documented flat names (`Settings(amqp_prefix=…)`)."""
        return nest(values) if isinstance(values, dict) else values

    def source(self, name: str) -> EffectiveSource:
        """The values that apply to events from source `name` (its overrides, else the global ones)."""
        skips = {
            flag: getattr(self.chargebee, flag) for flag in ("skip_emails", "skip_webhooks", "skip_actions")
        }
        return effective(
            name, self.sources.get(name), invoice_pattern=self.consumer.invoice_pattern, skips=skips
        )

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
        prefetch, rate, timeout = (
            self.consumer.prefetch,
            self.chargebee.rate_limit,
            self.chargebee.timeout_seconds,
        )
        lease = self.ledger.lease_seconds
        needed = (prefetch * 60 / rate if rate else 0.0) + timeout + LEASE_MARGIN_SECONDS
        if lease < needed:
            raise ValueError(
                f"ledger_lease_seconds is {lease:g} but must be at least {needed:g}: "
                f"consumer_prefetch ({prefetch}) x 60 / chargebee_rate_limit ({rate}) + "
                f"chargebee_timeout_seconds ({timeout:g}) + {LEASE_MARGIN_SECONDS:g}, or another replica "
                "could take over a payment whose call is still in flight"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Explicit arguments, then PAYRELAY_* variables (flat names, then nested ones such as
        # PAYRELAY_BROKER__URL), then the TOML file (see load_settings), whose flat keys are nested.
        toml = nest(getattr(settings_cls, "toml_data", {}))
        flat_env = _FlatEnvironment(settings_cls)
        return (init_settings, flat_env, env_settings, InitSettingsSource(settings_cls, init_kwargs=toml))


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
    lines = [
        f"  {flat_name(tuple(item['loc']))}: {item['msg']}"
        for item in error.errors(include_input=False, include_url=False)
    ]
    return "invalid configuration:\n" + "\n".join(lines)


# Written by `payrelay dev` beside its ledger; read from the working directory when PAYRELAY_CONFIG
# is not set at all (set it empty to read no file).
DEV_CONFIG = Path("payrelay-dev.toml")


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from `PAYRELAY_CONFIG` (else `./payrelay-dev.toml` if there is one), the
    environment and `overrides`.

    Raises `ConfigError` with a readable message naming each bad key.
    """
    path = os.environ.get("PAYRELAY_CONFIG")
    if path is None and DEV_CONFIG.is_file():
        path = str(DEV_CONFIG)
    toml = _read_toml(Path(path)) if path else {}
    # A subclass carries the file's data to settings_customise_sources without a global.
    loaded = type("Settings", (Settings,), {"toml_data": toml})
    try:
        settings: Settings = loaded(**overrides)
        return settings
    except ValidationError as exc:
        raise ConfigError(describe(exc)) from None
