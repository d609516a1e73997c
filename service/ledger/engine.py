"""Ledger URLs and engines: the async driver for each scheme, SQLite pragmas, the PostgreSQL schema."""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}\Z")
# libpq's TLS parameters, read from a PostgreSQL URL's query (asyncpg takes none of them as such).
_TLS_PARAMETERS = ("sslmode", "sslrootcert", "sslcert", "sslkey")
_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def tls_for(query: Mapping[str, Any]) -> ssl.SSLContext | str | bool:
    """asyncpg's `ssl` argument for libpq's `sslmode` (and its certificate files).

    Asking for TLS means verifying it: `require` checks the chain and the host name, as
    `verify-full` does (libpq's `require` would accept any certificate, which a man in the middle
    can present); `verify-ca` checks the chain only. `sslrootcert` names the CA file (default:
    the system's), `sslcert`/`sslkey` a client certificate. `disable` is plain TCP; `allow`,
    `prefer` and no `sslmode` keep asyncpg's default (TLS if offered, unverified).
    """
    mode = str(query.get("sslmode") or "prefer")
    if mode not in _SSLMODES:
        raise ValueError(f"sslmode={mode!r}: use one of {', '.join(_SSLMODES)}")
    if mode == "disable":
        return False
    if mode in ("allow", "prefer"):
        return "prefer"
    context = ssl.create_default_context(cafile=_one(query, "sslrootcert"))
    if mode == "verify-ca":
        context.check_hostname = False  # the chain is still verified: CERT_REQUIRED
    if (certificate := _one(query, "sslcert")) is not None:
        context.load_cert_chain(certificate, _one(query, "sslkey"))
    return context


def _one(query: Mapping[str, Any], name: str) -> str | None:
    value = query.get(name)
    if isinstance(value, tuple | list):
        value = value[-1] if value else None
    return None if value is None else str(value)


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


def engine_for(url: str, schema: str | None, statement_timeout: float) -> AsyncEngine:
    """An engine whose statements never wait longer than `statement_timeout` seconds."""
    target = _driver_url(url)
    if target.get_backend_name() == "sqlite":
        if schema is not None:
            raise ValueError("schema= is for PostgreSQL; a SQLite ledger is a file of its own")
        engine = create_async_engine(target)
        _configure_sqlite(engine.sync_engine, busy_timeout_ms=int(statement_timeout * 1000))
        return engine
    if schema is not None and not _IDENTIFIER.match(schema):
        raise ValueError(f"schema must be a lower-case SQL identifier, got {schema!r}")
    # The server cancels a statement that runs too long; the client gives up on a server that
    # does not answer at all (a hung host, a partition), a little later.
    server_settings = {"statement_timeout": str(int(statement_timeout * 1000))}
    if schema:
        server_settings["search_path"] = schema
    connect_args = {
        "server_settings": server_settings,
        "command_timeout": statement_timeout + 2,
        "timeout": statement_timeout,
        "ssl": tls_for(target.query),
    }
    target = target.difference_update_query(_TLS_PARAMETERS)
    return create_async_engine(
        target, pool_pre_ping=True, pool_timeout=statement_timeout, connect_args=connect_args
    )


def local_writer_for(url: str, statement_timeout: float) -> sa.Engine | None:
    """SQLite: the ledger file through the synchronous driver, for the group writer's own thread.

    The same pragmas as the async engine's; None for PostgreSQL, whose writes stay async.
    """
    target = _driver_url(url)
    if target.get_backend_name() != "sqlite":
        return None
    engine = sa.create_engine(target.set(drivername="sqlite"))
    _configure_sqlite(engine, busy_timeout_ms=int(statement_timeout * 1000))
    return engine


def _configure_sqlite(engine: sa.Engine, busy_timeout_ms: int) -> None:
    """WAL (readers never block the writer), a busy timeout, and BEGIN IMMEDIATE for writers."""

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself, in _begin
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")  # first: the pragmas below may wait
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL syncs the WAL at every commit: an outcome the ledger acknowledged survives a power
        # cut. NORMAL could lose it, and a bank's resend after Chargebee's 30-minute idempotency
        # window would then be recorded twice. Group commit keeps the cost to one fsync per group.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        # A writer takes the write lock up front: a deferred transaction that read first could
        # not wait for it later and would fail with "database is locked" half-way through.
        write = conn.get_execution_options().get("payrelay_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
