"""Settings from TOML plus PAYRELAY_* overrides, validated with messages that name the bad key."""

import base64
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from service.settings import FLAT, ConfigError, Settings, SourceSettings, load_settings
from tests.conftest import LOCKBOX_SECRET, OLD_SECRET, SECRET

TOML = f"""
amqp_prefix = "fromfile"
chargebee_api_version = "v2"
skip_emails = true

[sources.acme-bank]
secrets = ["{SECRET}"]
types = ["bank.deposit"]
tolerance_seconds = 120
skip_emails = false
invoice_pattern = 'INV-\\d+'
"""


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "payrelay.toml"
    path.write_text(TOML)
    monkeypatch.setenv("PAYRELAY_CONFIG", str(path))
    return path


def test_reads_the_toml_file(config: Path) -> None:
    """Top-level keys and [sources.NAME] tables come from the file."""
    settings = load_settings()
    assert settings.broker.prefix == "fromfile"
    source = settings.sources["acme-bank"]
    assert source.types == ["bank.deposit"]
    assert source.tolerance_seconds == 120
    assert source.skip_emails is False
    assert source.invoice_pattern == r"INV-\d+"


def test_environment_overrides_the_file(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PAYRELAY_* variables win over the file."""
    monkeypatch.setenv("PAYRELAY_CHARGEBEE_API_VERSION", "v1")
    monkeypatch.setenv("PAYRELAY_AMQP_PREFIX", "fromenv")
    settings = load_settings()
    assert (settings.chargebee.api_version, settings.broker.prefix) == ("v1", "fromenv")


def test_secrets_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """secrets_file adds the whitespace-separated secrets of a mounted file."""
    secret_file = tmp_path / "acme"
    secret_file.write_text(f"{SECRET}\n")
    path = tmp_path / "p.toml"
    path.write_text(f'[sources.acme-bank]\nsecrets_file = "{secret_file}"\n')
    monkeypatch.setenv("PAYRELAY_CONFIG", str(path))
    assert load_settings().sources["acme-bank"].secrets[0].get_secret_value() == SECRET


@pytest.mark.parametrize(
    ("toml", "env", "needle"),
    [
        ("", {"PAYRELAY_CHARGEBEE_RATE_LIMIT": "lots"}, "chargebee_rate_limit"),
        ("", {"PAYRELAY_LEDGER_URL": "mysql://x"}, "ledger_url"),
        ("", {"PAYRELAY_CHARGEBEE_API_VERSION": "v3"}, "chargebee_api_version"),
        ("", {"PAYRELAY_INVOICE_PATTERN": "INV-("}, "invoice_pattern"),
        ("nonsense = 1\n", {}, "nonsense"),
        ("[sources.a]\nsecrets = []\n", {}, "sources.a"),
        ("[sources.a]\nsecrets = ['whsec_%%%']\n", {}, "sources.a"),
        (
            "[sources.a]\nsecrets = ['whsec_YWJj']\ntolerance_seconds = -1\n",
            {},
            "sources.a.tolerance_seconds",
        ),
        ("[sources.a]\nsecrets = ['whsec_YWJj']\ntypes = ['card']\n", {}, "sources.a.types"),
        ("[sources.a]\nsecrets_file = '/nonexistent/secret'\n", {}, "secrets_file cannot be read"),
    ],
)
def test_invalid_configuration_names_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toml: str, env: dict[str, str], needle: str
) -> None:
    """Every invalid value is a ConfigError whose message names the key."""
    path = tmp_path / "p.toml"
    path.write_text(toml)
    monkeypatch.setenv("PAYRELAY_CONFIG", str(path))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match=needle):
        load_settings()


def test_errors_never_contain_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad secret's value is not echoed in the error, nor in the settings' repr."""
    path = tmp_path / "p.toml"
    path.write_text("[sources.a]\nsecrets = ['whsec_TOPSECRET%%']\n")
    monkeypatch.setenv("PAYRELAY_CONFIG", str(path))
    with pytest.raises(ConfigError) as exc:
        load_settings()
    assert "TOPSECRET" not in str(exc.value)
    settings = Settings(chargebee_api_key="cb_live_SECRET", sources={})
    assert "cb_live_SECRET" not in repr(settings)


def test_unreadable_toml_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that is not TOML says so."""
    path = tmp_path / "p.toml"
    path.write_text("this is = = not toml")
    monkeypatch.setenv("PAYRELAY_CONFIG", str(path))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings()


def test_chargebee_base_url_wins_over_site() -> None:
    """PAYRELAY_CHARGEBEE_BASE_URL overrides https://{site}.chargebee.com; the version is appended."""
    assert Settings(chargebee_site="acme-test").chargebee.api_base == "https://acme-test.chargebee.com/api/v1"
    both = Settings(
        chargebee_site="acme", chargebee_base_url="http://127.0.0.1:8090", chargebee_api_version="v2"
    )
    assert both.chargebee.api_base == "http://127.0.0.1:8090/api/v2"


def write_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(text)
    monkeypatch.setenv("PAYRELAY_CONFIG", str(path))


@pytest.mark.parametrize(
    ("acme", "other"),
    [
        (SECRET, SECRET),
        # The same key in two base64 spellings (the last character's unused bits differ).
        ("whsec_c2FtZS1rZXktaW4tdHdvLXNwZWxsaW5ncw==", "whsec_c2FtZS1rZXktaW4tdHdvLXNwZWxsaW5ncx=="),
    ],
)
def test_a_secret_shared_by_two_sources_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, acme: str, other: str
) -> None:
    """One key for two sources is refused, naming both sources and never the secret."""
    write_config(
        tmp_path,
        monkeypatch,
        f"[sources.acme-bank]\nsecrets = ['{acme}']\n[sources.other-bank]\nsecrets = ['{other}']\n",
    )
    with pytest.raises(ConfigError) as exc:
        load_settings()
    message = str(exc.value)
    assert (
        "sources acme-bank and other-bank share a signing secret: the signature does not cover the URL, "
        "so a request replayed to the other source would be recorded twice; give each source its own secret"
    ) in message
    for secret in (acme, other):
        assert secret not in message
        assert secret.removeprefix("whsec_") not in message


def test_a_rotated_out_secret_counts_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Any secret of a source counts, including one kept during rotation, and from secrets_file."""
    secret_file = tmp_path / "lockbox"
    secret_file.write_text(f"{LOCKBOX_SECRET}\n{OLD_SECRET}\n")
    write_config(
        tmp_path,
        monkeypatch,
        f"[sources.acme-bank]\nsecrets = ['{SECRET}', '{OLD_SECRET}']\n"
        f"[sources.lockbox]\nsecrets_file = '{secret_file}'\n",
    )
    with pytest.raises(ConfigError, match="sources acme-bank and lockbox share a signing secret") as exc:
        load_settings()
    assert OLD_SECRET not in str(exc.value)


def test_a_source_may_repeat_its_own_secret_and_sources_may_differ() -> None:
    """The same secret twice in one source is harmless; distinct secrets per source are fine."""
    settings = Settings(
        sources={
            "acme-bank": SourceSettings(secrets=[SECRET, SECRET]),
            "lockbox": SourceSettings(secrets=[LOCKBOX_SECRET]),
        }
    )
    assert set(settings.sources) == {"acme-bank", "lockbox"}


def test_shared_secret_built_directly_is_a_validation_error_without_the_secret() -> None:
    """Settings(...) built in code refuses it too, and its error shows no secret."""
    with pytest.raises(ValidationError) as exc:
        Settings(
            sources={
                "acme-bank": SourceSettings(secrets=[SECRET]),
                "lockbox": SourceSettings(secrets=[OLD_SECRET, SECRET]),
            }
        )
    assert "sources acme-bank and lockbox share a signing secret" in str(exc.value)
    assert SECRET not in str(exc.value)
    assert SECRET.removeprefix("whsec_") not in str(exc.value)


# -- the parts and the documented flat names --------------------------------------------------------

# A value other than the default for every flat name, as it would be written in the environment.
_ENV_VALUES = {
    "amqp_url": "amqp://u:p@broker:5672/", "amqp_prefix": "pfx", "publish_timeout_seconds": "7",
    "delivery_limit": "9", "retry_delays_seconds": "[3, 4]", "amqp_management_url": "http://mq:15672",
    "max_body_bytes": "99", "max_batch_events": "9", "chargebee_site": "acme",
    "max_file_bytes": "999", "file_body_timeout_seconds": "9",
    "payer_fingerprint_key": "a-fingerprint-key-of-16+",
    "receiver_max_header_bytes": "8192", "receiver_max_headers": "20", "receiver_max_connections": "50",
    "receiver_header_timeout_seconds": "2", "receiver_body_timeout_seconds": "3",
    "receiver_metrics_port": "9200", "receiver_trusted_hosts": '["payrelay.example.com"]',
    "chargebee_base_url": "http://127.0.0.1:1", "chargebee_api_key": "test_k", "chargebee_api_version": "v2",
    "chargebee_rate_limit": "0", "chargebee_timeout_seconds": "3", "skip_emails": "true",
    "skip_webhooks": "true", "skip_actions": "true", "ledger_url": "sqlite:///x.db",
    "ledger_retention_days": "9", "ledger_lease_seconds": "95", "ledger_statement_timeout_seconds": "4",
    "consumer_prefetch": "9", "max_attempts": "9", "auth_retry_seconds": "9", "shutdown_grace_seconds": "9",
    "metrics_port": "9999", "invoice_pattern": "X-\\d+", "overpayment": "review",
    "admin_token": "tok-0123456789abcdef0123456789",
    "ops_operators": '{"ana": "sha256:' + "a" * 64 + '"}',
    "ops_trusted_hosts": '["ops.example.com"]', "ops_cookie_secure": "false", "amqp_declare": "check",
}  # fmt: skip


def _plain(value: Any) -> Any:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def _value(settings: Settings, flat: str) -> Any:
    part, field = FLAT[flat]
    return _plain(getattr(getattr(settings, part), field))


def _default(flat: str) -> Any:
    part, field = FLAT[flat]
    model = Settings.model_fields[part].annotation
    assert isinstance(model, type)
    return _plain(model.model_fields[field].get_default(call_default_factory=True))


def test_every_documented_name_is_mapped_to_a_part() -> None:
    """The table covers every field of every part, once: nothing settable is left without a flat name."""
    fields = {(part, f) for part in ("broker", "receiver", "chargebee", "ledger", "consumer", "ops", "files")
              for f in type(getattr(Settings(), part)).model_fields}  # fmt: skip
    assert set(FLAT.values()) == fields
    assert set(_ENV_VALUES) == set(FLAT)


@pytest.mark.parametrize("flat", sorted(FLAT))
def test_each_flat_environment_variable_sets_its_part(flat: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """PAYRELAY_<NAME> (SPEC §7, the k8s manifests) still sets the setting, now kept in its part."""
    monkeypatch.delenv("PAYRELAY_CONFIG", raising=False)
    monkeypatch.setenv(f"PAYRELAY_{flat.upper()}", _ENV_VALUES[flat])
    # Some names only validate with others (a 95 s lease for a 9-message prefetch, say): give the
    # lease room, so that each variable is tried on its own.
    if flat != "ledger_lease_seconds":
        monkeypatch.setenv("PAYRELAY_LEDGER_LEASE_SECONDS", "10000")
    assert _value(load_settings(), flat) != _default(flat)


def test_flat_toml_keys_and_keyword_arguments_set_the_parts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "payrelay.toml"
    config.write_text(
        'amqp_prefix = "fromfile"\nledger_url = "sqlite:///f.db"\n[chargebee]\napi_version = "v2"\n'
    )
    monkeypatch.setenv("PAYRELAY_CONFIG", str(config))
    loaded = load_settings(consumer_prefetch=5)
    assert (loaded.broker.prefix, loaded.ledger.url, loaded.chargebee.api_version) == (
        "fromfile",
        "sqlite:///f.db",
        "v2",
    )
    assert loaded.consumer.prefetch == 5
    assert Settings(amqp_prefix="direct").broker.prefix == "direct"


def test_the_environment_beats_the_file_in_either_spelling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PAYRELAY_AMQP_PREFIX and PAYRELAY_BROKER__PREFIX both override the file's amqp_prefix."""
    config = tmp_path / "payrelay.toml"
    config.write_text('amqp_prefix = "fromfile"\ndelivery_limit = 30\n')
    monkeypatch.setenv("PAYRELAY_CONFIG", str(config))
    monkeypatch.setenv("PAYRELAY_AMQP_PREFIX", "flat")
    monkeypatch.setenv("PAYRELAY_BROKER__DELIVERY_LIMIT", "40")
    loaded = load_settings()
    assert (loaded.broker.prefix, loaded.broker.delivery_limit) == ("flat", 40)


def test_an_error_in_a_part_is_reported_under_the_name_people_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAYRELAY_CONFIG", raising=False)
    monkeypatch.setenv("PAYRELAY_DELIVERY_LIMIT", "0")
    with pytest.raises(ConfigError, match=r"^invalid configuration:\n  delivery_limit: "):
        load_settings()


def test_the_parts_build_what_they_configure() -> None:
    """settings.broker.topology() and .broker(name), settings.ledger.url, settings.source(name)."""
    acme_bank = SourceSettings(secrets=[SECRET], skip_emails=False, invoice_pattern="A-\\d+")
    config = Settings(
        amqp_prefix="pfx",
        retry_delays_seconds=[3],
        delivery_limit=7,
        skip_emails=True,
        sources={"acme-bank": acme_bank},
    )
    topology = config.broker.topology()
    assert (topology.work_queue, [t.delay_seconds for t in topology.retry_tiers]) == (
        "pfx.record-payment",
        [3],
    )
    broker = config.broker.broker("payrelay-test")
    assert (broker.name, broker.topology.prefix, broker.publishes) == ("payrelay-test", "pfx", True)
    acme, other = config.source("acme-bank"), config.source("other")
    assert (acme.skip_headers(), acme.invoice_pattern) == ({}, "A-\\d+")
    assert other.skip_headers() == {"chargebee-event-email": "all-disabled"}
    assert other.invoice_pattern == config.consumer.invoice_pattern


# -- the receiver's own settings -------------------------------------------------------------------


@pytest.mark.parametrize(
    "short",
    [
        "whsec_YWJj",  # 3 bytes
        "whsec_" + base64.b64encode(b"k" * 23).decode(),  # one short of Standard Webhooks' 24
    ],
)
def test_a_secret_shorter_than_24_bytes_is_refused_naming_the_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, short: str
) -> None:
    """Standard Webhooks keys are at least 24 bytes: a shorter one stops the start with one line that
    names the source and the secret's place, never the secret."""
    secret_file = tmp_path / "acme"
    secret_file.write_text(f"{SECRET}\n{short}\n")
    write_config(tmp_path, monkeypatch, f"[sources.acme-bank]\nsecrets_file = '{secret_file}'\n")
    with pytest.raises(ConfigError) as exc:
        load_settings()
    lines = str(exc.value).splitlines()
    assert lines[0] == "invalid configuration:" and len(lines) == 2
    assert lines[1].startswith("  sources.acme-bank: ")
    assert "secret 2 is" in lines[1] and "at least 24" in lines[1]
    assert short not in lines[1] and short.removeprefix("whsec_") not in lines[1]


def test_a_24_byte_secret_is_enough() -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 24).decode()
    assert Settings(sources={"a": SourceSettings(secrets=[secret])}).sources["a"].secrets


def test_the_receivers_limits_and_hosts_have_documented_defaults() -> None:
    """The defaults the README's "Receiver limits" states."""
    receiver = Settings().receiver
    assert (receiver.max_header_bytes, receiver.max_headers, receiver.max_connections) == (16384, 100, 1000)
    assert (receiver.header_timeout_seconds, receiver.body_timeout_seconds) == (10.0, 30.0)
    assert (receiver.metrics_port, receiver.trusted_hosts) == (9103, ["*"])


@pytest.mark.parametrize(
    ("hosts", "valid"),
    [
        (["*"], True),
        (["payrelay.example.com", "*.example.org", "10.0.0.7", "::1"], True),
        (["https://payrelay.example.com"], False),
        (["payrelay.example.com:443"], False),
        (["pay*.example.com"], False),
        ([], False),
    ],
)
def test_trusted_hosts_are_names_addresses_or_wildcards(hosts: list[str], valid: bool) -> None:
    if valid:
        assert Settings(receiver_trusted_hosts=hosts).receiver.trusted_hosts == hosts
    else:
        with pytest.raises(ValidationError, match="receiver.trusted_hosts"):
            Settings(receiver_trusted_hosts=hosts)


def test_a_source_says_what_its_bank_files_are() -> None:
    """format, bai2_credit_codes and lockbox_columns become the parser's options."""
    source = SourceSettings(
        secrets=[SECRET],
        format="lockbox",
        bai2_credit_codes=["165"],
        lockbox_columns={"check_number": (37, 46)},
    )
    options = source.file_options()
    assert source.format == "lockbox"
    assert options.bai2_credit_codes == frozenset({"165"})
    assert options.lockbox_columns == {"check_number": (37, 46)}


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"format": "pdf"}, "format"),
        ({"bai2_credit_codes": ["16"]}, "three-digit"),
        ({"bai2_credit_codes": ["475"]}, "debit type codes"),
        ({"lockbox_columns": {"check_colour": (1, 2)}}, "check_colour"),
        ({"lockbox_columns": {"check_amount": (17, 8)}}, "check_amount"),
    ],
)
def test_bank_file_settings_are_checked_at_start(values: dict[str, Any], says: str) -> None:
    """A wrong format, a debit or malformed BAI2 code, an unknown or backwards lockbox column: refused."""
    with pytest.raises(ValidationError) as caught:
        SourceSettings(secrets=[SECRET], **values)
    assert says in str(caught.value)


def test_a_short_fingerprint_key_is_refused() -> None:
    """payer_fingerprint_key must not be guessable."""
    with pytest.raises(ValidationError, match="at least 16"):
        Settings(payer_fingerprint_key="short")
