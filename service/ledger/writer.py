"""Group commit: concurrent ledger writes share one transaction, each told its own outcome."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

T = TypeVar("T")
Write = Callable[[sa.Connection], T]  # runs inside the group's transaction; plain, not async

_GROUP_MAX = 200  # writes per shared transaction


def _apply(conn: sa.Connection, ops: Sequence[Write[Any]]) -> list[Any]:
    return [op(conn) for op in ops]


def _in_transaction(engine: sa.Engine, ops: Sequence[Write[Any]]) -> list[Any]:
    with engine.begin() as conn:
        return _apply(conn, ops)


class GroupWriter:
    """Runs writes in transactions shared with whatever other writes are waiting.

    Under load many consumer tasks write at once; committing them together costs one lock, one
    BEGIN and one COMMIT (one fsync) instead of one each. Each answer is given only after the
    shared transaction committed, so a claim is never reported before it is durable; one write
    that fails is retried alone, so only it reports the error.

    Writes are plain functions of a connection. With `local` (SQLite: the same file through the
    synchronous driver) a whole group runs on one thread of its own in one hand-over, instead of
    one hand-over to aiosqlite's thread per statement, which cost more than the statements. On
    PostgreSQL a group runs through the async engine (`run_sync`), each statement awaited.
    """

    def __init__(self, engine: AsyncEngine, local: sa.Engine | None = None) -> None:
        self._writer = engine.execution_options(payrelay_write=True)
        self._local = local.execution_options(payrelay_write=True) if local is not None else None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="payrelay-ledger") if local else None
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

    async def close(self) -> None:
        await self.drain()
        if self._thread is not None and self._local is not None:
            # Its connections belong to the thread that opened them: closed there.
            await asyncio.get_running_loop().run_in_executor(self._thread, self._local.dispose)
            self._thread.shutdown(wait=True)

    async def _commit(self, ops: Sequence[Write[Any]]) -> list[Any]:
        async with self._lock:
            if self._local is not None:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self._thread, _in_transaction, self._local, ops)
            async with self._writer.begin() as conn:
                return await conn.run_sync(_apply, ops)

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:_GROUP_MAX], self._pending[_GROUP_MAX:]
            try:
                results = await self._commit([op for op, _ in batch])
            except Exception:
                for op, future in batch:
                    await self._alone(op, future)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def _alone(self, op: Write[Any], future: asyncio.Future[Any]) -> None:
        try:
            [result] = await self._commit([op])
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
            return
        if not future.done():
            future.set_result(result)
