"""Which open invoices an amount pays: one exactly, the smallest set that sums to it, or one within
the tolerance (SPEC §10 step 3). Pure; amounts are integer minor units.

"Oldest" is one order everywhere (`by_age`): invoice date, then due date (none counts as 0), then
id. Among sets of one size the oldest is the one whose oldest invoice is oldest, then its
second-oldest, and so on: the sets' oldest-first lists compared lexicographically.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left, insort
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import accumulate

_MAX_PERCENT = 50
_MINOR = re.compile(r"\d+")
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%")


@dataclass(frozen=True, slots=True)
class OpenInvoice:
    """An invoice of the customer that still has an amount to pay."""

    id: str
    amount_due: int  # minor units, > 0
    date: int  # Unix seconds, the invoice date (older = smaller)
    due_date: int | None = None


@dataclass(frozen=True, slots=True)
class Tolerance:
    """How far a single invoice's amount may be from the payment: whichever allows more."""

    minor: int = 0  # absolute, in minor units
    percent: float = 0.0  # of the payment amount

    def __post_init__(self) -> None:
        if self.minor < 0:
            raise ValueError(f"tolerance must not be negative, not {self.minor}")
        if not 0 <= self.percent <= _MAX_PERCENT:
            raise ValueError(f"tolerance percent must be in [0, {_MAX_PERCENT}], not {self.percent}")

    def allowed(self, amount: int) -> int:
        """The largest difference allowed for a payment of `amount`, in minor units.

        The percentage is taken in decimal (2.3% of 1000 is 23, where floats would say 22.99...).
        """
        share = math.floor(Decimal(amount) * Decimal(repr(self.percent)) / 100)
        return max(self.minor, share)


def parse_tolerance(text: str | int | float) -> Tolerance:
    """`matching.tolerance`: minor units ("500", 500) or a percentage of the payment ("0.5%").

    A float counts as minor units only when whole (500.0); anything else, a negative value or a
    percentage above 50 is a ValueError with a one-line message.
    """
    if isinstance(text, bool):
        raise ValueError(f"tolerance must be minor units or a percentage like '2%', not {text}")
    if isinstance(text, float):
        if not text.is_integer():
            raise ValueError(f"tolerance in minor units must be whole (for a percentage write '{text}%')")
        text = int(text)
    if isinstance(text, int):
        return Tolerance(minor=text)  # Tolerance refuses a negative value
    written = text.strip()
    if written.startswith("-"):
        raise ValueError(f"tolerance must not be negative, not {written!r}")
    if _MINOR.fullmatch(written):
        return Tolerance(minor=int(written))
    if percent := _PERCENT.fullmatch(written):
        value = float(percent.group(1))
        if value > _MAX_PERCENT:
            raise ValueError(f"tolerance must be at most {_MAX_PERCENT}%, not {written!r}")
        return Tolerance(percent=value)
    raise ValueError(f"tolerance must be minor units like '500' or a percentage like '2%', not {written!r}")


def _age(invoice: OpenInvoice) -> tuple[int, int, str]:
    return (invoice.date, invoice.due_date or 0, invoice.id)


def by_age(invoices: Iterable[OpenInvoice]) -> list[OpenInvoice]:
    """The invoices oldest first: by date, then due date (none counts as 0), then id."""
    return sorted(invoices, key=_age)


def exact_single(amount: int, invoices: Sequence[OpenInvoice]) -> list[OpenInvoice]:
    """The invoices whose `amount_due` is exactly `amount`, oldest first."""
    return [invoice for invoice in by_age(invoices) if invoice.amount_due == amount > 0]


def within_tolerance(
    amount: int, invoices: Sequence[OpenInvoice], tolerance: Tolerance
) -> list[tuple[OpenInvoice, int]]:
    """Single invoices `amount` pays short or over by 1..allowed, with the difference.

    The difference is `amount - amount_due` (negative: a short payment); closest first, then
    oldest.
    """
    allowed = tolerance.allowed(amount)
    near = [
        (invoice, amount - invoice.amount_due)
        for invoice in invoices
        if invoice.amount_due > 0 and 1 <= abs(amount - invoice.amount_due) <= allowed
    ]
    return sorted(near, key=lambda hit: (abs(hit[1]), _age(hit[0])))


@dataclass(frozen=True, slots=True)
class SetSearch:
    """The result of `smallest_sets`."""

    sets: tuple[tuple[OpenInvoice, ...], ...]  # each set oldest-first inside; the oldest set first
    size: int  # the size of the sets found (0 when none)
    truncated: bool  # the search budget ran out before the search was complete


def smallest_sets(
    amount: int,
    invoices: Sequence[OpenInvoice],
    max_size: int,
    *,
    limit: int = 3,
    budget: int = 200_000,
) -> SetSearch:
    """The oldest `limit` sets of the smallest size k in 2..max_size whose `amount_due` sum to `amount`.

    A depth-first search for k = 2, 3, ... over the invoices in age order, so sets come out
    oldest first and the search of a size stops at the `limit`-th. Each visited node costs one
    unit of `budget` (across all sizes); when it runs out the search stops with `truncated` and
    the sets of the current size found so far (possibly none), which are still the oldest ones.
    Invoices of the same amount are distinct; those with `amount_due <= 0` are ignored.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    pool = by_age(invoice for invoice in invoices if invoice.amount_due > 0)
    if len({invoice.id for invoice in pool}) != len(pool):
        raise ValueError("invoice ids must be distinct")
    search = _Search([invoice.amount_due for invoice in pool], max_size, budget)
    for size in range(2, min(max_size, len(pool)) + 1):
        found = search.sets_of(size, amount, limit)
        if found or search.exhausted:
            sets = tuple(tuple(pool[i] for i in indices) for indices in found)
            assert all(sum(i.amount_due for i in s) == amount and len(set(s)) == size for s in sets)
            return SetSearch(sets, size if sets else 0, search.exhausted)
    return SetSearch((), 0, False)


class _Search:
    """The depth-first search of `smallest_sets` over amounts in age order, and its budget."""

    def __init__(self, amounts: list[int], max_size: int, budget: int) -> None:
        self.amounts = amounts
        self.left = budget
        self.exhausted = False
        # low[j][r] / high[j][r]: the sum of the r smallest / largest of amounts[j:], r <= max_size.
        self.low, self.high = _suffix_bounds(amounts, max(max_size, 0))
        self.where: dict[int, list[int]] = {}  # amount -> its indices, ascending
        for index, value in enumerate(amounts):
            self.where.setdefault(value, []).append(index)

    def sets_of(self, size: int, amount: int, limit: int) -> list[tuple[int, ...]]:
        """The first `limit` index sets of `size` summing to `amount`, in lexicographic order."""
        found: list[tuple[int, ...]] = []
        if self._reachable(0, size, amount):
            self._extend((), 0, amount, size, found, limit)
        return found

    def _reachable(self, start: int, need: int, rest: int) -> bool:
        """Whether `need` amounts from `start` on can sum to `rest`, by their smallest and largest."""
        return need <= len(self.amounts) - start and self.low[start][need] <= rest <= self.high[start][need]

    def _visit(self) -> bool:
        if self.left <= 0:
            self.exhausted = True
            return False
        self.left -= 1
        return True

    def _extend(
        self,
        chosen: tuple[int, ...],
        start: int,
        rest: int,
        need: int,
        found: list[tuple[int, ...]],
        limit: int,
    ) -> None:
        if need == 1:  # the last one: look the amount up instead of scanning
            indices = self.where.get(rest, [])
            for index in indices[bisect_left(indices, start) :]:
                if not self._visit():
                    return
                found.append((*chosen, index))
                if len(found) == limit:
                    return
            return
        for index in range(start, len(self.amounts) - need + 1):
            # Both bounds only tighten as `index` grows, so the first miss ends the scan.
            if not self._reachable(index, need, rest) or not self._visit():
                return
            value = self.amounts[index]
            if value < rest and self._reachable(index + 1, need - 1, rest - value):
                self._extend((*chosen, index), index + 1, rest - value, need - 1, found, limit)
                if len(found) == limit or self.exhausted:
                    return


def _suffix_bounds(amounts: list[int], most: int) -> tuple[list[list[int]], list[list[int]]]:
    """For each start j, the running sums of the `most` smallest and largest of amounts[j:]."""
    low: list[list[int]] = [[0]] * (len(amounts) + 1)
    high: list[list[int]] = [[0]] * (len(amounts) + 1)
    smallest: list[int] = []
    largest: list[int] = []  # ascending; the largest are at the end
    for j in range(len(amounts) - 1, -1, -1):
        insort(smallest, amounts[j])
        insort(largest, amounts[j])
        del smallest[most:], largest[: max(len(largest) - most, 0)]
        low[j] = [0, *accumulate(smallest)]
        high[j] = [0, *accumulate(reversed(largest))]
    return low, high
