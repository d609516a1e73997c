"""Queue depths, consumers and rates of the work queue, the retry tiers and the dead-letter queue.

Two sources, combined per queue:

- the AMQP connection (a passive declare): ready messages and consumers, exact and current;
- RabbitMQ's management API (`GET /api/queues/{vhost}/{name}`, when `amqp_management_url` is set
  and answers): unacknowledged messages and publish/deliver rates, which AMQP cannot tell.

The management API refreshes its figures every few seconds (`collect_statistics_interval`), so
it is used for ready/consumers only when the AMQP connection is down. Without it, `unacked` and
the rates are None ("unknown"). Management credentials are the user and password of
`amqp_url`; neither they nor the URL (which may carry them) is ever logged or returned.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import weakref
from dataclasses import asdict, dataclass, field, replace
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import aiohttp
from yarl import URL

from service.broker import Broker, BrokerUnavailable
from service.metrics import Metrics
from service.settings import Settings
from service.topology import Topology

log = logging.getLogger("payrelay.queue_stats")

MANAGEMENT_TIMEOUT_SECONDS = 3.0


@dataclass(frozen=True, slots=True)
class QueueStat:
    """One queue's figures; counts are messages, rates messages per second (None when unknown)."""

    name: str
    ready: int
    unacked: int | None
    consumers: int
    publish_rate: float | None
    deliver_rate: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def queue_names(topology: Topology) -> list[str]:
    """The queues an operator watches: work, retry tiers (shortest first), dead letters."""
    return [topology.work_queue, *(t.queue for t in topology.retry_tiers), topology.dead_letter]


@dataclass(frozen=True, slots=True)
class _Management:
    """Where and as whom to ask the management API; built from settings, never logged."""

    base: URL
    authorization: str = field(repr=False)  # the Basic credentials header
    vhost: str = "/"

    @classmethod
    def from_settings(cls, settings: Settings) -> _Management | None:
        if not settings.broker.management_url:
            return None
        amqp = urlsplit(settings.broker.url.get_secret_value())
        base = URL(settings.broker.management_url)
        if base.user is not None:  # credentials in the management URL win over amqp_url's
            user, password = base.user, base.password or ""
            base = base.with_user(None)
        else:
            user, password = unquote(amqp.username or "guest"), unquote(amqp.password or "guest")
        credentials = base64.b64encode(f"{user}:{password}".encode()).decode()
        path = amqp.path[1:] if amqp.path.startswith("/") else amqp.path
        return cls(base=base, authorization=f"Basic {credentials}", vhost=unquote(path) or "/")

    def queue_url(self, name: str) -> URL:
        path = f"/api/queues/{quote(self.vhost, safe='')}/{quote(name, safe='')}"
        return URL(str(self.base).rstrip("/") + path, encoded=True)


def _rate(stats: dict[str, Any], key: str) -> float:
    details = stats.get(key)
    if isinstance(details, dict) and isinstance(details.get("rate"), int | float):
        return float(details["rate"])
    return 0.0  # the management API omits a rate that has never been non-zero


async def _from_management(
    management: _Management, session: aiohttp.ClientSession, name: str
) -> QueueStat | None:
    timeout = aiohttp.ClientTimeout(total=MANAGEMENT_TIMEOUT_SECONDS)
    try:
        headers = {"Authorization": management.authorization}
        async with session.get(management.queue_url(name), headers=headers, timeout=timeout) as response:
            if response.status != 200:
                log.debug("management API answered %d for queue %s", response.status, name)
                return None
            body = await response.json()
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        log.debug("management API unavailable for queue %s: %s", name, type(exc).__name__)
        return None
    if not isinstance(body, dict):
        return None
    stats = body.get("message_stats")
    stats = stats if isinstance(stats, dict) else {}
    return QueueStat(
        name=name,
        ready=int(body.get("messages_ready") or 0),
        unacked=int(body.get("messages_unacknowledged") or 0),
        consumers=int(body.get("consumers") or 0),
        publish_rate=_rate(stats, "publish_details"),
        deliver_rate=_rate(stats, "deliver_get_details"),
    )


async def _from_broker(broker: Broker, name: str) -> QueueStat | None:
    try:
        ready, consumers = await broker.queue_counts(name)
    except BrokerUnavailable:
        return None
    except Exception as exc:  # a closed channel or a queue not declared (yet): unknown, not fatal
        log.debug("passive declare of %s failed: %s", name, type(exc).__name__)
        return None
    return QueueStat(name, ready, None, consumers, None, None)


async def _all_from_management(
    management: _Management | None, session: aiohttp.ClientSession | None, names: list[str]
) -> list[QueueStat | None]:
    if management is None:
        return [None] * len(names)
    if session is None:
        async with aiohttp.ClientSession() as own:
            return await _all_from_management(management, own, names)
    return list(await asyncio.gather(*(_from_management(management, session, n) for n in names)))


def _combine(name: str, amqp: QueueStat | None, managed: QueueStat | None) -> QueueStat:
    if amqp is not None and managed is not None:
        return replace(managed, ready=amqp.ready, consumers=amqp.consumers)
    if amqp is not None:
        return amqp
    if managed is not None:
        return managed
    raise BrokerUnavailable(f"neither the broker nor its management API has figures for queue {name}")


@dataclass(slots=True)
class _Recent:
    """A broker's figures of late: what was asked (queues, management URL), when, and the answer."""

    asked: tuple[object, ...] = ()
    taken_at: float = float("-inf")
    stats: list[QueueStat] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


# Per broker, and gone with it. A cache, not configuration: it only spares the broker a channel per
# queue on every scrape and dashboard refresh (the management API itself samples every 5 s).
_RECENT: weakref.WeakKeyDictionary[Broker, _Recent] = weakref.WeakKeyDictionary()
MAX_AGE_SECONDS = 5.0


async def queue_stats(
    settings: Settings,
    broker: Broker,
    session: aiohttp.ClientSession | None,
    metrics: Metrics | None = None,
) -> list[QueueStat]:
    """Figures for every watched queue, in `queue_names` order; raises BrokerUnavailable if none known.

    Figures at most MAX_AGE_SECONDS old are reused: however often (and however many at once) the
    callers ask, the broker sees one passive declare per queue in that time. Without `session`, a
    short-lived one is opened when the management API is configured.
    """
    names = queue_names(settings.broker.topology())
    asked = (*names, settings.broker.management_url)
    recent = _RECENT.setdefault(broker, _Recent())
    async with recent.lock:  # concurrent callers wait for one refresh rather than each making theirs
        now = asyncio.get_running_loop().time()
        if recent.asked != asked or now - recent.taken_at > MAX_AGE_SECONDS:
            recent.stats = await _fresh(settings, broker, session, names)
            recent.asked, recent.taken_at = asked, asyncio.get_running_loop().time()
        stats = list(recent.stats)
    if metrics is not None:
        record(metrics, stats)
    return stats


async def _fresh(
    settings: Settings, broker: Broker, session: aiohttp.ClientSession | None, names: list[str]
) -> list[QueueStat]:
    amqp, managed = await asyncio.gather(
        asyncio.gather(*(_from_broker(broker, n) for n in names)),
        _all_from_management(_Management.from_settings(settings), session, names),
    )
    return [_combine(n, a, m) for n, a, m in zip(names, amqp, managed, strict=True)]


def record(metrics: Metrics, stats: list[QueueStat]) -> None:
    """Set the queue gauges; an unknown unacked count removes its series rather than leave it stale."""
    for stat in stats:
        metrics.queue_messages.labels(stat.name, "ready").set(stat.ready)
        if stat.unacked is not None:
            metrics.queue_messages.labels(stat.name, "unacked").set(stat.unacked)
        else:
            with contextlib.suppress(KeyError):
                metrics.queue_messages.remove(stat.name, "unacked")
        metrics.queue_consumers.labels(stat.name).set(stat.consumers)
