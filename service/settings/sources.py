"""Upstream senders, `[sources.NAME]`: their secrets and overrides, and their effective values."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from service.bankfiles.model import Options
from service.events import EVENT_TYPES, EventType
from service.signatures import MIN_KEY_BYTES, decode_secret

_SKIP_HEADERS = {
    "skip_emails": "chargebee-event-email",
    "skip_webhooks": "chargebee-event-webhook",
    "skip_actions": "chargebee-event-actions",
}


def compiled(pattern: str) -> str:
    """`pattern` if it is a valid regular expression; the error says why not."""
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
    # Bank files (SPEC §9): what this source sends to /v1/files/{source}; `auto` recognises camt,
    # BAI2 and MT940 by their content, lockbox must be named.
    format: Literal["auto", "camt", "bai2", "lockbox", "mt940"] = "auto"
    # BAI2 type codes that become payments; unset: service/bankfiles/bai.py's DEFAULT_CREDIT_CODES.
    bai2_credit_codes: list[str] | None = None
    # Lockbox record positions overriding the default layout: field = [first, last] (1-based).
    lockbox_columns: dict[str, tuple[int, int]] = Field(default_factory=dict)

    _check_pattern = field_validator("invoice_pattern")(lambda v: v if v is None else compiled(v))

    @field_validator("bai2_credit_codes")
    @classmethod
    def _check_codes(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            wrong = [code for code in value if not (len(code) == 3 and code.isascii() and code.isdigit())]
            if wrong or not value:
                raise ValueError('must be a non-empty list of three-digit BAI2 type codes, e.g. ["165"]')
            debits = [code for code in value if 400 <= int(code) < 700]
            if debits:
                raise ValueError(f"{', '.join(debits)} are debit type codes: they are never payments")
        return value

    @field_validator("lockbox_columns")
    @classmethod
    def _check_columns(cls, value: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
        from service.bankfiles.lockbox import layout

        layout(value)  # ValueError names the field and what is wrong with it
        return value

    def file_options(self) -> Options:
        """What this source's bank files are parsed with."""
        codes = frozenset(self.bai2_credit_codes or ())
        return Options(bai2_credit_codes=codes, lockbox_columns=dict(self.lockbox_columns))

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
        for position, secret in enumerate(secrets, 1):
            key = decode_secret(secret.get_secret_value())  # ValueError says what is wrong, not the value
            if len(key) < MIN_KEY_BYTES:
                raise ValueError(
                    f"secret {position} is {len(key)} bytes once decoded; Standard Webhooks needs at least "
                    f"{MIN_KEY_BYTES} (make one with: echo whsec_$(openssl rand -base64 32))"
                )
        object.__setattr__(self, "secrets", secrets)
        return self


@dataclass(frozen=True, slots=True)
class EffectiveSource:
    """What applies to events from one source: its own overrides, else the global settings."""

    name: str
    invoice_pattern: str
    skip_emails: bool
    skip_webhooks: bool
    skip_actions: bool

    def skip_headers(self) -> dict[str, str]:
        """The `chargebee-event-*: all-disabled` headers this source's payments are sent with."""
        return {header: "all-disabled" for flag, header in _SKIP_HEADERS.items() if getattr(self, flag)}


def effective(
    name: str, source: SourceSettings | None, *, invoice_pattern: str, skips: dict[str, bool]
) -> EffectiveSource:
    """Overlay a source's overrides (those it sets) on the global values."""
    own = {flag: getattr(source, flag) for flag in _SKIP_HEADERS} if source is not None else {}
    flags = {flag: own[flag] if own.get(flag) is not None else skips[flag] for flag in _SKIP_HEADERS}
    pattern = source.invoice_pattern if source is not None and source.invoice_pattern else invoice_pattern
    return EffectiveSource(name=name, invoice_pattern=pattern, **flags)
