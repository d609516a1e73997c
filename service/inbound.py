"""What the receiver's two endpoints share: a source's keys and types, reading a bounded body
within a deadline, and the identities published lately."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

import orjson
from starlette.requests import ClientDisconnect, Request

from service import messages
from service.bounded import FixedLru
from service.settings import Settings
from service.signatures import Verifier, decode_secret

RETRY_AFTER_SECONDS = "5"


class BodyTooLarge(Exception):
    pass


class BodyIncomplete(Exception):
    """The body did not all arrive in time, or the client went away before it had."""


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """What the receiver needs per source, precomputed once: keys and allowed types."""

    name: str
    verifier: Verifier
    types: tuple[str, ...]


class RecentIdentities:
    """Identities published lately, so a sender's quick retry is answered without republishing.

    Only an optimisation: the consumer's ledger is what makes duplicates harmless. Each identity
    is kept as a 16-byte BLAKE2b digest of its JSON form, so that every entry has the same size
    and the memory is taken at start (`FixedLru`). Two of 100,000 identities would share a digest
    with a probability near 1e-29; only then would a new event be answered as a retry.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self._seen: FixedLru[bytes, bool] = FixedLru(capacity, _placeholder, True)

    def __contains__(self, identity: messages.EventKey) -> bool:
        return _digest(identity) in self._seen

    def add(self, identity: messages.EventKey) -> None:
        self._seen.put(_digest(identity), True)


def _digest(identity: messages.EventKey) -> bytes:
    return hashlib.blake2b(orjson.dumps(identity), digest_size=16).digest()


def _placeholder(i: int) -> bytes:
    return b"placeholder" + i.to_bytes(5, "big")  # 16 bytes, like a digest


def source_configs(settings: Settings) -> dict[str, SourceConfig]:
    return {
        name: SourceConfig(
            name=name,
            verifier=Verifier(
                keys=tuple(decode_secret(s.get_secret_value()) for s in source.secrets),
                tolerance_seconds=source.tolerance_seconds,
            ),
            types=tuple(source.types),
        )
        for name, source in settings.sources.items()
    }


async def read_body(request: Request, limit: int, within: float) -> bytes:
    """The whole body; `BodyTooLarge` as soon as more than `limit` bytes have arrived, and
    `BodyIncomplete` if it has not all arrived `within` seconds (or the client left)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks = []
    size = 0
    try:
        async with asyncio.timeout(within):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge
                chunks.append(chunk)
    except (TimeoutError, ClientDisconnect):
        raise BodyIncomplete from None
    return b"".join(chunks)
