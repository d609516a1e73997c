"""Settings: one typed object in parts, from a TOML file (`PAYRELAY_CONFIG`) and `PAYRELAY_*` variables.

Modules: `parts` (broker, receiver, chargebee, ledger, consumer, ops, files — each builds what it
configures), `sources` (`[sources.NAME]` and their effective values), `flat` (the documented flat
names and the part each sets), `model` (`Settings`, the checks across parts, `load_settings`).
"""

from service.settings.flat import FLAT
from service.settings.model import LEASE_MARGIN_SECONDS, Settings, describe, load_settings
from service.settings.parts import (
    DEFAULT_INVOICE_PATTERN,
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
from service.settings.sources import EffectiveSource, SourceSettings

__all__ = [
    "DEFAULT_INVOICE_PATTERN",
    "FLAT",
    "LEASE_MARGIN_SECONDS",
    "BrokerSettings",
    "ChargebeeSettings",
    "ConfigError",
    "ConsumerSettings",
    "EffectiveSource",
    "FilesSettings",
    "MatchingSettings",
    "LedgerSettings",
    "OpsSettings",
    "ReceiverSettings",
    "Settings",
    "SourceSettings",
    "describe",
    "load_settings",
]
