"""payrelay cash-application benchmark: how many payments naming no invoice go straight through, rightly.

    .venv/bin/python -m tests.benchmarks.matching [--customers 1000] [--invoices 5000] [--payments 2000] \
        [--seed 7] [--json PATH]

A book and a payment stream are generated (tests/benchmarks/book_generator.py, seeded), each
payment with its truth: who paid and which allocations it really pays. Each is matched, in order,
by the real `Matcher` with the default `[matching]` settings, against an in-memory `Book` and
`Payers` that answer as Chargebee and the payer map would. An auto-application is recorded in the
book and teaches the payer map; a review is decided at once by a person who knows the truth
(recorded and taught the same way, or rejected for a stranger), so each payment finds the book as
its truth says unless the matcher applied something wrong. Every wrong auto-application is printed
with its reasons. Times are around `match` alone: an in-memory book, no Chargebee latency in them.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from consumers.directory import CustomerFacts
from consumers.matching.amounts import parse_tolerance
from consumers.matching.matcher import Applied, Matcher, Outcome, teach_of
from consumers.matching.normalise import payer_key
from service.ledger.reviews import PayerHit
from service.money import to_major_string
from service.review.model import Allocation
from service.review.service import InvoiceFacts
from service.settings import MatchingSettings
from tests.benchmarks.bank_files import emit, figure, machine
from tests.benchmarks.book_generator import MIX, Case, World, generate

PAGE: Final = 100  # Chargebee's list page size, as consumers/directory.py reads
OUTCOMES: Final = {
    "auto_correct": "auto-applied, allocations equal the truth's (straight-through)",
    "auto_wrong": "auto-applied WRONG (any other allocation; the target is zero)",
    "review_right_first": "review, the right answer is the first suggestion",
    "review_right_lower": "review, the right answer is the 2nd or 3rd suggestion",
    "review_without_right": "review, the right answer is not among the suggestions",
    "review_correct": "review, nothing right to suggest (not a customer's payment)",
}
CALLS: Final = ("customers", "open_invoices", "open_invoices_fresh")


class MemoryBook:
    """The matcher's `Book`: the generated invoices as Chargebee lists them, and what each read costs."""

    def __init__(self, world: World) -> None:
        self.facts: list[CustomerFacts] = [c.facts for c in world.customers]  # one list: one name index
        self.invoices = dict(world.invoices)
        self.of: dict[str, list[str]] = {}
        for invoice in sorted(self.invoices.values(), key=lambda i: (i.date or 0, i.id)):
            self.of.setdefault(str(invoice.customer_id), []).append(invoice.id)
        self.calls: Counter[str] = Counter()

    async def customers(self, traceparent: str | None = None) -> list[CustomerFacts]:
        self.calls.update(customers=1, requests=math.ceil(len(self.facts) / PAGE))
        return self.facts

    async def open_invoices(
        self, customer_id: str, currency: str, *, fresh: bool = False, traceparent: str | None = None
    ) -> list[InvoiceFacts]:
        payable = [self.invoices[i] for i in self.of.get(customer_id, []) if self.invoices[i].amount_due > 0]
        found = [i for i in payable if i.currency == currency]  # Chargebee's filter has no currency
        pages = max(1, math.ceil(len(payable) / PAGE))
        self.calls.update({CALLS[2 if fresh else 1]: 1, "requests": pages, "invoices_read": len(found)})
        return found

    def forget(self, invoice_id: str) -> None:
        """Nothing is cached here: every read is what Chargebee says now."""

    def record(self, allocations: Sequence[Allocation]) -> None:
        """What record_payment does to each invoice: less due, paid when nothing is left."""
        for allocation in allocations:
            invoice = self.invoices[allocation.invoice_id]
            due = max(invoice.amount_due - allocation.amount, 0)
            self.invoices[invoice.id] = replace(
                invoice, amount_due=due, status=invoice.status if due else "paid"
            )


class MemoryPayers:
    """The payer map by `PayerMap`'s rules: a payment never overrides (a conflict hides it), a review does."""

    def __init__(self, learned: Sequence[tuple[Sequence[tuple[str, str]], str]]) -> None:
        self.entries: dict[tuple[str, str], tuple[str, bool]] = {}  # (kind, value) -> (customer, conflicted)
        for teach, customer in learned:
            self.learn(teach, customer, by_review=False)

    async def lookup(self, teach: Sequence[tuple[str, str]]) -> PayerHit | None:
        for pair in teach:
            if (entry := self.entries.get(pair)) is not None and not entry[1]:
                return PayerHit(pair[0], entry[0])
        return None

    def learn(self, teach: Sequence[tuple[str, str]], customer: str, *, by_review: bool) -> None:
        for pair in teach:
            known = self.entries.get(pair)
            if by_review or known is None:
                self.entries[pair] = (customer, False)
            elif known[0] != customer:
                self.entries[pair] = (known[0], True)


@dataclass(frozen=True, slots=True)
class Result:
    case: Case
    outcome: str  # a key of OUTCOMES
    why: str  # "auto", or why the matcher sent the payment to review
    seconds: float
    calls: Counter[str]
    applied: Applied | None


def classify(case: Case, outcome: Outcome) -> str:
    """Which of `OUTCOMES` a match is: allocations compared with the truth's as sets."""
    truth = frozenset(case.truth)
    if isinstance(outcome, Applied):
        return (
            "auto_correct" if truth and frozenset(outcome.suggestion.allocations) == truth else "auto_wrong"
        )
    if not truth:
        return "review_correct"
    ranks = [n for n, s in enumerate(outcome.suggestions, start=1) if frozenset(s.allocations) == truth]
    if not ranks:
        return "review_without_right"
    return "review_right_first" if ranks[0] == 1 else "review_right_lower"


async def run_cases(world: World, settings: MatchingSettings) -> list[Result]:
    book, payers = MemoryBook(world), MemoryPayers(world.learned)
    matcher = Matcher(settings, book, payers)
    results = []
    for case in world.cases:
        before = book.calls.copy()
        started = time.perf_counter()
        outcome = await matcher.match(case.payment)
        seconds = time.perf_counter() - started
        applied = outcome if isinstance(outcome, Applied) else None
        why = outcome.why if not isinstance(outcome, Applied) else "auto"
        results.append(Result(case, classify(case, outcome), why, seconds, book.calls - before, applied))
        # Recorded as the consumer would, or decided by a person who knows the truth.
        allocations, customer = (
            (applied.suggestion.allocations, applied.customer_id)
            if applied
            else (case.truth, case.customer_id)
        )
        if allocations and customer:
            book.record(allocations)
            for allocation in allocations:
                matcher.forget(allocation.invoice_id)
            payers.learn(teach_of(case.payment), customer, by_review=applied is None)
    return results


# -- the report -------------------------------------------------------------------------------------


def _rate(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def book_facts(world: World) -> dict[str, Any]:
    per = Counter(str(i.customer_id) for i in world.invoices.values() if i.amount_due > 0)
    keys = Counter(payer_key(c.facts.company) for c in world.customers if c.facts.company)
    learned = Counter(kind for teach, _ in world.learned for kind, _ in teach)
    return {
        "customers": len(world.customers),
        "people_only": sum(1 for c in world.customers if not c.facts.company),
        "companies_sharing_a_name_key": sum(n for n in keys.values() if n > 1),
        "open_invoices": per.total(),
        "customers_with_open_invoices": len(per),
        "most_open_invoices_of_one_customer": max(per.values(), default=0),
        "customers_with_20_or_more_open": sum(1 for n in per.values() if n >= 20),
        "currencies": dict(
            Counter(i.currency for i in world.invoices.values() if i.amount_due).most_common()
        ),
        "payer_map_fingerprints": learned["fingerprint"],
        "payer_map_names": learned["name"],
    }


def wrong_one(result: Result) -> dict[str, Any]:
    """A wrong auto-application as a reader needs it: the payment, its truth, what was applied, why."""
    case, applied = result.case, result.applied
    assert applied is not None
    payment, suggestion = case.payment, applied.suggestion

    def shown(allocations: Sequence[Allocation]) -> str:
        return ", ".join(f"{a.invoice_id}={to_major_string(a.amount, payment.currency)}" for a in allocations)

    diagnosis = "right customer, other invoices"
    if applied.customer_id != case.customer_id:
        diagnosis = f"wrong customer: {applied.customer_id}, not {case.customer_id}"
    return {
        "n": case.n, "category": case.category,
        "amount": f"{to_major_string(payment.amount, payment.currency)} {payment.currency}",
        "payer_name": payment.payer_name, "fingerprint": payment.payer_fingerprint,
        "text": payment.remittance_information or payment.memo or "",
        "truth_customer": case.customer_id, "truth": shown(case.truth) or "- (no customer's payment)",
        "applied_customer": applied.customer_id, "applied": shown(suggestion.allocations),
        "score": suggestion.score, "method": suggestion.method, "reasons": list(suggestion.reasons),
        "diagnosis": diagnosis,
    }  # fmt: skip


def summarise(results: list[Result], world: World, seconds: float) -> dict[str, Any]:
    total, counts = len(results), Counter(r.outcome for r in results)
    reviews = total - counts["auto_correct"] - counts["auto_wrong"]
    right = counts["review_right_first"] + counts["review_right_lower"]
    by_category = {}
    for name, share, what in MIX:
        mine = [r for r in results if r.case.category == name]
        found = Counter(r.outcome for r in mine)
        why = Counter(r.why for r in mine if r.why != "auto")
        by_category[name] = {
            "what": what, "share": share, "payments": len(mine), **{k: found[k] for k in OUTCOMES},
            "review_why": dict(why.most_common()),
        }  # fmt: skip
    times = sorted(r.seconds * 1000 for r in results)
    slowest = max(results, key=lambda r: r.seconds)
    calls = sum((r.calls for r in results), Counter[str]())
    requests = [r.calls["requests"] for r in results]
    patterns = Counter(tuple(r.calls[c] for c in CALLS) for r in results)
    figures = [
        figure("straight_through", "straight-through rate (auto-applied correctly / all)",
               _rate(counts["auto_correct"], total), "share"),
        figure("auto_wrong", "wrong auto-applications", counts["auto_wrong"], "payments", "target: 0"),
        figure("auto_wrong_rate", "wrong auto-applications / all", _rate(counts["auto_wrong"], total),
               "share"),
        figure("reviews", "sent to review", reviews, "payments", f"{_rate(reviews, total):.1%} of all"),
        figure("review_right_first", "reviews: the right answer first",
               _rate(counts["review_right_first"], reviews), "share"),
        figure("review_right_anywhere", "reviews: the right answer among the suggestions",
               _rate(right, reviews), "share"),
        figure("review_right_none", "reviews: a right answer exists, none suggested",
               _rate(counts["review_without_right"], reviews), "share"),
        figure("review_correct", "reviews: nothing right to suggest (strangers)",
               _rate(counts["review_correct"], reviews), "share"),
        figure("time.median_ms", "time per payment, median", statistics.median(times), "ms", "around match"),
        figure("time.p95_ms", "time per payment, p95", times[math.ceil(0.95 * total) - 1], "ms"),
        figure("time.p99_ms", "time per payment, p99", times[math.ceil(0.99 * total) - 1], "ms"),
        figure("time.max_ms", "time per payment, max", times[-1], "ms",
               f"#{slowest.case.n} {slowest.case.category} ({slowest.why}): "
               f"{slowest.calls['invoices_read']} open invoices read"),
        figure("payments_per_s", "payments per second", total / seconds, "payments/s",
               "one task: match, then record in memory and teach"),
        figure("calls.customers", "book.customers() per payment", calls["customers"] / total, "calls",
               "a payer the payer map does not know: the whole customer list"),
        figure("calls.open_invoices", "book.open_invoices() per payment", calls["open_invoices"] / total,
               "calls", "one per candidate customer (at most 3)"),
        figure("calls.open_invoices_fresh", "book.open_invoices(fresh=True) per payment",
               calls["open_invoices_fresh"] / total, "calls", "the re-read before an auto-application"),
        figure("calls.requests", "Chargebee requests per payment, nothing cached", statistics.mean(requests),
               "requests", f"pages of {PAGE}; at most {max(requests)}; the customer list is "
               f"{math.ceil(len(world.customers) / PAGE)} pages"),
    ]  # fmt: skip
    return {
        "book": book_facts(world),
        "payments": total,
        "outcomes": {key: counts[key] for key in OUTCOMES},
        "figures": figures,
        "by_category": by_category,
        "review_why": dict(Counter(r.why for r in results if r.why != "auto").most_common()),
        "call_patterns": [
            {**dict(zip(CALLS, pattern, strict=True)), "payments": n}
            for pattern, n in sorted(patterns.items())
        ],
        "wrong": [wrong_one(r) for r in results if r.outcome == "auto_wrong"],
    }


def _cell(value: float, unit: str) -> str:
    if unit == "share":
        return f"{value:.1%}"
    return f"{value:,.0f}" if value >= 100 or float(value).is_integer() else f"{value:.3g}"


def markdown(report: dict[str, Any]) -> str:
    box, book, total, s = report["machine"], report["book"], report["payments"], report["settings"]
    lines = [
        f"# payrelay cash-application benchmark ({report['date']})",
        "",
        f"- machine: {box['cores']} cores, {box['memory_gib']} GiB memory, Python {box['python']}",
        f"- command: `{report['command']}` (seed {report['seed']})",
        f"- settings: auto_threshold {s['auto_threshold']}, name_threshold {s['name_threshold']}, "
        f"max_invoices {s['max_invoices']}, tolerance {s['tolerance']}",
        f"- book: {book['customers']} customers ({book['people_only']} people with no company, "
        f"{book['companies_sharing_a_name_key']} companies sharing a normalised name with another), "
        f"{book['open_invoices']} open invoices on {book['customers_with_open_invoices']} customers (at most "
        f"{book['most_open_invoices_of_one_customer']} on one, {book['customers_with_20_or_more_open']} with "
        f"20 or more), {book['currencies']}",
        f"- payer map before the first payment: {book['payer_map_fingerprints']} fingerprints, "
        f"{book['payer_map_names']} names; every recorded payment and every decision teaches it",
        "",
        "## Outcomes",
        "",
        "| outcome | payments | share |",
        "|---|---:|---:|",
        *(f"| {OUTCOMES[k]} | {n} | {_rate(n, total):.1%} |" for k, n in report["outcomes"].items()),
        f"| all | {total} | 100% |",
        "",
        "## Figures",
        "",
        "| what | figure | unit | notes |",
        "|---|---:|---|---|",
        *(
            f"| {f['what']} | {_cell(f['figure'], f['unit'])} | {f['unit']} | {f['notes']} |"
            for f in report["figures"]
        ),
        "",
        "## By category (the mix)",
        "",
        "| category | what | share | payments | auto ok | auto WRONG | review 1st | review 2nd-3rd | review, "
        "not suggested | review, nothing right | straight-through | why reviewed |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, c in report["by_category"].items():
        lines.append(
            f"| {name} | {c['what']} | {c['share']:.0%} | {c['payments']} | "
            + " | ".join(str(c[k]) for k in OUTCOMES)
            + f" | {_rate(c['auto_correct'], c['payments']):.0%} | "
            + ", ".join(f"{k} {v}" for k, v in c["review_why"].items())
            + " |"
        )
    lines += ["", "## Calls to the book per payment (each a Chargebee read in production)", "",
              "| customers() | open_invoices() | open_invoices(fresh=True) | payments |",
              "|---:|---:|---:|---:|"]  # fmt: skip
    lines += [f"| {p['customers']} | {p['open_invoices']} | {p['open_invoices_fresh']} | {p['payments']} |"
              for p in report["call_patterns"]]  # fmt: skip
    lines += ["", f"## Wrong auto-applications: {len(report['wrong'])}", ""]
    for w in report["wrong"]:
        lines += [
            f"- #{w['n']} {w['category']}: {w['amount']} from {w['payer_name']!r} "
            f"(account {w['fingerprint'] or 'none'}), text {w['text']!r}",
            f"  truth {w['truth_customer']}: {w['truth']}; "
            f"applied to {w['applied_customer']}: {w['applied']} ({w['method']}, score {w['score']}: "
            f"{', '.join(w['reasons'])}); {w['diagnosis']}",
        ]
    return "\n".join(lines) + "\n"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = MatchingSettings()
    tolerance = parse_tolerance(settings.tolerance)
    world = generate(args.seed, args.customers, args.invoices, args.payments, tolerance)
    started = time.perf_counter()
    results = await run_cases(world, settings)
    seconds = time.perf_counter() - started
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "command": f".venv/bin/python -m tests.benchmarks.matching {' '.join(args.argv)}".strip(),
        "seed": args.seed,
        "settings": settings.model_dump(),
        "mix": [{"category": name, "share": share, "what": what} for name, share, what in MIX],
        **summarise(results, world, seconds),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--invoices", type=int, default=5000)
    parser.add_argument("--payments", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    report = asyncio.run(run(args))
    emit(report, markdown(report), args.json)
    return report


if __name__ == "__main__":
    main()
