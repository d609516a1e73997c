"""The broker edge: supervised AMQP connections, and confirmed publishing.

aio-pika's robust connection waits without bound while the broker is away and has lost
consumers on reconnect in the past, so payrelay keeps its own small supervisor instead: connect,
declare the topology, run the role's `on_connect` hook, wait for the connection to close, and
connect again every `reconnect_seconds`. Publishing never waits longer than its timeout.

A process that consumes keeps a second `Broker` for that (`publishes=False`): RabbitMQ blocks a
connection that publishes during a resource alarm (`connection.blocked`), and acknowledgements on
a blocked connection would stop too. A queue declared with other arguments than the
configuration's (`PRECONDITION_FAILED`) is not retried for ever: the supervisor stops with a
`TopologyMismatch` that says which queue and argument, and how to migrate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection

from service.topology import Topology, check, declare

log = logging.getLogger("payrelay.broker")

CLOUDEVENTS_JSON = "application/cloudevents+json"


class BrokerUnavailable(Exception):
    """The broker did not durably accept a publish in time (down, slow, nack or unroutable)."""


class TopologyMismatch(Exception):
    """The broker holds a queue or exchange declared differently: only an operator can resolve it."""


MAX_MISSING_WAIT = 30.0  # seconds between checks while the topology is missing, at most


class TopologyMissing(Exception):
    """A role that only checks the topology (`amqp_declare = "check"`) found part of it missing."""


_SHORT_STRING = 255  # AMQP short strings (message_id, type, content_type) are at most 255 bytes
PERSISTENT = 2  # delivery_mode: written to disk (quorum queues keep every message anyway)


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


class Publisher(Protocol):
    """What publishing durably takes: `Broker` in production, `MemoryPublisher` in HTTP tests."""

    @property
    def ready(self) -> bool: ...

    async def publish(self, messages: Sequence[Outgoing], within: float | None = None) -> None: ...


class MemoryPublisher:
    """A publisher that keeps what it is given, for testing HTTP contracts in-process.

    Messages are built (and checked) exactly as `Broker` builds them; `refuse` makes every
    publish fail as a broker that is down or nacks would, and `ready` is what `/readyz` sees.
    """

    def __init__(self) -> None:
        self.published: list[Outgoing] = []
        self.refuse: str | None = None
        self.ready = True

    async def publish(self, messages: Sequence[Outgoing], within: float | None = None) -> None:
        for message in messages:
            _properties(message)
        if self.refuse is not None:
            raise BrokerUnavailable(self.refuse)
        self.published.extend(messages)


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
        publishes: bool = True,
        declares: bool = True,
    ) -> None:
        self.url = url
        self.topology = topology
        self.publish_timeout = publish_timeout
        self.reconnect_seconds = reconnect_seconds
        self.on_connect = on_connect
        self.name = name
        self.publishes = publishes
        self.declares = declares  # False: passive checks only (a broker user that may not configure)
        self.failure: TopologyMismatch | None = None
        self.connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._channel_lock = asyncio.Lock()
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, wait: float | None = None) -> None:
        """Start the supervisor; with `wait`, also wait that long for a first connection.

        Raises `TopologyMismatch` if the broker refused the topology within that wait.
        """
        self._task = asyncio.create_task(self._supervise(), name=f"{self.name}-broker")
        if wait:
            connected = asyncio.create_task(self._connected.wait())
            await asyncio.wait({connected, self._task}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            connected.cancel()
            if self.failure is not None:
                raise self.failure

    async def failed(self) -> TopologyMismatch:
        """Wait until the supervisor gives up for good (a topology mismatch); returns why."""
        assert self._task is not None, "start() first"
        with contextlib.suppress(TopologyMismatch):
            await asyncio.shield(self._task)
        assert self.failure is not None
        return self.failure

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TopologyMismatch):
                await self._task
        if self.connection is not None and not self.connection.is_closed:
            await self.connection.close()

    @property
    def ready(self) -> bool:
        """True when connected (and, for a publishing broker, its channel open and not blocked)."""
        connected = self._connected.is_set() and self.connection is not None and not self.connection.is_closed
        if not self.publishes:
            return connected
        return connected and self._channel is not None and not self._channel.is_closed and not self.blocked

    @property
    def blocked(self) -> bool:
        """True while RabbitMQ blocks this connection's publishing (a memory or disk alarm)."""
        if self.connection is None or self.connection.is_closed:
            return False
        # aiormq tracks connection.blocked/unblocked in a private event and offers no accessor
        # (aio-pika's transport wraps the aiormq connection); the test of the alarm pins it down.
        underlay = getattr(self.connection.transport, "connection", None)
        unblocked = getattr(underlay, "_Connection__connection_unblocked", None)
        return isinstance(unblocked, asyncio.Event) and not unblocked.is_set()

    async def _supervise(self) -> None:
        missing_wait = self.reconnect_seconds  # grows while the topology job has not run yet
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
            except TopologyMismatch as mismatch:
                log.error("%s", mismatch)
                self.failure = mismatch
                with contextlib.suppress(Exception):
                    await connection.close()
                raise
            except TopologyMissing as missing:
                log.warning("%s; checking again in %.0fs", missing, missing_wait)
                await asyncio.sleep(missing_wait - self.reconnect_seconds)
                missing_wait = min(missing_wait * 2, MAX_MISSING_WAIT)
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
        await _settle_topology(setup, self.topology, self.declares)
        await setup.close()
        if self.publishes:
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
        self._channel = channel
        return channel

    # -- publishing --------------------------------------------------------------------------

    async def publish(self, messages: Sequence[Outgoing], within: float | None = None) -> None:
        """Publish all messages with pipelined confirms; return only when every one is confirmed.

        Raises `BrokerUnavailable` if the broker is down, slow beyond the timeout, nacks a message,
        or returns one as unroutable. Some messages may then have been published: callers retry,
        and consumers deduplicate by event identity.

        Published on aiormq's channel beneath aio-pika's, with the properties built once here:
        aio-pika's `Message` and `Exchange.publish` cost a third of a single-event request.
        """
        prepared = [(message, _properties(message)) for message in messages]  # all built before any goes
        if not self._connected.is_set():
            raise BrokerUnavailable("not connected to the broker")
        try:
            async with asyncio.timeout(self.publish_timeout if within is None else within):
                channel = await self._underlay()
                if len(prepared) == 1:
                    await _publish_one(channel, *prepared[0])
                else:
                    await asyncio.gather(*(_publish_one(channel, m, p) for m, p in prepared))
        except TimeoutError:
            raise BrokerUnavailable("the broker did not confirm in time") from None
        except aiormq.exceptions.DeliveryError as exc:
            raise BrokerUnavailable(f"the broker refused a message: {_delivery_reason(exc)}") from None
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            raise BrokerUnavailable(f"broker error: {type(exc).__name__}") from None

    async def _underlay(self) -> aiormq.abc.AbstractChannel:
        """aiormq's channel beneath the publishing one, reopened first if it was closed."""
        if self._channel is None or self._channel.is_closed:
            async with self._channel_lock:
                if self._channel is None or self._channel.is_closed:
                    if self.connection is None or self.connection.is_closed:
                        raise BrokerUnavailable("not connected to the broker")
                    await self._open_channel()
        assert self._channel is not None
        return await self._channel.get_underlay_channel()

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


def _properties(message: Outgoing) -> aiormq.spec.Basic.Properties:
    """The AMQP properties, or ValueError before anything is published if one cannot be encoded."""
    for name in ("message_id", "content_type", "type"):
        value = getattr(message, name)
        if value is not None and len(value.encode()) > _SHORT_STRING:
            raise ValueError(f"{name} is longer than {_SHORT_STRING} bytes: AMQP cannot carry it")
    expiration = message.expiration
    return aiormq.spec.Basic.Properties(
        message_id=message.message_id,
        content_type=message.content_type,
        delivery_mode=PERSISTENT,
        headers=message.headers,
        message_type=message.type,
        expiration=None if expiration is None else str(int(expiration * 1000)),  # milliseconds
    )


async def _publish_one(
    channel: aiormq.abc.AbstractChannel, message: Outgoing, properties: aiormq.spec.Basic.Properties
) -> None:
    """One message, confirmed; aiormq raises DeliveryError on a nack and on a return (mandatory)."""
    await channel.basic_publish(
        message.body,
        exchange=message.exchange,
        routing_key=message.routing_key,
        properties=properties,
        mandatory=message.mandatory,
    )


def _mismatch(exc: aiormq.exceptions.ChannelPreconditionFailed) -> str:
    """Say what RabbitMQ refused and how to get out of it, in one line."""
    reply = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
    return (
        f"RabbitMQ refused payrelay's topology: {reply}. A queue's arguments (x-delivery-limit, "
        "the retry tiers' TTLs) cannot change once it exists: drain the queue and delete it "
        "(rabbitmqctl delete_queue NAME) so payrelay declares it anew, or keep the old value, or "
        "move to a new PAYRELAY_AMQP_PREFIX"
    )


def _delivery_reason(exc: aiormq.exceptions.DeliveryError) -> str:
    frame = exc.frame
    if isinstance(frame, aiormq.spec.Basic.Return):
        return f"unroutable ({frame.reply_text})"
    return "nacked"


async def _settle_topology(channel: AbstractChannel, topology: Topology, declares: bool) -> None:
    """Declare the topology, or only check it exists; a mismatch or a gap as payrelay's own error."""
    try:
        await (declare if declares else check)(channel, topology)
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        raise TopologyMismatch(_mismatch(exc)) from None
    except aiormq.exceptions.ChannelNotFoundEntity as exc:
        raise TopologyMissing(
            f"the broker has no {_quoted_name(exc)}: run `payrelay topology declare` (the topology job)"
        ) from None


def _quoted_name(exc: Exception) -> str:
    found = re.search(r"(exchange|queue) '([^']*)'", str(exc))
    return f"{found.group(1)} {found.group(2)!r}" if found else "part of the topology"


async def declare_once(
    url: str, topology: Topology, connect_timeout: float = 10.0, *, declares: bool = True
) -> list[str]:
    """Connect, declare the whole topology (or only check it), disconnect; returns the names."""
    connection = await aio_pika.connect(url, timeout=connect_timeout)
    try:
        await _settle_topology(await connection.channel(), topology, declares)
    finally:
        await connection.close()
    return [e.name for e in topology.exchanges] + [q.name for q in topology.queues]
