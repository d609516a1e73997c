"""`payrelay check`: is the configuration valid, and can we reach what it names?"""

from __future__ import annotations

import aio_pika
import aiohttp

from consumers.chargebee import ChargebeeClient
from consumers.errors import ConfigurationFault, PaymentError
from consumers.rate_limit import RateLimiter
from service.cli.mistakes import in_own_words
from service.metrics import create_metrics
from service.settings import ConfigError, Settings


async def _broker(settings: Settings) -> str:
    topology = settings.broker.topology()
    connection = await aio_pika.connect(settings.broker.url.get_secret_value(), timeout=5)
    try:
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(topology.work_queue, passive=True)
        except aio_pika.exceptions.ChannelClosed:
            return "reachable; topology not declared yet (run `payrelay topology declare`)"
        result = queue.declaration_result
        counts = f"{result.message_count} ready, {result.consumer_count} consumers"
        return f"reachable; {topology.work_queue}: {counts}"
    finally:
        await connection.close()


async def _ledger(settings: Settings) -> str:
    ledger = await settings.ledger.open()
    try:
        await ledger.recent(limit=1)
    finally:
        await ledger.close()
    return "reachable; schema ready"


async def _chargebee(settings: Settings) -> str:
    async with aiohttp.ClientSession() as session:
        client = ChargebeeClient(
            session,
            api_base=settings.chargebee.api_base,
            api_key=settings.chargebee.api_key.get_secret_value(),
            api_version=settings.chargebee.api_version,
            limiter=RateLimiter(0),
            metrics=create_metrics(),
            timeout=10,
        )
        await client.check_auth()
    return f"API key accepted by {settings.chargebee.api_base}"


async def run_checks(settings: Settings) -> int:
    """Print one line per dependency; exit 0 only if every one is fine."""
    failures = 0
    print(
        f"config: valid; {len(settings.sources)} source(s): {', '.join(sorted(settings.sources)) or 'none'}"
    )
    for name, probe in (("broker", _broker), ("ledger", _ledger), ("chargebee", _chargebee)):
        try:
            print(f"{name}: {await probe(settings)}")
        except ConfigurationFault as exc:
            failures += 1
            print(f"{name}: FAILED: Chargebee refuses payrelay's configuration: {exc}")
        except (ConfigError, PaymentError) as exc:
            failures += 1
            print(f"{name}: FAILED: {exc}")
        except Exception as exc:  # any unreachable dependency is a failed check, named by its type
            failures += 1
            kind, said = in_own_words(exc)
            print(f"{name}: FAILED: {kind}: {said[:200]}")
    return 1 if failures else 0
