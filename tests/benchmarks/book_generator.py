"""A seeded Chargebee book and a stream of payments with their truth, for the matching benchmark.

Companies from word lists (legal forms by currency, near-duplicates: "Acme Tools Inc." / "Acme Tool
Co." / "Acme Tools LLC"), people, contacts; open invoices with a heavy tail, subscriptions repeating
amounts, round amounts, the last 120 days, mostly USD; each payer's bank spelling its name its own
way ("ACME TOOLS INC", "Acme Tools, Inc.", cut at 16). The payments follow `MIX`, each generated
against the book as the matcher will find it: every earlier truth applied and taught.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Final

from consumers.directory import CustomerFacts
from consumers.matching.amounts import Tolerance
from consumers.matching.matcher import teach_of
from consumers.matching.normalise import payer_key
from service.event_data import Payment
from service.review.model import Allocation
from service.review.service import InvoiceFacts

NOW: Final = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
DAY: Final = 86_400
MIX: Final = (  # category, share of the payments, what it is
    ("exact_number", 0.30, "the invoice number as issued, in the remittance text (no invoice_id)"),
    ("mangled_number", 0.12, 'the number mangled: "inv 123", "#000123", "Invoice No. 123", "EU 124"'),
    ("multi_listed", 0.08, "2-4 invoices of one customer in one payment, their numbers listed"),
    ("multi_unreferenced", 0.03, "2-4 invoices in one payment, nothing in the text"),
    ("known_payer", 0.15, "no reference; the paying account's fingerprint is in the payer map"),
    ("name_only", 0.08, "no reference, no account (a check): the name as the payer's bank spells it"),
    ("short_within", 0.05, "one invoice less a deduction within tolerance (a wire fee, FX rounding)"),
    ("short_beyond", 0.04, "one invoice less a deduction beyond tolerance (a discount, withholding)"),
    ("unknown_payer", 0.08, "not a customer at all (misdirected, a supplier's refund, a deposit)"),
    ("ambiguous", 0.07, "no reference; the amount equals two or more of the customer's open invoices"),
)
_FIRST = (
    "Acme,Globex,Initech,Northwind,Contoso,Fabrikam,Umbrella,Stark,Wayne,Tyrell,Cyberdyne,Soylent,"
    "Hooli,Vandelay,Wonka,Dunder,Oscorp,Aperture,Blue Ridge,Summit,Pioneer,Evergreen,Redwood,"
    "Silverline,Ironbridge,Harbor,Lakeside,Granite,Cedar,Maple,Atlas,Orion,Vertex,Zenith,Apex,Nimbus,"
    "Polaris,Meridian,Keystone,Beacon,Crescent,Horizon,Sterling,Bright Path,Clearwater,Falcon,Eagle,"
    "Pinnacle,Quantum,Nova,Helix,Sapphire,Emerald,Union,Liberty,Pacific,Atlantic,Midwest,Sunrise,Delta"
).split(",")
_TRADE = (
    "Tools Logistics Software Foods Analytics Systems Partners Supply Manufacturing Consulting Labs Media"
    " Health Energy Capital Robotics Networks Design Freight Textiles Pharma Motors Dental Legal Studios"
    " Services Solutions Technologies Holdings Industries"
).split()
_REGIONS = ("Europe", "UK", "West", "International", "North America")
_GIVEN = (
    "James Mary John Patricia Robert Jennifer Michael Linda David Elizabeth William Susan Richard Jessica "
    "Thomas Sarah Daniel Karen Matthew Nancy Anna Lukas Sophie Jonas Emma Oliver Amelia Noah Priya Wei "
    "Carlos Fatima Hiroshi Ingrid Mateo Olga Rahul Chloe Tomasz Aisha Pierre Greta Kofi Lena"
).split()
_FAMILY = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Martinez Wilson Anderson Taylor Thomas Moore "
    "Martin Lee Clark Lewis Walker Hall Young King Wright Scott Green Baker Muller Schmidt Patel Chen Rossi "
    "Novak Kowalski Haddad Tanaka Larsen Dubois Okafor Fischer Silva Ivanova Byrne"
).split()
_STRANGERS = (
    "Riverside Dental Practice,Oakwood School District,St Marys Church,Fairview Property Management,"
    "Hillcrest Auto Repair,Westbrook Bakery,Kingsley Florist,Brookline Plumbing,City of Springfield,"
    "Dept of Revenue,Coastal Insurance Agency,Metro Transit Authority"
).split(",")
_CURRENCIES: Final = (("USD", "EUR", "GBP"), (80, 12, 8))
_LEGAL: Final = {  # currency -> (legal form, weight)
    "USD": (("Inc.", 35), ("LLC", 30), ("Corp.", 15), ("Co.", 5), ("", 15)),
    "EUR": (("GmbH", 40), ("AG", 10), ("SA", 20), ("BV", 15), ("", 15)),
    "GBP": (("Ltd", 70), ("PLC", 10), ("", 20)),
}
_AS_BANKS_WRITE = {
    "Inc.": ("INC", "INCORPORATED", "Inc"), "LLC": ("LLC", "L.L.C."), "Corp.": ("CORP", "CORPORATION"),
    "Co.": ("CO", "COMPANY"), "GmbH": ("GMBH",), "AG": ("AG",), "SA": ("SA", "S.A."), "BV": ("BV", "B.V."),
    "Ltd": ("LTD", "LIMITED"), "PLC": ("PLC",), "": ("",),
}  # fmt: skip
_PREFIX: Final = {"USD": "INV", "EUR": "EU", "GBP": "UK"}  # one invoice sequence, a prefix per entity
_ROUND: Final = (25_000, 50_000, 75_000, 100_000, 120_000, 150_000, 200_000, 250_000, 300_000, 500_000)
_PRICES: Final = (2_900, 4_900, 9_900, 19_900, 29_900, 49_900)  # a plan's price per seat
_SUBSCRIPTIONS: Final = tuple(sorted({price * seats for price in _PRICES for seats in range(1, 21)}))
# Remittance text templates ({id} the invoice id, {n}/{p} its number without/with zeros, {po} a PO).
_NOISE = "|||PAYMENT|ACH CREDIT|Nov services|PO 4500{po}|thank you".split("|")
_EXACT = "Payment for invoice {id}|{id}|INVOICE {id} THANK YOU|{id} {payer}|Remit {id} PO 4500{po}".split("|")
_MANGLED = "inv {n}|#{p}|Invoice No. {n}|INV{p}|Inv # {n}|invoice {n} paid|INVOICE NR {p}".split("|")
_MANGLED_ENTITY = "{pre} {n}|{pre}{p}|Rechnung {pre}-{p}|#{p}|Facture {pre} {p}".split("|")  # EU-, UK-


@dataclass(frozen=True, slots=True)
class Customer:
    facts: CustomerFacts
    currency: str
    fingerprints: tuple[str, ...]  # the payer's bank accounts, as the receiver fingerprints them
    bank_name: str  # how the payer's bank usually writes its name
    other_names: tuple[str, ...]  # how another bank or a check writes it


@dataclass(frozen=True, slots=True)
class Case:
    n: int
    category: str
    payment: Payment
    customer_id: str | None  # who really paid; None for someone who is no customer
    truth: tuple[Allocation, ...]  # what the payment really pays; () for no customer's payment


@dataclass(slots=True)
class World:
    customers: list[Customer]
    invoices: dict[str, InvoiceFacts]  # the book before the first payment
    learned: list[tuple[tuple[tuple[str, str], ...], str]]  # the payer map before the first payment
    cases: list[Case]


def _hex(rng: random.Random, digits: int) -> str:
    return f"{rng.getrandbits(digits * 4):0{digits}x}"


def _form(rng: random.Random, currency: str) -> str:
    return rng.choices([f for f, _ in _LEGAL[currency]], [w for _, w in _LEGAL[currency]])[0]


def _base(rng: random.Random) -> str:
    return f"{rng.choice(_FIRST)} {rng.choice(_TRADE)}"


def _spell_company(rng: random.Random, base: str, form: str) -> str:
    name = f"{base} {rng.choice(_AS_BANKS_WRITE[form])}".strip().upper()
    words = name.split()
    at = max(range(len(words)), key=lambda i: len(words[i]))
    cut = rng.randrange(1, len(words[at]))  # a typo: one letter of the longest word dropped
    typo = " ".join([*words[:at], words[at][:cut] + words[at][cut + 1 :], *words[at + 1 :]])
    spelled = {
        "upper": name, "comma": f"{base}, {form}" if form else base, "bare": base.upper(),
        "ach": name[:16].rstrip(), "the": f"THE {name}", "typo": typo,  # ACH names hold 16 characters
    }  # fmt: skip
    return spelled[rng.choices(list(spelled), (35, 20, 15, 15, 5, 10))[0]]


def _spell_person(rng: random.Random, given: str, family: str) -> str:
    forms = (f"{given} {family}", f"{family} {given}", f"{family}, {given}", f"{given[0]} {family}")
    return rng.choices((*forms, f"MR {given} {family}"), (40, 20, 15, 15, 10))[0].upper()


def _customers(rng: random.Random, count: int) -> list[Customer]:
    made: list[tuple[str, str]] = []  # (base, form) of each company so far
    out: list[Customer] = []
    while len(out) < count:
        currency = rng.choices(*_CURRENCIES)[0]
        given, family = rng.choice(_GIVEN), rng.choice(_FAMILY)
        roll, spell = rng.random(), partial(_spell_person, rng, given, family)
        company: str | None = None
        contact: tuple[str, str] | None = (given, family)
        if roll >= 0.08:  # else a person, no company
            if roll < 0.14 and made:  # a near-duplicate: "Acme Tool Co.", "Acme Tools LLC", "... Europe"
                base, form = rng.choice(made)
                kind = rng.choice(("singular", "other_form", "region"))
                if kind == "singular" and base.endswith("s"):
                    base, form = base[:-1], "Co."
                elif kind == "other_form":
                    form = rng.choice([f for f, _ in _LEGAL[currency] if f != form])
                else:
                    base, form = f"{base} {rng.choice(_REGIONS)}", _form(rng, currency)
            else:  # a name no other customer has (a few tries: the word lists are finite)
                taken = {b for b, _ in made}
                base = next((b for _ in range(50) if (b := _base(rng)) not in taken), _base(rng))
                form = _form(rng, currency)
            made.append((base, form))
            company, contact = f"{base} {form}".strip(), (contact if rng.random() < 0.5 else None)
            spell = partial(_spell_company, rng, base, form)
        accounts = tuple(f"fp_{_hex(rng, 24)}" for _ in range(2 if rng.random() < 0.2 else 1))
        first, last = contact or (None, None)
        facts = CustomerFacts(f"cus_{_hex(rng, 12)}", company, first, last, None)
        out.append(Customer(facts, currency, accounts, spell(), (spell(), spell())))
    return out


def _invoices(rng: random.Random, customers: list[Customer], count: int) -> dict[str, InvoiceFacts]:
    weights = [min(rng.paretovariate(1.16), 80.0) for _ in customers]  # a few accounts hold many
    # Each customer's subscriptions (one to three): the amounts its invoices repeat.
    usual = {c.facts.id: rng.sample(_SUBSCRIPTIONS, rng.randint(1, 3)) for c in customers}
    now, rows = int(NOW.timestamp()), []
    for customer in rng.choices(customers, weights, k=count):
        currency = customer.currency if rng.random() > 0.05 else rng.choices(*_CURRENCIES)[0]
        roll = rng.random()
        total = rng.choice(usual[customer.facts.id]) if roll < 0.55 else rng.choice(_ROUND)
        if roll >= 0.8:
            total = rng.randint(5_000, 2_500_000)  # usage, one-off charges
        rows.append((now - rng.randint(0, 120 * DAY), customer.facts.id, currency, total))
    invoices = {}
    for number, (date, owner, currency, total) in enumerate(sorted(rows), start=1):
        due_date = date + rng.choice((15, 30, 30, 45)) * DAY
        status = "not_paid" if rng.random() < 0.03 else ("posted" if due_date > now else "payment_due")
        paid = rng.choice(_ROUND[:3]) if rng.random() < 0.03 and total > _ROUND[3] else 0  # paid in part
        key = f"{_PREFIX[currency]}-{number:06d}"
        invoices[key] = InvoiceFacts(key, owner, status, currency, total - paid, total, date, due_date)
    return invoices


# -- the payments --------------------------------------------------------------------------------


class _Stream:
    """The book as each payment finds it: what is due, what no later payment may pay, the payer map."""

    def __init__(self, rng: random.Random, world: World, tolerance: Tolerance) -> None:
        self.rng, self.world, self.tolerance = rng, world, tolerance
        self.due = {i.id: i.amount_due for i in world.invoices.values()}
        self.free: dict[str, list[str]] = {c.facts.id: [] for c in world.customers}  # oldest first
        for invoice in sorted(world.invoices.values(), key=lambda i: (i.date or 0, i.id)):
            self.free[str(invoice.customer_id)].append(invoice.id)
        self.taken = {payer_key(name) for c in world.customers for name in c.facts.names}
        self.known: set[tuple[str, str]] = set()
        for customer in world.customers:  # a site that has run a while: 60% have paid before
            if rng.random() < 0.6:
                teach = [("fingerprint", customer.fingerprints[0])]
                teach += [("name", payer_key(customer.bank_name))] if rng.random() < 0.5 else []
                world.learned.append((tuple(teach), customer.facts.id))
                self.known.update(teach)

    def customer(self, ok: Callable[[Customer], bool] = bool) -> Customer | None:
        """A customer with something left to pay (and `ok`; `bool`: any), likelier the more they owe."""
        pool = [c for c in self.world.customers if self.free[c.facts.id] and ok(c)]
        return self.rng.choices(pool, [len(self.free[c.facts.id]) for c in pool])[0] if pool else None

    def open_of(self, customer: Customer, currency: str | None = None) -> list[InvoiceFacts]:
        found = [self.world.invoices[i] for i in self.free[customer.facts.id]]
        return [i for i in found if currency is None or i.currency == currency]

    def identity(self, customer: Customer, *, account: bool = True) -> tuple[str, str, str | None]:
        """(method, payer name, fingerprint): 15% checks (no account), 5% from an account never seen."""
        rng = self.rng
        name = customer.bank_name if rng.random() < 0.85 else rng.choice(customer.other_names)
        if not account or rng.random() < 0.15:
            return "check", name, None
        fingerprint = rng.choice(customer.fingerprints) if rng.random() < 0.95 else f"fp_{_hex(rng, 24)}"
        return "bank_transfer", name, fingerprint

    def known_accounts(self, customer: Customer) -> list[str]:
        return [f for f in customer.fingerprints if ("fingerprint", f) in self.known]

    def fill(self, templates: Sequence[str], **values: str) -> str:
        return self.rng.choice(templates).format(po=f"{self.rng.randrange(10**6):06d}", **values)

    def paid(self, case: Case) -> Case:
        """The truth applied: what later payments find due, and what the payer map has learned."""
        for allocation in case.truth:
            self.due[allocation.invoice_id] -= allocation.amount
            self.free[str(case.customer_id)].remove(allocation.invoice_id)
        if case.customer_id is not None:
            self.known.update(teach_of(case.payment))
        return case


def _payment(
    n: int, amount: int, currency: str, name: str, account: str | None, text: str, method: str
) -> Payment:
    check = method == "check"  # a check's text is its memo line
    return Payment(
        method=method, amount=amount, currency=currency, paid_at=NOW + timedelta(minutes=7 * n),
        reference_number=f"{'CHK' if check else 'BNK'}{n:08d}", invoice_id=None,
        remittance_information=None if check else (text or None), memo=(text or None) if check else None,
        payer_name=name, payer_fingerprint=account,
    )  # fmt: skip


def generate(seed: int, customers: int, invoices: int, payments: int, tolerance: Tolerance) -> World:
    """The book, the payer map before the first payment, and `payments` cases in `MIX`, in order."""
    rng = random.Random(seed)
    people = _customers(rng, customers)
    world = World(people, _invoices(rng, people, invoices), [], [])
    stream = _Stream(rng, world, tolerance)
    exact = [(share * payments, name) for name, share, _ in MIX]
    counts = {name: int(value) for value, name in exact}
    for _, name in sorted(exact, key=lambda e: (int(e[0]) - e[0], e[1]))[: payments - sum(counts.values())]:
        counts[name] += 1  # the largest remainders
    plan = [name for name, _, _ in MIX for _ in range(counts[name])]
    rng.shuffle(plan)
    for n, category in enumerate(plan, start=1):
        # One the book can no longer give (no two equal amounts left, say) is an exact_number.
        case = _BUILDERS[category](stream, n) or _single(stream, n, "exact_number") or _stranger(stream, n)
        world.cases.append(stream.paid(case))
    return world


def _case(
    s: _Stream, n: int, category: str, customer: Customer, paid: list[InvoiceFacts], text: str, *,
    short: int = 0, account: bool = True, fingerprint: str | None = None,
) -> Case:  # fmt: skip
    method, name, found = s.identity(customer, account=account)
    truth = tuple(Allocation(i.id, s.due[i.id] - short) for i in paid)
    method, fingerprint = ("bank_transfer", fingerprint) if fingerprint else (method, found)
    payment = _payment(n, sum(a.amount for a in truth), paid[0].currency, name, fingerprint, text, method)
    return Case(n, category, payment, customer.facts.id, truth)


def _pick(s: _Stream, ok: Callable[[Customer], bool] = bool) -> tuple[Customer, InvoiceFacts] | None:
    """A customer and the invoice it pays: most pay their oldest, some another."""
    if (customer := s.customer(ok)) is None:
        return None
    open_ = s.open_of(customer)
    return customer, open_[0] if s.rng.random() < 0.6 else s.rng.choice(open_)


def _single(s: _Stream, n: int, category: str) -> Case | None:
    """One invoice of one customer, paid in full: the text and the account as `category` has them."""
    ok = (lambda c: bool(s.known_accounts(c))) if category == "known_payer" else bool
    if (found := _pick(s, ok)) is None:
        return None
    customer, invoice = found
    prefix, _, digits = invoice.id.partition("-")
    text, how = s.fill(_NOISE), dict[str, Any]()
    if category == "exact_number":
        text = s.fill(_EXACT, id=invoice.id, payer=customer.bank_name)
    elif category == "mangled_number":
        forms = _MANGLED if prefix == "INV" else _MANGLED_ENTITY
        text = s.fill(forms, pre=prefix, p=digits, n=digits.lstrip("0"))
    elif category == "name_only":
        how = {"account": False}
    elif category == "known_payer":
        how = {"fingerprint": s.rng.choice(s.known_accounts(customer))}
    return _case(s, n, category, customer, [invoice], text, **how)


def _multi(s: _Stream, n: int, listed: bool) -> Case | None:
    if (customer := s.customer(lambda c: len(s.open_of(c, c.currency)) >= 2)) is None:
        return None
    rng, open_ = s.rng, s.open_of(customer, customer.currency)
    size = min(rng.choices((2, 3, 4), (55, 30, 15))[0], len(open_))
    # Most pay their oldest invoices; some pick (a statement, a disputed one held back).
    paid = open_[:size] if rng.random() < 0.6 else sorted(rng.sample(open_, size), key=open_.index)
    text = rng.choice((", ", " + ", "; ", " and ")).join(i.id for i in paid) if listed else ""
    if listed and rng.random() < 0.3 and paid[0].id.startswith("INV"):
        text = "Invoices " + "/".join(i.id.partition("-")[2].lstrip("0") for i in paid)
    return _case(s, n, "multi_listed" if listed else "multi_unreferenced", customer, paid, text)


def _short(s: _Stream, n: int, within: bool) -> Case | None:
    if (found := _pick(s)) is None:
        return None
    customer, invoice = found
    rng, due = s.rng, s.due[invoice.id]
    if within:  # a wire fee, or FX rounding
        offs = [*range(1_000, 3_501, 500), rng.randint(1, max(1, due * 8 // 1000))]
    else:  # an early-payment discount, withholding tax, a disputed line
        offs = [due * 2 // 100, due * 3 // 100, due // 10, min(15_000, due // 3), 2_500]
    fits = [d for d in offs if 0 < d < due and (d <= s.tolerance.allowed(due - d)) == within]
    if not fits:
        return None
    reason = rng.choice(("less bank charges", "less 2% discount", "less disputed item", "net of fees"))
    text = f"{invoice.id} {reason}" if rng.random() < 0.5 else ""
    category = "short_within" if within else "short_beyond"
    return _case(s, n, category, customer, [invoice], text, short=rng.choice(fits))


def _stranger(s: _Stream, n: int) -> Case:
    rng, kind = s.rng, s.rng.choices((0, 1, 2), (50, 30, 20))[0]
    names = (  # a school, a church, ...; the customers' words in a company none of them is; a person
        lambda: rng.choice(_STRANGERS),
        lambda: f"{_base(rng)} {_form(rng, 'USD')}".strip(),
        lambda: f"{rng.choice(_GIVEN)} {rng.choice(_FAMILY)}",
    )
    # A name no customer goes by, normalised: one that is a customer's would be that customer.
    stranger = next((x for _ in range(100) if payer_key(x := names[kind]()) not in s.taken), "Nobody Ltd")
    amount = rng.choice(_ROUND) if rng.random() < 0.4 else rng.randint(5_000, 500_000)
    fingerprint = f"fp_{_hex(rng, 24)}" if rng.random() < 0.7 else None
    text = rng.choice(("", "REFUND", "DEPOSIT", "Invoice 4471", "PO-88213"))
    currency = rng.choices(*_CURRENCIES)[0]
    payment = _payment(n, amount, currency, stranger.upper(), fingerprint, text, "bank_transfer")
    return Case(n, "unknown_payer", payment, None, ())


def _ambiguous(s: _Stream, n: int) -> Case | None:
    def twins(c: Customer) -> list[InvoiceFacts]:
        open_ = s.open_of(c)
        amounts = Counter((i.currency, s.due[i.id]) for i in open_)
        return [i for i in open_ if amounts[i.currency, s.due[i.id]] >= 2]

    if (customer := s.customer(lambda c: bool(twins(c)))) is None:
        return None
    invoice = s.rng.choice(twins(customer))
    return _case(s, n, "ambiguous", customer, [invoice], s.fill(_NOISE))


_SINGLE = ("exact_number", "mangled_number", "known_payer", "name_only")
_BUILDERS: Final[dict[str, Callable[[_Stream, int], Case | None]]] = {
    **{name: partial(_single, category=name) for name in _SINGLE},
    "multi_listed": partial(_multi, listed=True),
    "multi_unreferenced": partial(_multi, listed=False),
    "short_within": partial(_short, within=True),
    "short_beyond": partial(_short, within=False),
    "unknown_payer": _stranger,
    "ambiguous": _ambiguous,
}
