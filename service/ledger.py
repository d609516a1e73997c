"""The payment ledger (each event's Chargebee outcome, keyed by its identity) and the append-only audit.

The consumer claims an event here before calling Chargebee, so a duplicate delivered days later
— a bank retry, a redelivery, a replay — finds it recorded and calls nothing (SPEC §4). Replays
and purges are appended to the audit (SPEC §6). One SQLAlchemy Core code path serves SQLite
(aiosqlite, the embedded default) and PostgreSQL (asyncpg, several consumer replicas); the only
dialect branches are connection setup, the dialect's `INSERT … ON CONFLICT` construct, and a lock
that keeps replicas from creating the tables twice at start.

A claim is one `INSERT … ON CONFLICT DO UPDATE … WHERE <takeable> RETURNING` statement: atomic on
both databases, so exactly one of any number of concurrent claimers across processes wins.
Leases compare the claimers' wall clocks; keep them synchronised and leases much longer than skew.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Dialect, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

log = logging.getLogger("payrelay.ledger")

EventKey = tuple[str, str, str]  # (configured source, CloudEvent source, CloudEvent id)
T = TypeVar("T")
Write = Callable[[AsyncConnection], Awaitable[T]]

SCHEMA_VERSION = 1
_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}
_SQLITE_BUSY_TIMEOUT_MS = 10_000
_DDL_LOCK_KEY = 0x70617972656C6179  # "payrelay": replicas starting together create the tables once
_CLAIM_TRIES = 3
_GROUP_MAX = 200  # writes per shared transaction
_MAX_ERROR_CHARS = 4000
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}\Z")


@dataclass(frozen=True, slots=True)
class Recorded:
    """What Chargebee answered when it recorded the payment."""

    transaction_id: str
    invoice_id: str
    invoice_status: str
    amount_due: int
    amount: int
    currency: str
    recorded_at: datetime  # aware UTC
    confirmation: bytes  # the consumer's confirmations payload, republished for duplicates


@dataclass(frozen=True, slots=True)
class Claim:
    status: Literal["claimed", "recorded", "busy"]
    attempts: int  # attempts so far, this one included when claimed
    recorded: Recorded | None = None  # set when status == "recorded"


@dataclass(frozen=True, slots=True)
class Entry:
    """A ledger row, for the ops app and the CLI."""

    key: EventKey
    state: str
    invoice_id: str | None
    attempts: int
    transaction_id: str | None
    invoice_status: str | None
    last_error: str | None
    reason: str | None
    created_at: datetime
    updated_at: datetime
    generation: int


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    at: datetime
    actor: str
    action: str
    selector: str
    count: int
    details: dict[str, Any]


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC in and out: PostgreSQL keeps timestamptz, SQLite keeps UTC text and returns it naive."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return _utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


METADATA = sa.MetaData()
KEY_COLUMNS = ("origin", "source", "event_id")

LEDGER = sa.Table(
    "payrelay_ledger",
    METADATA,
    sa.Column("origin", sa.Text, primary_key=True),  # the configured source it came in through
    sa.Column("source", sa.Text, primary_key=True),  # CloudEvent source
    sa.Column("event_id", sa.Text, primary_key=True),  # CloudEvent id
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("owner", sa.Text),
    sa.Column("lease_until", UTCDateTime()),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("invoice_id", sa.Text),
    sa.Column("transaction_id", sa.Text),
    sa.Column("invoice_status", sa.Text),
    sa.Column("amount_due", sa.BigInteger),
    sa.Column("amount", sa.BigInteger),
    sa.Column("currency", sa.String(3)),
    sa.Column("recorded_at", UTCDateTime()),
    sa.Column("confirmation", sa.LargeBinary),
    sa.Column("last_error", sa.Text),
    sa.Column("reason", sa.Text),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.CheckConstraint(
        "state IN ('in_progress', 'recorded', 'failed', 'dead_lettered')", name="ck_payrelay_ledger_state"
    ),
    sa.Index("ix_payrelay_ledger_updated_at", "updated_at"),
    sa.Index("ix_payrelay_ledger_invoice_id", "invoice_id"),
    sa.Index("ix_payrelay_ledger_event_id", "event_id"),
)

AUDIT = sa.Table(
    "payrelay_audit",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("selector", sa.Text, nullable=False),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("details", sa.JSON, nullable=False),
)

SCHEMA = sa.Table("payrelay_schema", METADATA, sa.Column("version", sa.Integer, primary_key=True))

# Statements are built once and executed with parameters, so SQLAlchemy compiles each only once.
_KEY = sa.and_(*(LEDGER.c[name] == sa.bindparam(name) for name in KEY_COLUMNS))
_ROW = sa.select(LEDGER).where(_KEY)
_TRANSACTION_ID = sa.select(LEDGER.c.transaction_id).where(_KEY)
_CLAIM_SETS = ("state", "owner", "lease_until", "generation", "updated_at")
_SUCCESS_SETS = (
    "state", "owner", "lease_until", "invoice_id", "transaction_id", "invoice_status",
    "amount_due", "amount", "currency", "recorded_at", "confirmation", "updated_at",
)  # fmt: skip
_FAILURE_SETS = ("state", "owner", "lease_until", "last_error", "reason", "updated_at")

Insert = postgresql.Insert | sqlite.Insert


@dataclass(frozen=True, slots=True)
class _Upserts:
    """The `INSERT … ON CONFLICT DO UPDATE … WHERE` statements, in one dialect's construct.

    Each inserts the event if it is new, else updates it only where the WHERE allows, and
    returns a row exactly when it wrote: atomic on both databases, whatever runs concurrently.
    """

    claim: sa.Executable
    success: sa.Executable
    failure: sa.Executable

    @classmethod
    def build(cls, insert_into: Callable[[sa.Table], Insert]) -> _Upserts:
        t = LEDGER
        claim = insert_into(t)
        new = claim.excluded
        takeable = sa.and_(
            t.c.state != "recorded",
            sa.or_(
                t.c.lease_until <= new.updated_at,
                t.c.owner == new.owner,
                t.c.state.in_(("failed", "dead_lettered")),
            ),
        )
        claim_sets = {
            **{name: new[name] for name in _CLAIM_SETS},
            "attempts": t.c.attempts + 1,
            "invoice_id": sa.func.coalesce(new.invoice_id, t.c.invoice_id),  # a replay may correct it
        }
        failure = insert_into(t)
        reported = sa.and_(
            t.c.state != "recorded",
            sa.or_(
                t.c.state != "in_progress",
                t.c.owner == sa.bindparam("reporter", type_=sa.Text),
                t.c.lease_until <= failure.excluded.updated_at,
            ),
        )
        success = insert_into(t)
        return cls(
            claim=_upsert(claim, claim_sets, takeable, t.c.attempts),
            success=_upsert(success, _excluded(success, _SUCCESS_SETS), t.c.state != "recorded", t.c.state),
            failure=_upsert(failure, _excluded(failure, _FAILURE_SETS), reported, t.c.state),
        )


def _excluded(insert: Insert, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: insert.excluded[name] for name in names}


def _upsert(
    insert: Insert, sets: dict[str, Any], where: sa.ColumnElement[bool], returning: sa.Column[Any]
) -> sa.Executable:
    return insert.on_conflict_do_update(index_elements=list(KEY_COLUMNS), set_=sets, where=where).returning(
        returning
    )


def async_url(url: str) -> str:
    """`sqlite:///path/to/file.db` or `postgresql://user@host:port/db` (or `postgres://`) as an async URL."""
    return _driver_url(url).render_as_string(hide_password=False)


def _driver_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        # `from None`: the URL may carry a password, and the parser's message repeats it.
        raise ValueError(
            "ledger URL must be sqlite:///path/to/file.db or postgresql://user@host:port/db"
        ) from None
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ValueError(
            f"unsupported ledger URL scheme {parsed.drivername!r}: "
            "use sqlite:///path/to/file.db or postgresql://user@host:port/db"
        )
    if driver == "sqlite+aiosqlite" and (parsed.host or not parsed.database):
        raise ValueError("a SQLite ledger URL needs a file path: sqlite:///path/to/file.db")
    return parsed.set(drivername=driver)


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime) -> datetime:
    """Callers' times as aware UTC; a naive one is ambiguous, so it is refused, not guessed."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value.isoformat()}: the ledger needs timezone-aware times")
    return value.astimezone(UTC)


def _key_values(key: EventKey) -> dict[str, str]:
    return dict(zip(KEY_COLUMNS, key, strict=True))


def _entry(row: sa.Row[Any]) -> Entry:
    columns = row._mapping
    key = (row.origin, row.source, row.event_id)
    return Entry(key=key, **{f.name: columns[f.name] for f in fields(Entry) if f.name != "key"})


def _recorded(row: sa.Row[Any]) -> Recorded:
    return Recorded(**{f.name: row._mapping[f.name] for f in fields(Recorded)})


def _audit_record(row: sa.Row[Any]) -> AuditRecord:
    return AuditRecord(**row._mapping)


def _create_engine(url: str, schema: str | None) -> AsyncEngine:
    target = _driver_url(url)
    if target.get_backend_name() == "sqlite":
        if schema is not None:
            raise ValueError("schema= is for PostgreSQL; a SQLite ledger is a file of its own")
        engine = create_async_engine(target)
        _configure_sqlite(engine)
        return engine
    if schema is not None and not _IDENTIFIER.match(schema):
        raise ValueError(f"schema must be a lower-case SQL identifier, got {schema!r}")
    server_settings = {"search_path": schema} if schema else {}
    return create_async_engine(target, pool_pre_ping=True, connect_args={"server_settings": server_settings})


def _configure_sqlite(engine: AsyncEngine) -> None:
    """WAL (readers never block the writer), a busy timeout, and BEGIN IMMEDIATE for writers."""

    @sa.event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself, in _begin
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL syncs at checkpoints, not at every commit: a committed outcome
        # survives a process crash, and one lost to a power cut is recovered safely (the
        # redelivery reuses the Chargebee idempotency key). Use PostgreSQL for stronger needs.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @sa.event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        # A writer takes the write lock up front: a deferred transaction that read first could
        # not wait for it later and would fail with "database is locked" half-way through.
        write = conn.get_execution_options().get("payrelay_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


class Ledger:
    """Outcomes and audit on one database; build it with `await Ledger.open(url)`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._writer = engine.execution_options(payrelay_write=True)
        is_sqlite = engine.dialect.name == "sqlite"
        self._sql = _Upserts.build(sqlite.insert if is_sqlite else postgresql.insert)
        # SQLite has one writer: queue this process's writers here rather than in busy_timeout.
        self._write_lock: contextlib.AbstractAsyncContextManager[Any] = (
            asyncio.Lock() if is_sqlite else contextlib.nullcontext()
        )
        self._pending: list[tuple[Write[Any], asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, url: str, *, schema: str | None = None) -> Ledger:
        """Connect and create the tables if missing.

        `schema` (PostgreSQL only) keeps the tables in that schema, creating it if needed; tests
        use a fresh one each, and deployments may use it to share a database.
        """
        ledger = cls(_create_engine(url, schema))
        try:
            await ledger._create_schema(schema)
        except BaseException:
            await ledger.close()
            raise
        return ledger

    async def close(self) -> None:
        if self._flusher is not None:
            await self._flusher
        await self._engine.dispose()

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        async with self._write_lock, self._writer.begin() as conn:
            yield conn

    async def _grouped(self, op: Write[T]) -> T:
        """Run one write in a transaction shared with whatever other writes are waiting (group commit).

        Under load many consumer tasks write at once; committing them together costs one lock,
        one BEGIN and one COMMIT (one fsync) instead of one each. The answer is given only after
        the shared transaction committed, so a claim is never reported before it is durable.
        """
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((op, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await asyncio.shield(future)

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:_GROUP_MAX], self._pending[_GROUP_MAX:]
            try:
                async with self._write() as conn:
                    results = [await op(conn) for op, _ in batch]
            except Exception:
                # One write failed and took the shared transaction with it: run each on its own,
                # so that only the failing one reports the error.
                for op, future in batch:
                    await self._alone(op, future)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def _alone(self, op: Write[Any], future: asyncio.Future[Any]) -> None:
        try:
            async with self._write() as conn:
                result = await op(conn)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
            return
        if not future.done():
            future.set_result(result)

    async def _create_schema(self, schema: str | None) -> None:
        async with self._write() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_DDL_LOCK_KEY)))
                if schema:
                    await conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            await conn.run_sync(METADATA.create_all)
            version = await conn.scalar(sa.select(sa.func.max(SCHEMA.c.version)))
            if version is None:
                await conn.execute(SCHEMA.insert().values(version=SCHEMA_VERSION))
            elif version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"ledger schema is version {version}; this payrelay knows {SCHEMA_VERSION}"
                )

    async def claim(
        self, key: EventKey, *, owner: str, lease_seconds: float, invoice_id: str | None, generation: int = 0
    ) -> Claim:
        """Take the event for one Chargebee attempt, or say why not ("recorded" or "busy").

        Takeable: a new event, an expired lease, the owner's own lease, a transient failure
        waiting for retry, or a dead-lettered event being replayed.
        """
        attempts = 0
        for _ in range(_CLAIM_TRIES):
            now = _now()
            values = {
                **_key_values(key),
                "state": "in_progress",
                "owner": owner,
                "lease_until": now + timedelta(seconds=lease_seconds),
                "attempts": 1,
                "generation": generation,
                "invoice_id": invoice_id,
                "created_at": now,
                "updated_at": now,
            }

            async def claim(conn: AsyncConnection, values: dict[str, Any] = values) -> tuple[Any, Any]:
                claimed = await conn.scalar(self._sql.claim, values)
                row = None if claimed is not None else (await conn.execute(_ROW, _key_values(key))).first()
                return claimed, row

            claimed, row = await self._grouped(claim)
            if claimed is not None:
                return Claim("claimed", claimed)
            if row is None:
                continue  # deleted by cleanup between the two statements: claim again
            attempts = row.attempts
            if row.state == "recorded":
                return Claim("recorded", attempts, _recorded(row))
            if row.state == "in_progress" and row.lease_until is not None and row.lease_until > now:
                return Claim("busy", attempts)
            # On PostgreSQL the row changed between the statements (say the holder failed): again.
        return Claim("busy", attempts)

    async def record_success(self, key: EventKey, recorded: Recorded, *, owner: str) -> None:
        """Store Chargebee's answer; an already recorded event keeps its first answer.

        Accepted from any owner, even one whose lease was taken over: the payment exists at
        Chargebee either way, and losing that fact is what would let it be recorded twice.
        """
        now = _now()
        values = {
            **_key_values(key),
            **asdict(recorded),
            "recorded_at": _utc(recorded.recorded_at),
            "state": "recorded",
            "owner": owner,
            "lease_until": None,
            "attempts": 1,  # only if it was never claimed
            "generation": 0,
            "created_at": now,
            "updated_at": now,
        }

        async def success(conn: AsyncConnection) -> Any:
            if await conn.scalar(self._sql.success, values) is not None:
                return recorded.transaction_id
            return await conn.scalar(_TRANSACTION_ID, _key_values(key))

        kept = await self._grouped(success)
        if kept != recorded.transaction_id:
            log.warning(
                "event %s was already recorded as transaction %s; kept it over %s",
                key,
                kept,
                recorded.transaction_id,
            )

    async def record_failure(
        self, key: EventKey, *, owner: str, error: str, reason: str | None, final: bool
    ) -> None:
        """Mark a failed attempt: `failed` waits for a retry, `dead_lettered` (final) for a replay.

        Ignored for a recorded event, and from an owner whose live lease another owner took over.
        An event that fails before it was ever claimed (say, invalid) is inserted with 0 attempts.
        """
        now = _now()
        values = {
            **_key_values(key),
            "state": "dead_lettered" if final else "failed",
            "owner": None,
            "lease_until": None,
            "attempts": 0,
            "generation": 0,
            "last_error": error[:_MAX_ERROR_CHARS],
            "reason": reason,
            "created_at": now,
            "updated_at": now,
            "reporter": owner,
        }

        async def failure(conn: AsyncConnection) -> Any:
            return await conn.scalar(self._sql.failure, values)

        applied = await self._grouped(failure)
        if applied is None:
            log.info("ignored failure of %s from %s: recorded, or held by another owner", key, owner)

    async def get(self, key: EventKey) -> Entry | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(_ROW, _key_values(key))).first()
        return None if row is None else _entry(row)

    async def find(
        self, *, invoice_id: str | None = None, event_id: str | None = None, limit: int = 50
    ) -> list[Entry]:
        """Entries matching every filter given, newest updated first (no filter: the most recent)."""
        query = sa.select(LEDGER)
        if invoice_id is not None:
            query = query.where(LEDGER.c.invoice_id == invoice_id)
        if event_id is not None:
            query = query.where(LEDGER.c.event_id == event_id)
        return await self._entries(query, limit)

    async def recent(self, limit: int = 50) -> list[Entry]:
        """The most recently updated entries, newest first."""
        return await self._entries(sa.select(LEDGER), limit)

    async def _entries(self, query: sa.Select[Any], limit: int) -> list[Entry]:
        ordered = query.order_by(LEDGER.c.updated_at.desc(), *(LEDGER.c[n] for n in KEY_COLUMNS)).limit(limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(ordered)).all()
        return [_entry(row) for row in rows]

    async def counts_since(self, since: datetime) -> dict[str, int]:
        """State → how many entries were last updated at or after `since`."""
        query = (
            sa.select(LEDGER.c.state, sa.func.count())
            .where(LEDGER.c.updated_at >= _utc(since))
            .group_by(LEDGER.c.state)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {state: count for state, count in rows}

    async def cleanup(self, *, retention_days: int, now: datetime | None = None) -> int:
        """Delete entries of every state not updated for `retention_days`; returns how many went."""
        if retention_days < 1:
            raise ValueError("retention_days must be at least 1: the ledger is what stops double payments")
        cutoff = _utc(now or _now()) - timedelta(days=retention_days)
        async with self._write() as conn:
            result = await conn.execute(sa.delete(LEDGER).where(LEDGER.c.updated_at < cutoff))
        return result.rowcount

    async def append_audit(
        self, *, actor: str, action: str, selector: str, count: int, details: dict[str, Any] | None = None
    ) -> None:
        """Append one operator action; audit rows are never updated or deleted through this class."""
        row = {
            "at": _now(),
            "actor": actor,
            "action": action,
            "selector": selector,
            "count": count,
            "details": details or {},
        }
        async with self._write() as conn:
            await conn.execute(AUDIT.insert().values(**row))

    async def audit(self, limit: int = 100) -> list[AuditRecord]:
        """The latest audit records, newest first."""
        query = sa.select(AUDIT).order_by(AUDIT.c.id.desc()).limit(limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_audit_record(row) for row in rows]
