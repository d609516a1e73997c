"""W3C trace context: the `traceparent` payrelay carries from HTTP through AMQP to Chargebee.

payrelay does not start spans of its own; it passes the sender's `traceparent` along (request →
message headers → the Chargebee call → confirmation headers) and logs its trace id, so that one
payment can be followed across the receiver and the consumer.
"""

from __future__ import annotations

import re

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}\Z")


def valid(traceparent: str | None) -> str | None:
    """The header if it is a well-formed traceparent, else None (garbage is not passed on)."""
    if traceparent and _TRACEPARENT.match(traceparent) and traceparent[3:35] != "0" * 32:
        return traceparent
    return None


def log_suffix(traceparent: str | None) -> str:
    """` trace=<trace-id>` for a log line, or nothing."""
    checked = valid(traceparent)
    return f" trace={checked[3:35]}" if checked else ""
