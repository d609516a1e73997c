"""PostgreSQL over TLS: libpq's `sslmode` in the ledger URL, and asking for TLS means verifying it.

The machine's PostgreSQL speaks no TLS, which is what the refusal test needs: a URL that asks for
TLS must fail to connect rather than fall back to plain text.
"""

from __future__ import annotations

import ssl

import pytest

from service.ledger import Ledger
from service.ledger.engine import tls_for
from tests.conftest import POSTGRES_URL


@pytest.mark.parametrize(
    ("mode", "expected"), [("disable", False), ("allow", "prefer"), ("prefer", "prefer")]
)
def test_modes_that_do_not_ask_for_tls(mode: str, expected: object) -> None:
    assert tls_for({"sslmode": mode}) == expected


def test_no_sslmode_is_asyncpgs_default() -> None:
    assert tls_for({}) == "prefer"


@pytest.mark.parametrize(
    ("mode", "checks_host"), [("require", True), ("verify-full", True), ("verify-ca", False)]
)
def test_asking_for_tls_verifies_the_certificate(mode: str, checks_host: bool) -> None:
    """`require` verifies too (libpq's would accept any certificate a man in the middle shows)."""
    context = tls_for({"sslmode": mode})
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is checks_host


def test_an_unknown_sslmode_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="sslmode='verify'"):
        tls_for({"sslmode": "verify"})


def test_a_missing_ca_file_is_an_error_not_a_silent_default() -> None:
    with pytest.raises(FileNotFoundError):
        tls_for({"sslmode": "verify-full", "sslrootcert": "/nonexistent/ca.pem"})


@pytest.mark.postgres
async def test_a_url_with_sslmode_connects_or_refuses_but_never_crashes() -> None:
    """`?sslmode=verify-full` used to be a TypeError; now it is TLS or nothing, and disable is plain."""
    with pytest.raises((ConnectionError, OSError, ssl.SSLError)):
        await Ledger.open(POSTGRES_URL + "?sslmode=verify-full")
    ledger = await Ledger.open(POSTGRES_URL + "?sslmode=disable")
    try:
        assert await ledger.audit(limit=1) is not None
    finally:
        await ledger.close()
