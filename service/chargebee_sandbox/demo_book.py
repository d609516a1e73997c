"""The demo book for cash application (SandboxConfig.demo_book): payers and their invoices, as data.

Four payers whose open invoices exercise cash application: four of one customer (single amounts and
sums of them), two of the same amount, one in EUR, and one already paid beside one open. Amounts
are in minor units; an invoice is dated `days_ago` days before the sandbox's clock at reset, and is
due 30 days after its date, like every sandbox invoice.
"""

from __future__ import annotations

from typing import Final

from service.chargebee_sandbox.resources import InvoiceStatus

# (id, company, first_name, last_name, email)
CUSTOMERS: Final[tuple[tuple[str, str, str, str, str], ...]] = (
    ("cust_globex", "Globex Corporation", "Hank", "Scorpio", "ap@globex.example"),
    ("cust_initech", "Initech Ltd", "Bill", "Lumbergh", "ap@initech.example"),
    ("cust_umbrella", "Umbrella Corp", "Albert", "Wesker", "ap@umbrella.example"),
    ("cust_hooli", "Hooli, Inc.", "Gavin", "Belson", "ap@hooli.example"),
)

# (invoice id, customer id, currency, total, days_ago, status)
INVOICES: Final[tuple[tuple[str, str, str, int, int, InvoiceStatus], ...]] = (
    ("GX-1001", "cust_globex", "USD", 120_000, 40, "payment_due"),
    ("GX-1002", "cust_globex", "USD", 45_000, 30, "payment_due"),
    ("GX-1003", "cust_globex", "USD", 30_000, 20, "payment_due"),
    ("GX-1004", "cust_globex", "USD", 250_000, 10, "payment_due"),
    ("IT-2001", "cust_initech", "USD", 50_000, 30, "payment_due"),
    ("IT-2002", "cust_initech", "USD", 50_000, 15, "payment_due"),
    ("UM-3001", "cust_umbrella", "EUR", 99_000, 25, "payment_due"),
    ("HO-4001", "cust_hooli", "USD", 7_500, 50, "paid"),
    ("HO-4002", "cust_hooli", "USD", 100_000, 5, "payment_due"),
)
