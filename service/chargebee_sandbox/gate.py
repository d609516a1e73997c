"""What every API call passes first: the API version, HTTP Basic authentication, the rate limit."""

from __future__ import annotations

import base64
import binascii
import math
import secrets
from collections import deque
from collections.abc import Callable
from typing import Final

from service.chargebee_sandbox.replies import Reply, error_reply

API_VERSIONS: Final = frozenset({"v1", "v2"})
RATE_WINDOW_SECONDS: Final = 60.0


def _basic(api_key: str) -> str:
    return "Basic " + base64.b64encode(f"{api_key}:".encode()).decode()


class Gate:
    """The API key and its rolling minute of calls; `check` answers a refusal or None."""

    def __init__(self, api_key: str, rate_limit: int, clock: Callable[[], float]) -> None:
        self.rate_limit = rate_limit  # API requests per rolling minute per api key; 0 = unlimited
        self.clock = clock
        self._calls: dict[str, deque[float]] = {}
        self.set_api_key(api_key)

    def set_api_key(self, api_key: str) -> None:
        self.api_key = api_key
        self._expected = _basic(api_key)

    def clear(self) -> None:
        self._calls.clear()

    def authenticates(self, authorization: str | None) -> bool:
        if authorization == self._expected:  # the common case, without decoding
            return True
        scheme, _, encoded = (authorization or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            username = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            return False
        return bool(username) and secrets.compare_digest(username, self.api_key)

    def admit(self) -> int | None:
        """None if another API request fits in the rolling minute, else seconds until one does."""
        if self.rate_limit <= 0:
            return None
        now = self.clock()
        window = self._calls.setdefault(self.api_key, deque())
        while window and window[0] <= now - RATE_WINDOW_SECONDS:
            window.popleft()
        if len(window) >= self.rate_limit:
            return max(1, math.ceil(window[0] + RATE_WINDOW_SECONDS - now))
        window.append(now)
        return None

    def check(self, version: str, authorization: str | None) -> Reply | None:
        if version not in API_VERSIONS:
            return error_reply(404, "resource_not_found", f"Sorry, API version {version!r} does not exist")
        if not self.authenticates(authorization):
            return error_reply(401, "api_authentication_failed")
        retry_after = self.admit()
        if retry_after is not None:
            return error_reply(429, "api_request_limit_exceeded", headers={"Retry-After": str(retry_after)})
        return None
