"""The broker edge: one supervised AMQP connection per process, and confirmed publishing.

aio-pika's robust connection waits without bound while the broker is away and has lost
consumers on reconnect in the past, so payrelay keeps its own small supervisor instead: connect,
declare the topology, run the role's `on_connect` hook, wait for the connection to close, and
connect again every `reconnect_seconds`. Publishing never waits longer than its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange

from service.topology import Topology, declare

log = logging.getLogger("payrelay.broker")

CLOUDEVENTS_JSON = "application/cloudevents+json"


class BrokerUnavailable(Exception):
    """The broker did not durably accept a publish in time (down, slow, nack or unroutable)."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to publish persistently, with confirms."""

    exchange: str
    routing_key: str
    body: bytes
    message_id: str
    headers: dict[str, Any] = field(default_factory=dict)
    content_type: str = CLOUDEVENTS_JSON
    type: str | None = None
    expiration: float | None = None  # seconds; per-message TTL for retry tiers
    # Unroutable counts as failure, except where having no listener is normal (confirmations).
    mandatory: bool = True


OnConnect = Callable[[AbstractConnection], Awaitable[None]]


class Broker:
    """A connection kept open by a supervisor task, and a confirmed publishing channel on it."""

    def __init__(
        self,
        url: str,
        topology: Topology,
        *,
        publish_timeout: float = 5.0,
        reconnect_seconds: float = 1.0,
        on_connect: OnConnect | None = None,
        name: str = "payrelay",
    ) -> None:
        self.url = url
        self.topology = topology
        self.publish_timeout = publish_timeout
        self.reconnect_seconds = reconnect_seconds
        self.on_connect = on_connect
        self.name = name
        self.connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._channel_lock = asyncio.Lock()
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, wait: float | None = None) -> None:
        """Start the supervisor; with `wait`, also wait that long for a first connection."""
        self._task = asyncio.create_task(self._supervise(), name=f"{self.name}-broker")
        if wait:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._connected.wait(), wait)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.connection is not None and not self.connection.is_closed:
            await self.connection.close()

    @property
    def ready(self) -> bool:
        """True when connected and the publishing channel is open."""
        return (
            self._connected.is_set()
            and self.connection is not None
            and not self.connection.is_closed
            and self._channel is not None
            and not self._channel.is_closed
        )

    async def _supervise(self) -> None:
        while True:
            try:
                connection = await aio_pika.connect(
                    self.url,
                    timeout=self.reconnect_seconds * 5,
                    client_properties={"connection_name": self.name},
                )
            except (OSError, aiormq.exceptions.AMQPError, TimeoutError, ConnectionError) as exc:
                log.warning(
                    "broker unreachable, retrying in %.1fs: %s", self.reconnect_seconds, type(exc).__name__
                )
                await asyncio.sleep(self.reconnect_seconds)
                continue
            try:
                await self._session(connection)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("broker session failed")
            finally:
                self._connected.clear()
                if not connection.is_closed:
                    with contextlib.suppress(Exception):
                        await connection.close()
            await asyncio.sleep(self.reconnect_seconds)

    async def _session(self, connection: AbstractConnection) -> None:
        # A plain connection only resolves `closed()` on an explicit close; a lost transport is
        # reported through close_callbacks, so wait on those.
        lost = asyncio.Event()
        connection.close_callbacks.add(lambda *_: lost.set())
        self.connection = connection
        setup = await connection.channel()
        await declare(setup, self.topology)
        await setup.close()
        async with self._channel_lock:
            await self._open_channel()
        if self.on_connect is not None:
            await self.on_connect(connection)
        self._connected.set()
        log.info("connected to the broker")
        await lost.wait()
        self._connected.clear()
        log.warning("broker connection closed; reconnecting")

    async def _open_channel(self) -> AbstractChannel:
        assert self.connection is not None
        channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        self._exchanges = {"": channel.default_exchange}
        for exchange in self.topology.exchanges:
            self._exchanges[exchange.name] = await channel.get_exchange(exchange.name, ensure=False)
        self._channel = channel
        return channel

    # -- publishing --------------------------------------------------------------------------

    async def _exchange(self, name: str) -> AbstractExchange:
        if self._channel is None or self._channel.is_closed:
            async with self._channel_lock:
                if self._channel is None or self._channel.is_closed:
                    if self.connection is None or self.connection.is_closed:
                        raise BrokerUnavailable("not connected to the broker")
                    await self._open_channel()
        return self._exchanges[name]

    async def publish(self, messages: Sequence[Outgoing], within: float | None = None) -> None:
        """Publish all messages with pipelined confirms; return only when every one is confirmed.

        Raises `BrokerUnavailable` if the broker is down, slow beyond the timeout, nacks a message,
        or returns one as unroutable. Some messages may then have been published: callers retry,
        and consumers deduplicate by event identity.
        """
        if not self._connected.is_set():
            raise BrokerUnavailable("not connected to the broker")
        try:
            async with asyncio.timeout(self.publish_timeout if within is None else within):
                await asyncio.gather(*(self._publish_one(m) for m in messages))
        except TimeoutError:
            raise BrokerUnavailable("the broker did not confirm in time") from None
        except aio_pika.exceptions.DeliveryError as exc:
            raise BrokerUnavailable(f"the broker refused a message: {_delivery_reason(exc)}") from None
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            raise BrokerUnavailable(f"broker error: {type(exc).__name__}") from None

    async def _publish_one(self, message: Outgoing) -> None:
        exchange = await self._exchange(message.exchange)
        await exchange.publish(
            aio_pika.Message(
                message.body,
                message_id=message.message_id,
                content_type=message.content_type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                headers=message.headers,
                type=message.type,
                expiration=message.expiration,
            ),
            routing_key=message.routing_key,
            mandatory=message.mandatory,
        )

    async def queue_counts(self, name: str) -> tuple[int, int]:
        """(ready messages, consumers) of a queue, by a passive declare on a short-lived channel."""
        if self.connection is None or self.connection.is_closed:
            raise BrokerUnavailable("not connected to the broker")
        channel = await self.connection.channel()
        try:
            queue = await channel.declare_queue(name, passive=True)
            result = queue.declaration_result
            return result.message_count or 0, result.consumer_count or 0
        finally:
            await channel.close()


def _delivery_reason(exc: aio_pika.exceptions.DeliveryError) -> str:
    frame = exc.frame
    if isinstance(frame, aiormq.spec.Basic.Return):
        return f"unroutable ({frame.reply_text})"
    return "nacked"


async def declare_once(url: str, topology: Topology, connect_timeout: float = 10.0) -> list[str]:
    """Connect, declare the whole topology, disconnect; returns the names declared."""
    connection = await aio_pika.connect(url, timeout=connect_timeout)
    try:
        channel = await connection.channel()
        await declare(channel, topology)
    finally:
        await connection.close()
    return [e.name for e in topology.exchanges] + [q.name for q in topology.queues]
