"""What the receiver's two endpoints share: a source's keys and types, reading a bounded body
within a deadline, and the identities published lately."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass

from starlette.requests import ClientDisconnect, Request

from service import messages
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

    Only an optimisation: the consumer's ledger is what makes duplicates harmless.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self._seen: OrderedDict[messages.EventKey, None] = OrderedDict()
        self._capacity = capacity

    def __contains__(self, identity: messages.EventKey) -> bool:
        return identity in self._seen

    def add(self, identity: messages.EventKey) -> None:
        self._seen[identity] = None
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)


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
