"""Ordinary mistakes, and what payrelay says about them: one line and an exit code, never a traceback.

`explain` maps what a command raised to that line; anything it does not know (a bug) keeps its
traceback. The exit codes are the same for every command (`payrelay --help` lists them).
"""

from __future__ import annotations

import argparse
import errno
import os
import socket

from service.settings import ConfigError

# Exit codes, the same for every command (dlq's are these too).
OK, FAILED, USAGE, REFUSED, UNAVAILABLE, INTERRUPTED = 0, 1, 2, 3, 4, 130


class UsageError(Exception):
    """The command line asks for something that cannot be done; the message says what to give."""


class PortInUse(OSError):
    """A server's port is already taken (another `payrelay dev`, say)."""

    def __init__(self, host: str, port: int, what: str) -> None:
        super().__init__(errno.EADDRINUSE, f"{host}:{port} ({what}) is already in use")
        self.host, self.port, self.what = host, port, what


def ensure_free(host: str, ports: dict[str, int]) -> None:
    """Raise PortInUse for the first of `ports` (name: port) that a server already listens on.

    Checked before anything starts, so that a second `payrelay dev` says so in one line instead of
    starting half of itself. SO_REUSEADDR as uvicorn binds: a port in TIME_WAIT is free.
    """
    for what, port in ports.items():
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise PortInUse(host, port, what) from None
                raise


def explain(exc: BaseException, args: argparse.Namespace) -> tuple[str, int] | None:
    """The line and exit code for an ordinary mistake; None for anything else (then: the traceback)."""
    import aiohttp
    import orjson
    import sqlalchemy.exc

    if isinstance(exc, ConfigError | UsageError):
        return str(exc), USAGE
    if isinstance(exc, PortInUse):
        hint = "is another `payrelay dev` running? Stop it, or give --port"
        return f"{exc.strerror}: {hint}", UNAVAILABLE
    if isinstance(exc, aiohttp.ClientConnectorError):
        why = os.strerror(exc.errno) if exc.errno else str(exc.os_error)
        where = f"{exc.host}:{exc.port} ({why})"
        if args.command != "send":
            return f"cannot reach {where}", UNAVAILABLE
        fix = "start it (`payrelay dev`, or `payrelay receiver`) or give --url"
        return f"cannot reach the receiver at {where}: {fix}", UNAVAILABLE
    if isinstance(exc, aiohttp.ClientError):
        return f"the request failed: {type(exc).__name__}: {exc}", UNAVAILABLE
    if isinstance(exc, orjson.JSONDecodeError):
        name = "standard input" if getattr(args, "file", None) == "-" else getattr(args, "file", None)
        expected = "one event (an object) or a batch (an array)"
        return f"{name or 'the input'} is not JSON ({exc}): give a file with {expected}", USAGE
    if isinstance(exc, OSError) and exc.filename is not None:
        fix = ": check the path (- reads standard input)" if isinstance(exc, FileNotFoundError) else ""
        return f"{exc.filename}: {exc.strerror}{fix}", USAGE
    if isinstance(exc, ConnectionError):
        return f"cannot connect: {exc}: is it running? `payrelay check` tries each dependency", UNAVAILABLE
    if isinstance(exc, sqlalchemy.exc.OperationalError):  # the database refused: its own words
        fix = "check ledger_url (a SQLite file's directory must exist and be writable)"
        return f"the ledger cannot be used: {in_own_words(exc)[1]}: {fix}", UNAVAILABLE
    return None


def in_own_words(exc: BaseException) -> tuple[str, str]:
    """(kind, first line) of what failed: a database's own error rather than SQLAlchemy's wrapper,
    which adds its statement and a link on lines of their own."""
    import sqlalchemy.exc

    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.orig is not None:
        exc = exc.orig
    text = str(exc)
    return type(exc).__name__, text.splitlines()[0] if text else type(exc).__name__
