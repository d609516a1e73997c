"""classify: Chargebee answers -> the error tree; RateLimiter spacing; response parsing."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from consumers.chargebee import RecordPaymentResponse, classify
from consumers.errors import (
    ConfigurationFault,
    InvoiceNotFound,
    InvoiceNotPayable,
    RejectedByChargebee,
    TransientError,
)
from consumers.rate_limit import RateLimiter


def body(code: str | None, message: str = "something", kind: str = "invalid_request") -> dict[str, Any]:
    out: dict[str, Any] = {"message": message, "type": kind, "http_status_code": 400}
    if code is not None:
        out["api_error_code"] = code
    return out


# -- classify ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
def test_auth_refusal_is_a_configuration_fault(status: int) -> None:
    """401 and 403 are our fault (credentials), not the message's."""
    error = classify(status, body("api_authentication_failed", kind="operation_failed"), None)
    assert type(error) is ConfigurationFault
    assert error.status == status


def test_404_is_invoice_not_found() -> None:
    """404 resource_not_found: the invoice does not exist."""
    error = classify(404, body("resource_not_found"), None)
    assert type(error) is InvoiceNotFound
    assert error.reason == "invoice_not_found"


@pytest.mark.parametrize(
    "answer",
    [
        {"api_error_code": "site_not_found", "message": "Sorry, the site was not found"},
        {"message": "<html>404</html>"},
        {},
    ],
)
def test_a_404_that_is_not_about_the_invoice_is_a_configuration_fault(answer: dict[str, str]) -> None:
    """site_not_found, a proxy's HTML page or a wrong base path: pause, never invoice_not_found."""
    error = classify(404, answer, None)
    assert type(error) is ConfigurationFault
    assert "PAYRELAY_CHARGEBEE_SITE" in str(error)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_a_configuration_fault(status: int) -> None:
    """Chargebee does not redirect its API: a 3xx means payrelay points at the wrong place."""
    assert type(classify(status, {"message": "Moved"}, None)) is ConfigurationFault


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_5xx_to_record_payment_may_have_recorded_it(status: int) -> None:
    """A server error answers nothing about the payment: it is marked maybe recorded, a read's is not."""
    write = classify(status, body("internal_error"), None)
    read = classify(status, body("internal_error"), None, write=False)
    assert isinstance(write, TransientError) and write.maybe_recorded is True
    assert isinstance(read, TransientError) and read.maybe_recorded is False


@pytest.mark.parametrize(("status", "code"), [(429, "api_request_limit_exceeded"), (429, "lock_timeout")])
def test_a_429_recorded_nothing(status: int, code: str) -> None:
    """A rate-limit or lock refusal is a verdict: Chargebee did not process the request."""
    error = classify(status, body(code), 3.0)
    assert isinstance(error, TransientError) and error.maybe_recorded is False


@pytest.mark.parametrize("status", [409, 400])
def test_invalid_state_is_invoice_not_payable(status: int) -> None:
    """invalid_state_for_request (409, or on a 400) means the invoice cannot take a payment."""
    error = classify(status, body("invalid_state_for_request"), None)
    assert type(error) is InvoiceNotPayable
    assert error.reason == "invoice_not_payable"


def test_409_without_code_is_invoice_not_payable() -> None:
    """A bare 409 is a state conflict on the invoice, too."""
    assert type(classify(409, {}, None)) is InvoiceNotPayable


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, "param_wrong_value"), (400, "payment_method_verification_failed"), (422, None), (400, None)],
)
def test_other_client_errors_are_rejections(status: int, code: str | None) -> None:
    """Any other 400/422 is rejected_by_chargebee."""
    error = classify(status, body(code), None)
    assert type(error) is RejectedByChargebee
    assert error.reason == "rejected_by_chargebee"


def test_rejection_keeps_chargebee_body() -> None:
    """The error body is kept on `.chargebee` for the dead letter, and its message in str()."""
    answer = body("param_wrong_value", message="amount : cannot be more than the amount due")
    error = classify(400, answer, None)
    assert error.chargebee == answer
    assert error.status == 400
    assert "amount : cannot be more than the amount due" in str(error)
    assert "param_wrong_value" in str(error)


def test_429_is_transient_with_retry_after() -> None:
    """429 is retried later, carrying the server's Retry-After."""
    error = classify(429, body("api_request_limit_exceeded", kind="operation_failed"), 42.0)
    assert type(error) is TransientError
    assert error.retry_after == 42.0


def test_429_without_retry_after() -> None:
    """429 without Retry-After is still transient, with no hint."""
    error = classify(429, {}, None)
    assert isinstance(error, TransientError)
    assert error.retry_after is None


def test_lock_timeout_on_400_is_transient() -> None:
    """lock_timeout is Chargebee's 'busy, try again' even on a 400."""
    error = classify(400, body("lock_timeout"), 3.0)
    assert type(error) is TransientError
    assert error.retry_after == 3.0


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_transient(status: int) -> None:
    """5xx is retried, keeping the body and Retry-After."""
    answer = {"message": "Sorry, something went wrong"}
    error = classify(status, answer, 7.0)
    assert type(error) is TransientError
    assert (error.status, error.chargebee, error.retry_after) == (status, answer, 7.0)


# -- RateLimiter ---------------------------------------------------------------------------------


async def test_zero_per_minute_never_waits() -> None:
    """per_minute = 0 disables the limit: a thousand permits come at once."""
    limiter = RateLimiter(0)
    started = time.monotonic()
    await asyncio.gather(*(limiter.acquire() for _ in range(1000)))
    assert time.monotonic() - started < 0.5


async def permit_times(limiter: RateLimiter, count: int) -> list[float]:
    """Run `count` concurrent acquires; return when each permit was granted, in order."""
    times: list[float] = []

    async def one() -> None:
        await limiter.acquire()
        times.append(time.monotonic())

    await asyncio.gather(*(one() for _ in range(count)))
    return sorted(times)


async def test_concurrent_permits_are_spaced_by_the_interval() -> None:
    """600/min: 30 concurrent callers get permits at least 0.1 s apart."""
    times = await permit_times(RateLimiter(600), 30)
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    assert min(gaps) >= 0.1, f"permits {min(gaps):.4f} s apart"


async def test_no_window_holds_more_than_the_limit() -> None:
    """600/min: no 60 s window holds over 600 permits, no 1 s window over 10."""
    times = await permit_times(RateLimiter(600), 30)
    for window, limit in ((60.0, 600), (1.0, 10)):
        busiest = max(sum(1 for t in times if start <= t < start + window) for start in times)
        assert busiest <= limit, f"{busiest} permits in {window} s"


async def test_late_waiter_does_not_let_the_next_permit_come_early() -> None:
    """A waiter woken late (the loop was busy) still leaves a full interval before the next permit.

    The loop is blocked 0.15-0.23 s, so the permit due at ~0.2 s is granted at ~0.23 s; the
    one due at ~0.3 s must then wait until ~0.33 s, or two requests go out 0.07 s apart.
    """
    loop = asyncio.get_running_loop()
    loop.call_later(0.15, time.sleep, 0.08)  # a blocking call in some other task
    times = await permit_times(RateLimiter(600), 5)
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    assert min(gaps) >= 0.1, f"permits {min(gaps):.4f} s apart"


# -- RecordPaymentResponse -----------------------------------------------------------------------


def test_parses_minimal_response() -> None:
    """The invoice and transaction ids, status and amounts are read from Chargebee's JSON."""
    raw = orjson.dumps(
        {
            "invoice": {"id": "INV-1", "status": "paid", "amount_due": 0, "currency_code": "USD"},
            "transaction": {"id": "txn_1", "amount": 125000},
        }
    )
    parsed = RecordPaymentResponse.model_validate_json(raw)
    assert (parsed.invoice.id, parsed.invoice.status, parsed.invoice.amount_due) == ("INV-1", "paid", 0)
    assert (parsed.transaction.id, parsed.transaction.amount) == ("txn_1", 125000)
    assert parsed.invoice.currency_code == "USD"


def test_ignores_extra_fields() -> None:
    """Fields payrelay does not use, at any level, are ignored rather than rejected."""
    raw = orjson.dumps(
        {
            "invoice": {
                "id": "INV-1",
                "status": "payment_due",
                "amount_due": 500,
                "currency_code": "USD",
                "customer_id": "cust_1",
                "line_items": [{"id": "li_1"}],
                "object": "invoice",
            },
            "transaction": {"id": "txn_1", "gateway": "not_applicable", "object": "transaction"},
            "customer": {"id": "cust_1"},
        }
    )
    parsed = RecordPaymentResponse.model_validate_json(raw)
    assert (parsed.invoice.status, parsed.invoice.amount_due) == ("payment_due", 500)
    assert parsed.transaction.amount is None
    assert not hasattr(parsed, "customer")
