"""Slow and oversized clients, stopped below the ASGI app: uvicorn's httptools protocol, guarded.

uvicorn bounds none of this by itself (measured; README, "Receiver limits"): with httptools a
header may grow without limit in memory, and with either parser nothing times out a request whose
headers or body trickle in — `timeout_keep_alive` only runs between requests and every byte
cancels it. Its `limit_concurrency` answers 503 to everything, `/healthz` included, while slow
connections hold the slots. So each connection here:

- has `header_timeout` seconds, from its start or the end of the previous answer, to finish the
  request line and headers (then a 408 and the connection closed);
- may send at most `max_header_bytes` of them, in at most `max_headers` lines (then a 431),
  counted as they arrive, so an unfinished 32 MiB header is refused at the limit;
- counts against `max_connections`. At the cap, the connection that has been reading its request
  the longest (slow headers or a slow body) is closed to make room, so a probe still gets in; when
  every connection is busy with a request already read, the newcomer gets a 503.

The body's deadline is the receiver's own (`read_body`): it answers that 408 with problem+json.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("payrelay.connections")

# File descriptors kept for everything but client connections: the listening sockets, the broker's
# connection, the event loop's own, logging.
RESERVED_DESCRIPTORS = 32


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_header_bytes: int
    max_headers: int
    header_timeout: float
    max_connections: int


def within_open_files(wanted: int) -> int:
    """`wanted`, or fewer if the process may not open that many files beside its own."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or wanted <= soft - RESERVED_DESCRIPTORS:
        return wanted
    allowed = max(soft - RESERVED_DESCRIPTORS, 1)
    log.warning(
        "receiver_max_connections is %d but the open-file limit is %d: at most %d connections",
        wanted,
        soft,
        allowed,
    )
    return allowed


def _answer(status: int, reason: str, detail: str, extra: bytes = b"") -> bytes:
    """A whole HTTP/1.1 problem+json answer that closes the connection."""
    body = orjson.dumps({"type": "about:blank", "title": reason, "status": status, "detail": detail})
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/problem+json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n%s\r\n%s" % (status, reason.encode(), len(body), extra, body)
    )


class CoalescedWrites(asyncio.Transport):
    """A connection's transport whose writes within one turn of the event loop leave as one.

    uvicorn writes an answer's status line and headers, then its body: two system calls and two
    TCP segments for a 202 of a hundred bytes, and the client woken twice. Held until the turn
    ends, they leave in one `write`. Closing sends what is held first; aborting drops it, as the
    socket's own buffer would be dropped.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._held:
            self._loop.call_soon(self._flush)
        self._held.append(data if isinstance(data, bytes) else bytes(data))  # the caller may reuse it

    def _flush(self) -> None:
        held, self._held = self._held, []
        if held and not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = []
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(part) for part in self._held)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)  # uvicorn hands a websocket upgrade over this way

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline, header limits and a connection cap, each
    answer written at once (`CoalescedWrites`)."""

    limits: ClassVar[ConnectionLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reading_since: float | None = None  # when the request being read began; None once read
        self._header_timer: asyncio.TimerHandle | None = None
        self._in_headers = False  # a request's first byte has come, its headers not yet all
        self._header_bytes = 0
        self._refused = False

    # -- the connection -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        full = len(self.connections) >= self.limits.max_connections
        super().connection_made(CoalescedWrites(transport, self.loop))
        if full and not self._make_room():
            retry = b"retry-after: 5\r\n"
            self._refuse(503, "Service Unavailable", "too many connections; retry shortly", retry)
            return
        self._await_request()

    def _make_room(self) -> bool:
        """Close the connection that has read its request longest; False if none is reading."""
        readers = [
            c
            for c in self.connections
            if isinstance(c, GuardedProtocol)
            and c is not self
            and c.reading_since is not None
            and not c.transport.is_closing()
        ]
        if not readers:
            return False
        oldest = min(readers, key=lambda c: c.reading_since or 0.0)
        oldest._close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        if self._in_headers and not self._refused:
            self._header_bytes += len(data)
            if self._header_bytes > self.limits.max_header_bytes:
                self._too_large()

    def send_400_response(self, msg: str) -> None:
        if not self._refused:  # after a refusal, the rest of the bytes may well not parse
            super().send_400_response(msg)

    # -- the parser's callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:  # a pipelined request: its clock starts now
            self._await_request()
        self._in_headers = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._refused:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._stop_timer()
        if self._refused:
            return
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.limits.max_header_bytes or len(self.headers) > self.limits.max_headers:
            self._too_large()
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._header_timer is None:  # else it ends a body already answered; the next one is awaited
            self.reading_since = None
        if not self._refused:
            super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # uvicorn armed its keep-alive timer only if no pipelined request was waiting.
        if not self.transport.is_closing() and self.timeout_keep_alive_task is not None:
            self._await_request()

    # -- limits ---------------------------------------------------------------------------------

    def _await_request(self) -> None:
        """The next request's clock starts: its headers must be complete within header_timeout."""
        self._stop_timer()
        self.reading_since = self.loop.time()
        self._header_bytes = 0
        self._header_timer = self.loop.call_later(self.limits.header_timeout, self._headers_late)

    def _stop_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self._in_headers:  # nothing of a next request came: close quietly, as keep-alive does
            self._close()
            return
        detail = f"the request headers did not arrive within {self.limits.header_timeout:g} s"
        self._refuse(408, "Request Timeout", detail)

    def _too_large(self) -> None:
        limits = self.limits
        detail = f"headers are limited to {limits.max_header_bytes} bytes in {limits.max_headers} lines"
        self._refuse(431, "Request Header Fields Too Large", detail)

    def _refuse(self, status: int, reason: str, detail: str, extra: bytes = b"") -> None:
        """Answer (unless a request is still being answered) and close; what else arrives is ignored."""
        busy = self.cycle is not None and not self.cycle.response_complete
        if not self.transport.is_closing() and not busy:
            self.transport.write(_answer(status, reason, detail, extra))
        self._close()

    def _close(self) -> None:
        self._refused = True
        self.reading_since = None
        self._stop_timer()
        if not self.transport.is_closing():
            self.transport.close()


def guarded(limits: ConnectionLimits) -> type[GuardedProtocol]:
    """The protocol class uvicorn is given (`Config(http=...)`) for these limits."""
    return type("GuardedHttpProtocol", (GuardedProtocol,), {"limits": limits})
