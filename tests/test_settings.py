"""Settings from TOML plus PAYRELAY_* overrides, validated with messages that name the bad key."""

from pathlib import Path

import pytest

from service.settings import ConfigError, Settings, load_settings
from tests.conftest import SECRET

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
