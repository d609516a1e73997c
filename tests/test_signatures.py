"""Standard Webhooks v1 verification, cross-checked against the reference `standardwebhooks` library."""

import base64
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from service.signatures import SignatureError, Verifier, decode_secret, sign
from tests.conftest import OLD_SECRET, SECRET

BODY = b'{"specversion":"1.0","id":"e1"}'
NOW = 1_764_000_000


def verifier(*secrets: str, tolerance: int = 300) -> Verifier:
    return Verifier(keys=tuple(decode_secret(s) for s in secrets), tolerance_seconds=tolerance)


def reference_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    from datetime import UTC, datetime

    return str(Webhook(secret).sign(msg_id, datetime.fromtimestamp(timestamp, UTC), body.decode()))


def test_accepts_the_reference_librarys_signature() -> None:
    """A signature made by the standardwebhooks library verifies."""
    header = reference_signature(SECRET, "msg_1", NOW, BODY)
    verifier(SECRET).verify("msg_1", str(NOW), header, BODY, NOW)


def test_our_signature_verifies_in_the_reference_library() -> None:
    """What `payrelay send` signs, the reference library accepts."""
    now = int(time.time())
    header = sign(SECRET, "msg_2", now, BODY)
    headers = {"webhook-id": "msg_2", "webhook-timestamp": str(now), "webhook-signature": header}
    Webhook(SECRET).verify(BODY.decode(), headers)
    assert header == reference_signature(SECRET, "msg_2", now, BODY)


def test_rotation_several_secrets_and_signatures() -> None:
    """Any configured secret and any of several space-separated signatures may match."""
    old = sign(OLD_SECRET, "m", NOW, BODY)
    new = sign(SECRET, "m", NOW, BODY)
    verifier(SECRET, OLD_SECRET).verify("m", str(NOW), old, BODY, NOW)
    verifier(SECRET).verify("m", str(NOW), f"v1,AAAA {new}", BODY, NOW)
    verifier(SECRET).verify("m", str(NOW), f"v1a,xyz {new}", BODY, NOW)


@pytest.mark.parametrize("skew", [301, -301, 10_000])
def test_timestamp_outside_tolerance_both_directions(skew: int) -> None:
    """Timestamps too old or too far in the future are rejected."""
    header = sign(SECRET, "m", NOW + skew, BODY)
    with pytest.raises(SignatureError, match="tolerance"):
        verifier(SECRET).verify("m", str(NOW + skew), header, BODY, NOW)


def test_tolerance_is_per_verifier() -> None:
    """A source with a wider tolerance accepts an older timestamp."""
    header = sign(SECRET, "m", NOW - 500, BODY)
    verifier(SECRET, tolerance=600).verify("m", str(NOW - 500), header, BODY, NOW)


@pytest.mark.parametrize(
    ("msg_id", "timestamp", "signature"),
    [
        (None, str(NOW), "v1,abc"),
        ("m", None, "v1,abc"),
        ("m", str(NOW), None),
        ("", str(NOW), "v1,abc"),
        ("m", "", "v1,abc"),
        ("m", "abc", "v1,abc"),
        ("m", "-5", "v1,abc"),
        ("m", "1.5", "v1,abc"),
        ("m", "١٢٣", "v1,abc"),  # non-ASCII digits
        ("m", "9" * 30, "v1,abc"),
        ("m", str(NOW), "v1,"),
        ("m", str(NOW), "v1,!!!notbase64"),
        ("m", str(NOW), "v1,YWJj"),  # valid base64, wrong length
        ("m", str(NOW), "v2," + "A" * 44),
        ("m", str(NOW), "garbage"),
        ("m", str(NOW), " "),
        ("m\n", str(NOW), "v1,abc"),
        ("m", str(NOW), "v1," + base64.b64encode(b"\0" * 32).decode()),
    ],
)
def test_malformed_headers_are_signature_errors(
    msg_id: str | None, timestamp: str | None, signature: str | None
) -> None:
    """Every malformed header variant is a SignatureError (a 401), never another exception."""
    with pytest.raises(SignatureError):
        verifier(SECRET).verify(msg_id, timestamp, signature, BODY, NOW)


def test_body_tampering_fails() -> None:
    """A signature over one body does not verify another."""
    header = sign(SECRET, "m", NOW, BODY)
    with pytest.raises(SignatureError, match="no signature matches"):
        verifier(SECRET).verify("m", str(NOW), header, BODY + b" ", NOW)


@given(msg_id=st.text(max_size=40), timestamp=st.text(max_size=20), signature=st.text(max_size=120))
def test_arbitrary_headers_never_crash(msg_id: str, timestamp: str, signature: str) -> None:
    """Whatever the headers hold, verification either passes or raises SignatureError."""
    try:
        verifier(SECRET).verify(msg_id, timestamp, signature, BODY, NOW)
    except SignatureError:
        pass


@pytest.mark.parametrize("secret", ["abc", "whsec_", "whsec_!!!", "whsec_YWJj=x"])
def test_bad_secrets_are_rejected_at_configuration(secret: str) -> None:
    """A secret that is not whsec_<base64> is a ValueError, raised when settings load."""
    with pytest.raises(ValueError, match="secret"):
        decode_secret(secret)


@pytest.mark.parametrize("msg_id", ["a.b.c", "msg.1", "."])
def test_a_webhook_id_with_a_dot_is_refused(msg_id: str) -> None:
    """`.` separates id, timestamp and body in the signed content, so an id may not contain one,
    even when the signature over that content is right."""
    header = sign(SECRET, msg_id, NOW, BODY)
    with pytest.raises(SignatureError, match="malformed webhook-id"):
        verifier(SECRET).verify(msg_id, str(NOW), header, BODY, NOW)
