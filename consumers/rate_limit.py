"""A process-wide client-side rate limit for Chargebee: evenly spaced permits."""

from __future__ import annotations

import asyncio
import time

from service.metrics import Metrics


class RateLimiter:
    """Evenly spaced permits: at most `per_minute` requests in any minute, for every caller.

    Spacing (rather than a bucket that refills) means no burst can ever exceed the limit, which
    is what Chargebee counts. `per_minute == 0` disables it.
    """

    def __init__(self, per_minute: int, metrics: Metrics | None = None) -> None:
        # A hair over 60/N so that clock granularity can never fit N+1 requests in a minute.
        self.interval = 60.0 / per_minute * 1.001 if per_minute > 0 else 0.0
        self._last = -float("inf")
        self._lock = asyncio.Lock()
        self._metrics = metrics

    async def acquire(self) -> None:
        if not self.interval:
            return
        started = time.monotonic()
        # One caller at a time, in arrival order; the next permit is spaced from the moment this
        # one is actually granted, so a timer that fires late can never bunch two permits up.
        async with self._lock:
            # A deadline, not an event to wait for: loop because sleep may wake a hair early.
            while (wait := self._last + self.interval - time.monotonic()) > 0:  # noqa: ASYNC110
                await asyncio.sleep(wait)
            self._last = time.monotonic()
        if self._metrics is not None:
            self._metrics.rate_limit_wait.observe(self._last - started)
