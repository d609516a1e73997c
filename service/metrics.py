"""Prometheus metrics: every `payrelay_` series, in one registry per process (no globals).

Names are in base units; labels carry bounded values only (sources, types, statuses, reasons),
never event or invoice ids.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_HTTP = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class Metrics:
    """The metric families of all roles; each process exposes the ones it moves."""

    registry: CollectorRegistry
    ingest_events: Counter
    ingest_requests: Counter
    ingest_duration: Histogram
    publish_duration: Histogram
    consumer_outcomes: Counter
    chargebee_duration: Histogram
    retries: Counter
    dead_letters: Counter
    dead_letters_waiting: Gauge
    replays: Counter
    queue_messages: Gauge
    queue_consumers: Gauge
    rate_limit_wait: Histogram
    chargebee_auth_failing: Gauge
    consumer_in_flight: Gauge
    reconciliations: Counter
    confirmations_pending: Gauge
    files: Counter
    file_entries: Counter
    matches: Counter
    review_open: Gauge
    review_oldest_age: Gauge
    review_decisions: Counter

    def render(self) -> bytes:
        return generate_latest(self.registry)


def create_metrics() -> Metrics:
    r = CollectorRegistry()
    return Metrics(
        registry=r,
        ingest_events=Counter(
            "payrelay_ingest_events",
            "Events received, by source, type and HTTP status",
            ["source", "type", "status"],
            registry=r,
        ),
        ingest_requests=Counter(
            "payrelay_ingest_requests",
            "Ingest requests, by source and HTTP status",
            ["source", "status"],
            registry=r,
        ),
        ingest_duration=Histogram(
            "payrelay_ingest_duration_seconds",
            "Time to answer an ingest request",
            ["source"],
            buckets=_FAST,
            registry=r,
        ),
        publish_duration=Histogram(
            "payrelay_publish_duration_seconds",
            "Time from publish to broker confirm, per request",
            buckets=_FAST,
            registry=r,
        ),
        consumer_outcomes=Counter(
            "payrelay_consumer_outcomes",
            "Consumer outcomes: recorded, duplicate, retried, dead_lettered",
            ["outcome", "reason"],
            registry=r,
        ),
        chargebee_duration=Histogram(
            "payrelay_chargebee_request_duration_seconds",
            "Chargebee API latency (record_payment and the reads before it) by HTTP status",
            ["status"],
            buckets=_HTTP,
            registry=r,
        ),
        retries=Counter("payrelay_retries", "Delayed retries scheduled, by tier", ["tier"], registry=r),
        dead_letters=Counter(
            "payrelay_dead_letters", "Messages dead-lettered, by reason", ["reason"], registry=r
        ),
        dead_letters_waiting=Gauge(
            "payrelay_dead_letters_waiting",
            "Dead letters kept in the ledger database, waiting for an operator (not replayed or purged)",
            registry=r,
        ),
        replays=Counter("payrelay_replays", "Dead letters replayed", registry=r),
        queue_messages=Gauge(
            "payrelay_queue_messages",
            "Messages in a queue, by state (ready, unacked)",
            ["queue", "state"],
            registry=r,
        ),
        queue_consumers=Gauge(
            "payrelay_queue_consumers", "Consumers attached to a queue", ["queue"], registry=r
        ),
        rate_limit_wait=Histogram(
            "payrelay_rate_limit_wait_seconds",
            "Time spent waiting for the Chargebee rate limit",
            buckets=_HTTP,
            registry=r,
        ),
        chargebee_auth_failing=Gauge(
            "payrelay_chargebee_auth_failing",
            "1 while Chargebee rejects the API key (consumer paused)",
            registry=r,
        ),
        consumer_in_flight=Gauge("payrelay_consumer_in_flight", "Messages being processed", registry=r),
        reconciliations=Counter(
            "payrelay_reconciliations",
            "Looks in Chargebee for a payment that may have been recorded: found or not_found",
            ["result"],
            registry=r,
        ),
        confirmations_pending=Gauge(
            "payrelay_confirmations_pending",
            "Recorded payments whose confirmations wait in the ledger's outbox for the broker",
            registry=r,
        ),
        files=Counter(
            "payrelay_files",
            "Bank files received, by source, format (unknown until parsed) and HTTP status",
            ["source", "format", "status"],
            registry=r,
        ),
        file_entries=Counter(
            "payrelay_file_entries",
            "Entries of accepted bank files: published, duplicate (sent lately) or skipped, by reason",
            ["source", "format", "outcome"],
            registry=r,
        ),
        matches=Counter(
            "payrelay_matches",
            "Payments cash application matched (SPEC §10), by method and outcome (auto or review)",
            ["method", "outcome"],
            registry=r,
        ),
        review_open=Gauge("payrelay_review_open", "Payments waiting in review for a person", registry=r),
        review_oldest_age=Gauge(
            "payrelay_review_oldest_age_seconds",
            "How long the oldest open review item has waited (0 when none waits)",
            registry=r,
        ),
        review_decisions=Counter(
            "payrelay_review_decisions",
            "Review decisions by people: accepted, assigned, rejected, refused or conflict",
            ["decision"],
            registry=r,
        ),
    )
