"""`chargebee-idempotency-key`: answers stored for 30 minutes, replayed for the same request only."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from service.chargebee_sandbox.replies import Reply, error_reply

IDEMPOTENCY_HEADER: Final = "chargebee-idempotency-key"
REPLAYED_HEADER: Final = "chargebee-idempotency-replayed"
IDEMPOTENCY_WINDOW_SECONDS: Final = 30 * 60
MAX_KEY_LENGTH: Final = 100  # documented: "Idempotency keys can be upto 100 characters in length"

Fingerprint = tuple[str, str, tuple[tuple[str, str], ...]]


@dataclass(frozen=True, slots=True)
class _Stored:
    fingerprint: Fingerprint
    reply: Reply
    at: float


class Idempotency:
    """Stored answers by key; insertion order is age order, so expiry pops from the front."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._stored: dict[str, _Stored] = {}

    def clear(self) -> None:
        self._stored.clear()

    def lookup(self, key: str, fingerprint: Fingerprint) -> Reply | None:
        """The replay or refusal for `key`, or None when the request is to be processed."""
        if len(key) > MAX_KEY_LENGTH:
            message = f"cannot be more than {MAX_KEY_LENGTH} characters"
            return error_reply(400, "param_wrong_value", message, param=IDEMPOTENCY_HEADER)
        stored = self._remembered(key)
        if stored is None:
            return None
        if stored.fingerprint != fingerprint:
            message = (
                f"The idempotency key {key!r} has already been used for a different request. "
                "Use a new idempotency key or ensure the endpoint matches the original request signature."
            )
            return error_reply(422, "unable_to_process_request", message)
        return Reply(stored.reply.status, stored.reply.body, {REPLAYED_HEADER: "true"}, replayed=True)

    def store(self, key: str, fingerprint: Fingerprint, reply: Reply) -> None:
        self._stored[key] = _Stored(fingerprint, reply, self.clock())

    def _remembered(self, key: str) -> _Stored | None:
        horizon = self.clock() - IDEMPOTENCY_WINDOW_SECONDS
        stored = self._stored
        while stored:
            oldest = next(iter(stored))
            if stored[oldest].at > horizon:
                break
            del stored[oldest]
        return stored.get(key)
