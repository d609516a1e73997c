"""Backing off a client that keeps presenting wrong credentials (sign-in forms and bearers).

The first few failures are free (a typo); after them each attempt must wait twice as long as the
one before, up to five minutes, until a success or a quiet quarter of an hour. One process's
memory, bounded: a guesser is slowed to a handful of tries an hour per replica. Behind a proxy,
the client is the address the proxy forwards (uvicorn's `--forwarded-allow-ips`), or every
operator would share one allowance.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

FREE_FAILURES = 5
LONGEST_WAIT = 300.0
FORGET_AFTER = 900.0
MAX_CLIENTS = 10_000


@dataclass(slots=True)
class _Record:
    failures: int
    last: float


class Throttle:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clients: dict[str, _Record] = {}
        self._clock = clock

    def wait(self, client: str) -> float:
        """Seconds this client must still wait before its credentials are even looked at (0: none)."""
        record = self._clients.get(client)
        if record is None or record.failures < FREE_FAILURES:
            return 0.0
        now = self._clock()
        if now - record.last > FORGET_AFTER:
            del self._clients[client]
            return 0.0
        backoff = min(LONGEST_WAIT, 2.0 ** (record.failures - FREE_FAILURES + 1))
        return max(0.0, record.last + backoff - now)

    def failed(self, client: str) -> int:
        """Count one more failure; returns how many in a row."""
        now = self._clock()
        record = self._clients.pop(client, None)
        if record is None or now - record.last > FORGET_AFTER:
            record = _Record(0, now)
        record.failures += 1
        record.last = now
        self._clients[client] = record  # most recent last, so the oldest go first
        while len(self._clients) > MAX_CLIENTS:
            del self._clients[next(iter(self._clients))]
        return record.failures

    def succeeded(self, client: str) -> None:
        self._clients.pop(client, None)
