"""decide / pick_tier / busy: how an error and an attempt count become ack, retry or dead-letter."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumers.dispositions import DeadLetter, Requeue, Retry, busy, decide, pick_tier
from consumers.errors import (
    ConfigurationFault,
    InvalidEvent,
    InvoiceNotFound,
    InvoiceNotPayable,
    PermanentError,
    RejectedByChargebee,
    TransientError,
    UnmatchedInvoice,
)
from service.topology import RetryTier, build

TIERS = build("payrelay", [5, 30, 120, 600, 1800], 20).retry_tiers
DELAYS = [tier.delay_seconds for tier in TIERS]
MAX_ATTEMPTS = 6
BODY = {"message": "nope", "api_error_code": "some_code", "type": "invalid_request"}


def rng() -> random.Random:
    return random.Random(1234)


# -- decide --------------------------------------------------------------------------------------


def test_configuration_fault_requeues() -> None:
    """Refused credentials are nobody's message fault: give the message back."""
    error = ConfigurationFault("Chargebee 401", status=401)
    assert isinstance(decide(error, 3, MAX_ATTEMPTS, TIERS, rng()), Requeue)


def test_configuration_fault_requeues_even_at_max_attempts() -> None:
    """A credentials fault never exhausts a message's attempts."""
    error = ConfigurationFault("Chargebee 403", status=403)
    assert isinstance(decide(error, MAX_ATTEMPTS, MAX_ATTEMPTS, TIERS, rng()), Requeue)


@pytest.mark.parametrize(
    ("cls", "reason"),
    [
        (InvalidEvent, "invalid_event"),
        (UnmatchedInvoice, "unmatched_invoice"),
        (InvoiceNotFound, "invoice_not_found"),
        (InvoiceNotPayable, "invoice_not_payable"),
        (RejectedByChargebee, "rejected_by_chargebee"),
        (PermanentError, "rejected_by_chargebee"),
    ],
)
def test_permanent_error_dead_letters_with_its_reason(cls: type[PermanentError], reason: str) -> None:
    """Each permanent error dead-letters at once, with its reason, the message and the body."""
    disposition = decide(cls("what went wrong", chargebee=BODY), 2, MAX_ATTEMPTS, TIERS, rng())
    assert disposition == DeadLetter(reason, "what went wrong", 3, BODY)


def test_permanent_error_on_first_attempt_counts_one() -> None:
    """attempts is the previous count plus the one that just failed."""
    disposition = decide(InvoiceNotFound("gone"), 0, MAX_ATTEMPTS, TIERS, rng())
    assert isinstance(disposition, DeadLetter)
    assert disposition.attempts == 1
    assert disposition.chargebee is None


@pytest.mark.parametrize("previous", range(MAX_ATTEMPTS - 1))
def test_transient_error_below_max_retries_on_the_tier_for_the_attempt(previous: int) -> None:
    """Attempt n (1-based) goes to tier n, or the last tier once the tiers run out."""
    disposition = decide(TransientError("Chargebee 503"), previous, MAX_ATTEMPTS, TIERS, rng())
    assert isinstance(disposition, Retry)
    assert disposition.tier == TIERS[min(previous, len(TIERS) - 1)]
    assert disposition.attempts == previous + 1
    assert disposition.error == "Chargebee 503"


def test_transient_error_retry_delay_is_jittered() -> None:
    """The retry carries a delay of 75-100 % of its tier's."""
    disposition = decide(TransientError("Chargebee 502"), 0, MAX_ATTEMPTS, TIERS, rng())
    assert isinstance(disposition, Retry)
    assert 0.75 * 5 <= disposition.delay <= 5


def test_transient_error_honours_retry_after() -> None:
    """A 429's Retry-After moves the retry to a tier long enough to honour it."""
    error = TransientError("Chargebee 429", retry_after=60)
    disposition = decide(error, 0, MAX_ATTEMPTS, TIERS, rng())
    assert isinstance(disposition, Retry)
    assert disposition.tier.delay_seconds == 120
    assert disposition.delay >= 60


def test_transient_error_at_max_dead_letters_retries_exhausted() -> None:
    """The last allowed attempt failing dead-letters with retries_exhausted and the body."""
    error = TransientError("Chargebee 503", chargebee=BODY, status=503)
    disposition = decide(error, MAX_ATTEMPTS - 1, MAX_ATTEMPTS, TIERS, rng())
    assert disposition == DeadLetter("retries_exhausted", "Chargebee 503", MAX_ATTEMPTS, BODY)


def test_transient_error_beyond_max_dead_letters() -> None:
    """A count already past the limit (e.g. max lowered by config) dead-letters too."""
    disposition = decide(TransientError("timeout"), MAX_ATTEMPTS + 3, MAX_ATTEMPTS, TIERS, rng())
    assert isinstance(disposition, DeadLetter)
    assert disposition.reason == "retries_exhausted"


def test_single_attempt_dead_letters_at_once() -> None:
    """With max_attempts = 1 the first transient failure is final."""
    disposition = decide(TransientError("timeout"), 0, 1, TIERS, rng())
    assert isinstance(disposition, DeadLetter)
    assert disposition.attempts == 1


# -- pick_tier -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failures", "delay"), [(1, 5), (2, 30), (3, 120), (4, 600), (5, 1800), (6, 1800), (50, 1800)]
)
def test_tiers_progress_and_stop_at_the_last(failures: int, delay: int) -> None:
    """The n-th failure takes the n-th tier; past the end, the last one."""
    tier, _ = pick_tier(TIERS, failures, None, rng())
    assert tier.delay_seconds == delay


@pytest.mark.parametrize(
    ("retry_after", "delay"), [(0, 5), (5, 5), (6, 30), (30, 30), (31, 120), (601, 1800), (99999, 1800)]
)
def test_retry_after_raises_to_first_tier_long_enough(retry_after: float, delay: int) -> None:
    """Retry-After picks the first tier whose delay is at least Retry-After (or the last)."""
    tier, _ = pick_tier(TIERS, 1, retry_after, rng())
    assert tier.delay_seconds == delay


def test_retry_after_never_lowers_the_tier() -> None:
    """A short Retry-After on a later failure keeps that failure's longer tier."""
    tier, _ = pick_tier(TIERS, 3, 1.0, rng())
    assert tier.delay_seconds == 120


def test_delay_is_between_75_and_100_percent() -> None:
    """Without Retry-After the delay is jittered within [0.75, 1.0] of the tier's."""
    generator = rng()
    for failures in range(1, 8):
        tier, delay = pick_tier(TIERS, failures, None, generator)
        assert 0.75 * tier.delay_seconds <= delay <= tier.delay_seconds


def test_jitter_varies() -> None:
    """Different draws give different delays, so a burst of failures does not return as one."""
    generator = rng()
    delays = {pick_tier(TIERS, 2, None, generator)[1] for _ in range(20)}
    assert len(delays) > 1


def test_same_seed_same_delay() -> None:
    """The delay depends only on the random source: one seed, one answer."""
    assert pick_tier(TIERS, 2, None, rng()) == pick_tier(TIERS, 2, None, rng())


def test_delay_never_below_retry_after() -> None:
    """Jitter never brings the delay under a Retry-After the tier can honour."""
    for seed in range(200):
        _, delay = pick_tier(TIERS, 2, 29.5, random.Random(seed))
        assert 29.5 <= delay <= 30


def test_delay_is_the_last_tier_when_retry_after_is_longer() -> None:
    """A Retry-After beyond every tier waits the full last tier."""
    tier, delay = pick_tier(TIERS, 1, 7200, rng())
    assert (tier, delay) == (TIERS[-1], 1800)


def test_single_tier() -> None:
    """With one tier, every failure uses it."""
    only = (RetryTier("q.retry.10s", 10),)
    assert [pick_tier(only, n, None, rng())[0] for n in (1, 2, 9)] == [only[0]] * 3


@given(
    failures=st.integers(min_value=1, max_value=100),
    retry_after=st.none() | st.floats(min_value=0, max_value=10_000, allow_nan=False),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_pick_tier_properties(failures: int, retry_after: float | None, seed: int) -> None:
    """For any failure count and Retry-After: the right tier, and a delay within its bounds."""
    tier, delay = pick_tier(TIERS, failures, retry_after, random.Random(seed))
    index = TIERS.index(tier)
    natural = min(failures - 1, len(TIERS) - 1)
    assert index >= natural
    if retry_after is None:
        assert index == natural
    else:
        # the first tier from the natural one that honours Retry-After, else the last
        honouring = [i for i in range(natural, len(TIERS)) if DELAYS[i] >= retry_after]
        assert index == (honouring[0] if honouring else len(TIERS) - 1)
        assert delay >= min(tier.delay_seconds, retry_after)
    assert 0.75 * tier.delay_seconds <= delay <= tier.delay_seconds


# -- busy ----------------------------------------------------------------------------------------


def test_busy_does_not_spend_an_attempt() -> None:
    """Another replica's lease: retry with the attempt count unchanged."""
    assert busy(TIERS, 4, rng()).attempts == 4


def test_busy_uses_the_shortest_tier() -> None:
    """busy looks again after the first tier, whatever the attempt count."""
    retry = busy(TIERS, 4, rng())
    assert retry.tier == TIERS[0]
    assert 0.75 * 5 <= retry.delay <= 5


def test_every_reason_the_consumer_gives_is_one_the_operators_know() -> None:
    """Each PermanentError's reason, and retries_exhausted, is in the shared vocabulary (SPEC §6)."""
    import consumers.errors as errors
    from service.messages import DEAD_LETTER_REASONS

    classes = [
        c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.PermanentError)
    ]
    assert {c.reason for c in classes} | {"retries_exhausted"} <= set(DEAD_LETTER_REASONS)
