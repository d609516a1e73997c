"""The tables of cash application (SPEC §10): review items, how each plan was matched, the payer map.

Added in schema version 4 as new tables (created where missing, on both databases); the ledger's
own tables do not change.
"""

from __future__ import annotations

import sqlalchemy as sa

from service.ledger.tables import METADATA, UTCDateTime

# A payment waiting for a person. One per event (a redelivery or a bank's resend finds it); kept
# until decided, then for the ledger's retention. `version` counts decisions and refusals, so that
# a page shows whether what it showed is still what is stored.
REVIEWS = sa.Table(
    "payrelay_reviews",
    METADATA,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("origin", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("why", sa.String(32), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("customer_id", sa.Text),
    sa.Column("payer", sa.Text),  # the name as the bank gave it; never an account number
    sa.Column("teach", sa.JSON, nullable=False),  # [[kind, value], ...]: what a decision teaches
    sa.Column("event", sa.JSON, nullable=False),
    sa.Column("headers", sa.JSON, nullable=False),
    sa.Column("suggestions", sa.JSON, nullable=False),
    sa.Column("named", sa.JSON, nullable=False),  # [[invoice_id, amount], ...] the event named itself
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("decided_at", UTCDateTime()),
    sa.Column("decided_by", sa.Text),
    sa.Column("decision", sa.JSON),
    sa.Column("problem", sa.Text),
    sa.Column("queued_at", UTCDateTime()),
    sa.Column("version", sa.Integer, nullable=False, server_default="0"),
    sa.UniqueConstraint("origin", "source", "event_id", name="uq_payrelay_reviews_event"),
    sa.CheckConstraint(
        "state IN ('open', 'accepted', 'assigned', 'rejected')", name="ck_payrelay_reviews_state"
    ),
    sa.Index("ix_payrelay_reviews_state", "state", "created_at"),
    sa.Index("ix_payrelay_reviews_event_id", "event_id"),
)

# How an event's plan was found when cash application (or a person) made it: what confirmations
# carry as `match`, and whether the person allowed an overpayment. Written with the plan.
MATCHES = sa.Table(
    "payrelay_matches",
    METADATA,
    sa.Column("origin", sa.Text, primary_key=True),
    sa.Column("source", sa.Text, primary_key=True),
    sa.Column("event_id", sa.Text, primary_key=True),
    sa.Column("match", sa.JSON, nullable=False),  # {"method", "score", "reasons"}
    sa.Column("allow_excess", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

# Payer -> Chargebee customer, learned from every recorded payment and every decision (SPEC §10):
# kind "fingerprint" (the account's keyed fingerprint) or "name" (the normalised payer name). A
# payment teaching another customer for a known payer makes the entry `conflicted` (used no more,
# so such payments go to a person); a person's decision settles it.
PAYERS = sa.Table(
    "payrelay_payers",
    METADATA,
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("value", sa.Text, primary_key=True),
    sa.Column("customer_id", sa.Text, nullable=False),
    sa.Column("conflicted", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("taught_by", sa.String(16), nullable=False),  # payment | review
    sa.Column("hits", sa.Integer, nullable=False, server_default="1"),
    sa.Column("learned_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)
