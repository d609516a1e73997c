"""Settings from TOML plus PAYRELAY_* overrides, validated with messages that name the bad key."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import ConfigError, Settings, SourceSettings, load_settings
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
    assert settings.amqp_prefix == "fromfile"
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
    assert (settings.chargebee_api_version, settings.amqp_prefix) == ("v1", "fromenv")


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
    assert Settings(chargebee_site="acme-test").chargebee_api_base == "https://acme-test.chargebee.com/api/v1"
    both = Settings(
        chargebee_site="acme", chargebee_base_url="http://127.0.0.1:8090", chargebee_api_version="v2"
    )
    assert both.chargebee_api_base == "http://127.0.0.1:8090/api/v2"


def write_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(text)
    monkeypatch.setenv("PAYRELAY_CONFIG", str(path))


@pytest.mark.parametrize(
    ("acme", "other"),
    [
        (SECRET, SECRET),
        # The same key in two base64 spellings (the last character's unused bits differ).
        ("whsec_c2FtZS1rZXk=", "whsec_c2FtZS1rZXl="),
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
