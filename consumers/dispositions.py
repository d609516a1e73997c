"""What happens to a message: the one place an outcome or error becomes ack, retry or dead-letter.

Pure: `decide` takes the error and the attempt count and returns a disposition; the worker
applies it. Retry tiers are the topology's TTL queues; a per-message expiration of 75-100 % of the
tier's delay adds jitter so that a burst of failures does not come back as a burst.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from consumers.errors import Busy, ConfigurationFault, PaymentError, PermanentError, TransientError
from service.review.model import NewReview
from service.topology import RetryTier


@dataclass(frozen=True, slots=True)
class Ack:
    outcome: str  # recorded | duplicate


@dataclass(frozen=True, slots=True)
class Retry:
    tier: RetryTier
    delay: float
    attempts: int  # attempts made so far, carried in x-payrelay-attempts
    error: str


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str
    error: str
    attempts: int
    chargebee: dict[str, Any] | None = None
    invoice_id: str | None = None  # the invoice it was for, when known (found in the remittance, say)


@dataclass(frozen=True, slots=True)
class Requeue:
    """Give the message back untouched (credentials refused, broker trouble, a bug).

    `delay` holds the message (and its prefetch slot) before the nack, so that a failure which
    repeats at once does not spin through the queue's delivery limit in a second.
    """

    why: str
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class Review:
    """Keep the payment in review for a person (SPEC §10), then ack it."""

    item: NewReview


Disposition = Ack | Retry | DeadLetter | Requeue | Review


def pick_tier(
    tiers: tuple[RetryTier, ...], failures: int, retry_after: float | None, rng: random.Random
) -> tuple[RetryTier, float]:
    """The tier for the n-th failure (1-based), raised to honour Retry-After; and a jittered delay."""
    index = min(failures - 1, len(tiers) - 1)
    if retry_after is not None:
        while index < len(tiers) - 1 and tiers[index].delay_seconds < retry_after:
            index += 1
    tier = tiers[index]
    floor = min(float(tier.delay_seconds), retry_after) if retry_after is not None else 0.0
    delay = max(floor, tier.delay_seconds * rng.uniform(0.75, 1.0))
    return tier, delay


def decide(
    error: PaymentError, attempts: int, max_attempts: int, tiers: tuple[RetryTier, ...], rng: random.Random
) -> Disposition:
    """`attempts` counts Chargebee attempts before this one; this one just failed with `error`."""
    made = attempts + 1
    if isinstance(error, Busy):
        return busy(tiers, attempts, rng)
    if isinstance(error, ConfigurationFault):
        return Requeue("chargebee credentials refused")
    if isinstance(error, PermanentError):
        return DeadLetter(error.reason, str(error), made, error.chargebee)
    if isinstance(error, TransientError):
        if made >= max_attempts:
            return DeadLetter("retries_exhausted", str(error), made, error.chargebee)
        tier, delay = pick_tier(tiers, made, error.retry_after, rng)
        return Retry(tier, delay, made, str(error))
    raise TypeError(f"not a PaymentError class the worker knows: {type(error).__name__}")


def busy(tiers: tuple[RetryTier, ...], attempts: int, rng: random.Random) -> Retry:
    """Another replica holds the event's lease: look again after the shortest tier, no attempt spent."""
    tier, delay = pick_tier(tiers, 1, None, rng)
    return Retry(tier, delay, attempts, "another consumer is recording this event")
