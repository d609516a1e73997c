"""The receiver's transports join an answer's writes (service/connection_guard.py, CoalescedWrites).

Each test wraps a real socket's transport on the running event loop. The wrapped transport's
writes are counted on their way to the socket, and the far end of the socket says what arrived.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from service.connection_guard import CoalescedWrites


class Counted:
    """The real transport, with the writes that reach it noted."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


@dataclass
class Pair:
    wrapped: CoalescedWrites
    counted: Counted
    far: socket.socket
    lost: asyncio.Future[None]  # set once the real transport has told its protocol it is gone

    async def received(self) -> bytes:
        """Everything the far end gets until the connection is closed."""
        loop = asyncio.get_running_loop()
        chunks = []
        while chunk := await loop.sock_recv(self.far, 65536):
            chunks.append(chunk)
        return b"".join(chunks)


class _Quiet(asyncio.Protocol):
    def __init__(self, lost: asyncio.Future[None]) -> None:
        self._lost = lost

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._lost.done():
            self._lost.set_result(None)


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    loop = asyncio.get_running_loop()
    near, far = socket.socketpair()
    far.setblocking(False)
    lost: asyncio.Future[None] = loop.create_future()
    transport, _ = await loop.connect_accepted_socket(lambda: _Quiet(lost), near)
    counted = Counted(transport)  # type: ignore[arg-type]
    yield Pair(CoalescedWrites(counted, loop), counted, far, lost)  # type: ignore[arg-type]
    transport.abort()
    far.close()


async def test_the_writes_of_one_turn_reach_the_socket_as_one(pair: Pair) -> None:
    pair.wrapped.write(b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n")
    pair.wrapped.write(b"{}")
    assert pair.counted.writes == [] and pair.wrapped.get_write_buffer_size() == 46
    await asyncio.sleep(0)  # the turn ends
    assert pair.counted.writes == [b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n{}"]
    pair.wrapped.write(b"next")
    await asyncio.sleep(0)
    assert pair.counted.writes[1:] == [b"next"]  # a later turn: a write of its own
    pair.wrapped.close()
    assert await pair.received() == b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n{}next"


async def test_closing_sends_what_is_held_first(pair: Pair) -> None:
    pair.wrapped.write(b"HTTP/1.1 408 Request Timeout\r\n")
    pair.wrapped.write(b"connection: close\r\n\r\n")
    pair.wrapped.close()  # in the same turn, before the held writes would leave
    assert pair.wrapped.is_closing()
    assert await pair.received() == b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\n\r\n"
    await asyncio.sleep(0)
    assert len(pair.counted.writes) == 1  # the flush scheduled by the first write found nothing


async def test_aborting_drops_what_is_held(pair: Pair) -> None:
    pair.wrapped.write(b"never sent")
    pair.wrapped.abort()
    await asyncio.wait_for(pair.lost, 5)
    await asyncio.sleep(0)
    assert pair.counted.writes == []
    assert await pair.received() == b""


async def test_a_write_held_when_the_connection_goes_is_dropped_not_raised(pair: Pair) -> None:
    pair.wrapped.write(b"too late")
    pair.counted.transport.close()  # the client went: uvicorn's protocol is told, the transport closes
    await asyncio.sleep(0)
    assert pair.counted.writes == []
    assert await pair.received() == b""
