"""Standard Webhooks v1: verify and sign `webhook-signature` headers.

The signed content is `"{webhook-id}.{webhook-timestamp}.{raw body}"`, the MAC HMAC-SHA256 keyed
with the base64 part of a `whsec_` secret, and the header a space-separated list of
`v1,<base64 MAC>` entries. Every malformed input is a `SignatureError` (a 401), never a crash;
a `webhook-id` may not contain `.`, the separator of the signed content.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

SECRET_PREFIX = "whsec_"
_MAC_LEN = hashlib.sha256().digest_size
_MAX_ID_LEN = 256
# Standard Webhooks: keys of 24 to 64 bytes. Shorter ones are refused when the settings load.
MIN_KEY_BYTES = 24


class SignatureError(Exception):
    """The request is not authentically signed; the message is safe to return to the sender."""


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret; raises ValueError for anything else."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a Standard Webhooks secret starts with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a Standard Webhooks secret is whsec_ followed by base64") from None
    if not key:
        raise ValueError("a Standard Webhooks secret must not be empty")
    return key


def _mac(key: bytes, msg_id: str, timestamp: str, body: bytes) -> bytes:
    return hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value for a body, as a sender would compute it."""
    mac = _mac(decode_secret(secret), msg_id, str(timestamp), body)
    return "v1," + base64.b64encode(mac).decode()


def _candidate_macs(header: str) -> list[bytes]:
    """The decoded v1 MACs of a signature header; entries of other versions or shapes are skipped."""
    macs = []
    for entry in header.split(" "):
        version, sep, encoded = entry.partition(",")
        if version != "v1" or not sep:
            continue
        try:
            mac = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(mac) == _MAC_LEN:
            macs.append(mac)
    return macs


@dataclass(frozen=True, slots=True)
class Verifier:
    """Checks requests for one source: its keys (several, for rotation) and timestamp tolerance."""

    keys: Sequence[bytes]
    tolerance_seconds: int

    def verify(
        self, msg_id: str | None, timestamp: str | None, signature: str | None, body: bytes, now: float
    ) -> None:
        """Raise `SignatureError` unless one signature matches one key within the tolerance."""
        if not msg_id or not timestamp or not signature:
            raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature header")
        if len(msg_id) > _MAX_ID_LEN or not msg_id.isprintable() or "." in msg_id:
            raise SignatureError("malformed webhook-id header")
        if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
            raise SignatureError("malformed webhook-timestamp header (expected Unix seconds)")
        if abs(now - int(timestamp)) > self.tolerance_seconds:
            raise SignatureError("webhook-timestamp is outside the tolerance")
        candidates = _candidate_macs(signature)
        if not candidates:
            raise SignatureError("no well-formed v1 signature in webhook-signature")
        matched = False
        for key in self.keys:
            expected = _mac(key, msg_id, timestamp, body)
            for candidate in candidates:
                # Keep comparing after a match: the time taken must not depend on which matched.
                matched |= hmac.compare_digest(expected, candidate)
        if not matched:
            raise SignatureError("no signature matches")
