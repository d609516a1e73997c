"""The matcher's decisions (SPEC §10) over an in-memory book: who paid, which invoices, applied or not.

The book answers as Chargebee's lists would (a customer's open invoices, oldest first); the payer
map is a dict. The pure parts (names, amounts, the score) have their own tests; these check how
the matcher puts them together, and that it sends to a person whatever it cannot be sure of.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import pytest

from consumers.directory import CustomerFacts
from consumers.matching.matcher import Applied, Matcher, ToReview, teach_of
from service.event_data import Payment
from service.ledger.reviews import PayerHit
from service.review.service import InvoiceFacts
from service.settings import MatchingSettings

DAY = 86_400


@dataclass
class Book:
    customers_: list[CustomerFacts] = field(default_factory=list)
    invoices: dict[str, list[InvoiceFacts]] = field(default_factory=dict)
    fresh: dict[str, list[InvoiceFacts]] = field(default_factory=dict)  # what a fresh read says
    reads: int = 0

    def customer(
        self, id: str, company: str | None = None, first: str | None = None, last: str | None = None
    ) -> None:
        self.customers_.append(CustomerFacts(id, company, first, last, None))

    def invoice(self, customer: str, id: str, due: int, age: int, currency: str = "USD") -> None:
        facts = InvoiceFacts(id, customer, "payment_due", currency, due, due, 1_800_000_000 - age * DAY)
        self.invoices.setdefault(customer, []).append(facts)
        self.invoices[customer].sort(key=lambda i: (i.date or 0, i.id))

    async def customers(self, traceparent: str | None = None) -> list[CustomerFacts]:
        return self.customers_

    async def open_invoices(
        self, customer_id: str, currency: str, *, fresh: bool = False, traceparent: str | None = None
    ) -> list[InvoiceFacts]:
        self.reads += 1
        source = self.fresh if fresh and customer_id in self.fresh else self.invoices
        return [i for i in source.get(customer_id, []) if i.currency == currency]

    def forget(self, invoice_id: str) -> None:
        pass


@dataclass
class Payers:
    known: dict[tuple[str, str], str] = field(default_factory=dict)

    async def lookup(self, teach: Sequence[tuple[str, str]]) -> PayerHit | None:
        for pair in teach:
            if pair in self.known:
                return PayerHit(pair[0], self.known[pair])
        return None


def pay(amount: int, *, name: str | None = None, fingerprint: str | None = None, text: str | None = None,
        currency: str = "USD") -> Payment:  # fmt: skip
    return Payment(
        method="bank_transfer",
        amount=amount,
        currency=currency,
        paid_at=datetime(2026, 12, 1, tzinfo=UTC),
        reference_number="BR-1",
        invoice_id=None,
        remittance_information=text,
        memo=None,
        payer_name=name,
        payer_fingerprint=fingerprint,
    )


@pytest.fixture
def book() -> Book:
    b = Book()
    b.customer("cust_globex", "Globex Corporation")
    b.invoice("cust_globex", "GX-1001", 120000, 40)
    b.invoice("cust_globex", "GX-1002", 45000, 30)
    b.invoice("cust_globex", "GX-1003", 30000, 20)
    b.invoice("cust_globex", "GX-1004", 250000, 10)
    b.customer("cust_initech", "Initech Ltd")
    b.invoice("cust_initech", "IT-2001", 50000, 30)
    b.invoice("cust_initech", "IT-2002", 50000, 15)
    b.customer("cust_person", None, "Jane", "Doe")
    b.invoice("cust_person", "JD-1", 9900, 5)
    b.customer("cust_euro", "Umbrella Corp")
    b.invoice("cust_euro", "UM-1", 99000, 5, currency="EUR")
    return b


def matcher(book: Book, payers: Payers | None = None, **settings: object) -> Matcher:
    return Matcher(MatchingSettings(**settings), book, payers or Payers())


GLOBEX = Payers({("fingerprint", "fp-globex"): "cust_globex"})


async def test_a_known_account_paying_one_invoices_amount_is_applied(book: Book) -> None:
    outcome = await matcher(book, GLOBEX).match(pay(30000, fingerprint="fp-globex"))
    assert isinstance(outcome, Applied) and outcome.customer_id == "cust_globex"
    assert [(a.invoice_id, a.amount) for a in outcome.suggestion.allocations] == [("GX-1003", 30000)]
    assert (outcome.suggestion.score, outcome.suggestion.reasons) == (
        0.95,
        ("payer_fingerprint", "exact_amount"),
    )


async def test_a_known_account_paying_two_invoices_is_applied_by_sum(book: Book) -> None:
    outcome = await matcher(book, GLOBEX).match(pay(295000, fingerprint="fp-globex"))
    assert isinstance(outcome, Applied) and outcome.suggestion.method == "sum_of_2"
    assert sorted(a.invoice_id for a in outcome.suggestion.allocations) == ["GX-1002", "GX-1004"]


async def test_a_payer_known_only_by_a_customers_name_goes_to_a_person(book: Book) -> None:
    outcome = await matcher(book).match(pay(30000, name="GLOBEX CORP."))
    assert isinstance(outcome, ToReview) and outcome.why == "low_score"
    [suggestion] = outcome.suggestions
    assert (suggestion.score, suggestion.reasons) == (0.85, ("customer_name", "exact_amount"))


async def test_the_invoice_number_in_the_text_makes_a_fuzzy_payer_sure(book: Book) -> None:
    alone = await matcher(book).match(pay(30000, name="Globx Corporation"))
    assert isinstance(alone, ToReview) and alone.why == "low_score"
    named = await matcher(book).match(pay(30000, name="Globx Corporation", text="Payment GX-1003"))
    assert isinstance(named, Applied), named
    assert named.suggestion.reasons[0].startswith("payer_name 0.")
    assert "invoice_number_in_text" in named.suggestion.reasons


async def test_the_text_naming_another_invoice_blocks_the_amount(book: Book) -> None:
    outcome = await matcher(book, GLOBEX).match(pay(30000, fingerprint="fp-globex", text="for GX-1002"))
    assert isinstance(outcome, ToReview)
    assert "text_names_another_invoice" in outcome.suggestions[0].reasons


async def test_two_invoices_of_the_amount_are_rivals_oldest_first(book: Book) -> None:
    payers = Payers({("fingerprint", "fp-initech"): "cust_initech"})
    outcome = await matcher(book, payers).match(pay(50000, fingerprint="fp-initech"))
    assert isinstance(outcome, ToReview) and outcome.why == "rivals"
    assert [s.allocations[0].invoice_id for s in outcome.suggestions] == ["IT-2001", "IT-2002"]
    assert outcome.customer_id == "cust_initech"


async def test_a_short_payment_is_suggested_whole_and_never_applied(book: Book) -> None:
    outcome = await matcher(book, GLOBEX, tolerance="2%").match(
        pay(29500, fingerprint="fp-globex", text="GX-1003 less bank fee")
    )
    assert isinstance(outcome, ToReview)
    [suggestion] = outcome.suggestions
    assert suggestion.method == "short_payment" and suggestion.score == 0.85
    assert [(a.invoice_id, a.amount) for a in suggestion.allocations] == [("GX-1003", 29500)]
    assert suggestion.reasons[1] == "short_payment 5.00 USD"


async def test_nothing_to_suggest_says_why(book: Book) -> None:
    assert (await matcher(book).match(pay(100, name="Nobody At All"))).why == "no_payer"  # type: ignore[union-attr]
    assert (await matcher(book).match(pay(100))).why == "no_payer"  # type: ignore[union-attr]
    euro = await matcher(book).match(pay(99000, name="Umbrella Corporation"))  # the invoice is in EUR
    assert isinstance(euro, ToReview) and euro.why == "no_invoices" and euro.customer_id == "cust_euro"
    odd = await matcher(book, GLOBEX, tolerance="0").match(pay(12345, fingerprint="fp-globex"))
    assert isinstance(odd, ToReview) and odd.why == "no_amount" and odd.customer_id == "cust_globex"


async def test_a_persons_name_finds_the_customer(book: Book) -> None:
    outcome = await matcher(book).match(pay(9900, name="JANE DOE"))
    assert isinstance(outcome, ToReview) and outcome.customer_id == "cust_person"
    assert outcome.suggestions[0].allocations[0].invoice_id == "JD-1"


async def test_invoices_that_changed_meanwhile_go_to_a_person(book: Book) -> None:
    book.fresh["cust_globex"] = [
        replace(i, amount_due=100) if i.id == "GX-1003" else i for i in book.invoices["cust_globex"]
    ]
    outcome = await matcher(book, GLOBEX).match(pay(30000, fingerprint="fp-globex"))
    assert isinstance(outcome, ToReview) and outcome.why == "changed"


async def test_two_customers_of_one_name_are_rivals(book: Book) -> None:
    book.customer("cust_globex_uk", "Globex Corporation")
    book.invoice("cust_globex_uk", "GB-1", 30000, 3)
    outcome = await matcher(book).match(pay(30000, name="Globex Corp"))
    assert isinstance(outcome, ToReview)
    assert {s.allocations[0].invoice_id for s in outcome.suggestions} == {"GX-1003", "GB-1"}
    # even where the name alone would be enough, the other customer blocks it
    rivals = await matcher(book, auto_threshold=0.85).match(pay(30000, name="Globex Corp"))
    assert isinstance(rivals, ToReview) and rivals.why == "rivals"


async def test_a_lower_threshold_applies_what_the_default_sends_to_review(book: Book) -> None:
    outcome = await matcher(book, auto_threshold=0.85).match(pay(30000, name="Globex Corp."))
    assert isinstance(outcome, Applied)


def test_the_payer_is_known_by_fingerprint_then_by_name() -> None:
    assert teach_of(pay(1, name="  The Globex Corp. ", fingerprint="fp-1")) == (
        ("fingerprint", "fp-1"), ("name", "globex")
    )  # fmt: skip
    assert teach_of(pay(1)) == ()


async def test_a_set_that_fits_as_well_as_one_invoice_is_its_rival(book: Book) -> None:
    """1,000.00 from a known account: one invoice of 1,000.00, or the two of 400.00 and 600.00?"""
    book.invoice("cust_globex", "GX-2001", 100000, 9)
    book.invoice("cust_globex", "GX-2002", 40000, 8)
    book.invoice("cust_globex", "GX-2003", 60000, 7)
    outcome = await matcher(book, GLOBEX).match(pay(100000, fingerprint="fp-globex"))
    assert isinstance(outcome, ToReview) and outcome.why == "rivals"
    assert [s.method for s in outcome.suggestions] == ["exact_amount", "sum_of_2"]
    # the remittance listing the two settles it
    listed = await matcher(book, GLOBEX).match(pay(100000, fingerprint="fp-globex", text="GX-2002, GX-2003"))
    assert isinstance(listed, Applied)
    assert sorted(a.invoice_id for a in listed.suggestion.allocations) == ["GX-2002", "GX-2003"]


async def test_too_many_invoices_to_rule_out_a_set_is_unsure(book: Book) -> None:
    """One invoice fits, but the rival search runs out of budget on a customer with many invoices."""
    for n in range(120):  # even amounts: no set of them makes an odd 777.77, but the search cannot know
        book.invoice("cust_globex", f"GX-3{n:03d}", 2 * (5_000 + 97 * n), 50 + n)
    book.invoice("cust_globex", "GX-4000", 77_777, 1)
    outcome = await matcher(book, GLOBEX).match(pay(77_777, fingerprint="fp-globex"))
    assert isinstance(outcome, ToReview) and outcome.why == "rivals"
    assert outcome.suggestions[0].allocations[0].invoice_id == "GX-4000"
