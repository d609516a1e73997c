"""Group commit: concurrent ledger writes share one transaction, each told its own outcome."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

T = TypeVar("T")
Write = Callable[[AsyncConnection], Awaitable[T]]

_GROUP_MAX = 200  # writes per shared transaction


class GroupWriter:
    """Runs writes in transactions shared with whatever other writes are waiting.

    Under load many consumer tasks write at once; committing them together costs one lock, one
    BEGIN and one COMMIT (one fsync) instead of one each. Each answer is given only after the
    shared transaction committed, so a claim is never reported before it is durable; one write
    that fails is retried alone, so only it reports the error.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._writer = engine.execution_options(payrelay_write=True)
        # SQLite has one writer: queue this process's writers here rather than in busy_timeout.
        self._lock: contextlib.AbstractAsyncContextManager[Any] = (
            asyncio.Lock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()
        )
        self._pending: list[tuple[Write[Any], asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction of its own (schema changes, cleanup, the audit)."""
        async with self._lock, self._writer.begin() as conn:
            yield conn

    async def run(self, op: Write[T]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((op, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await asyncio.shield(future)

    async def drain(self) -> None:
        """Wait for the writes already handed in."""
        if self._flusher is not None:
            await self._flusher

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:_GROUP_MAX], self._pending[_GROUP_MAX:]
            try:
                async with self.transaction() as conn:
                    results = [await op(conn) for op, _ in batch]
            except Exception:
                for op, future in batch:
                    await self._alone(op, future)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def _alone(self, op: Write[Any], future: asyncio.Future[Any]) -> None:
        try:
            async with self.transaction() as conn:
                result = await op(conn)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
            return
        if not future.done():
            future.set_result(result)
