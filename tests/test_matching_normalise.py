"""Payer keys, name similarity, closest names, invoice keys and invoice numbers in remittance text."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumers.matching.normalise import (
    closest_names,
    invoice_key,
    invoice_numbers_in,
    name_similarity,
    payer_key,
)

LEGAL = ["Corp", "Corporation", "Inc.", "LLC", "L.L.C.", "Ltd", "Limited", "Co.", "Company", "GmbH", "S.A."]
NAME_WORDS = [*LEGAL, "The", "the", "and", "&", "Acme", "Globex", "Müller", "O'Brien", ",", ".", "-"]

# -- payer_key -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("Globex Corp.", "globex"),
        ("GLOBEX CORPORATION", "globex"),
        ("  Initech, Ltd ", "initech"),
        ("Müller GmbH & Co. KG", "muller"),
        ("Smith & Co.", "smith"),
        ("Johnson & Johnson", "johnson and johnson"),
        ("Procter & Gamble Co", "procter and gamble"),
        ("The Acme Company", "acme"),
        ("Acme S.A.", "acme"),
        ("ACME S.A.S.", "acme"),
        ("Acme S.à r.l.", "acme"),
        ("Acme B.V.", "acme"),
        ("Widgets Co., Ltd.", "widgets"),
        ("Acme Pty Ltd", "acme"),
        ("Acme Sp. z o.o.", "acme"),
        ("Ørsted A/S", "orsted"),
        ("Straße AG", "strasse"),
        ("McDonald's Corporation", "mcdonalds"),
        ("Initech   Systems\tInc", "initech systems"),
        ("Café Réunion SARL", "cafe reunion"),
    ],
)
def test_payer_key_examples(name: str, key: str) -> None:
    """Accents, case, punctuation, a leading "the" and trailing legal forms do not matter."""
    assert payer_key(name) == key


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("Company Inc", "company"),
        ("The Company", "company"),
        ("Inc.", "inc"),
        ("The", "the"),
        ("Co & Co", "co"),
        ("The The", "the"),
    ],
)
def test_payer_key_keeps_a_name_made_of_legal_words(name: str, key: str) -> None:
    """Stripping never empties a name: its last non-empty form stays."""
    assert payer_key(name) == key


def test_payer_key_of_nothing_is_empty() -> None:
    """A name with no letter or digit has an empty key."""
    assert payer_key("") == payer_key("  ") == payer_key("!!! ...") == ""


@given(st.lists(st.sampled_from(NAME_WORDS), min_size=1, max_size=6))
def test_payer_key_is_idempotent_and_never_empty(words: list[str]) -> None:
    """A key is its own key, and a name with a word in it has a non-empty key."""
    name = " ".join(words)
    key = payer_key(name)
    assert payer_key(key) == key
    if any(c.isalnum() for c in name):
        assert key


# -- name_similarity and closest_names -----------------------------------------------------------


def test_name_similarity() -> None:
    """Identical keys are 1.0, word order does not matter, empty keys are like nothing."""
    assert name_similarity("globex", "globex") == 1.0
    assert name_similarity("acme widgets", "widgets acme") == 1.0
    assert name_similarity("globex", "globe x") == 0.92
    assert name_similarity("", "") == name_similarity("globex", "") == 0.0
    assert 0.0 <= name_similarity("globex", "initech") < 0.5


KEYS = st.text(alphabet="abc ", max_size=6)


@given(
    st.text(alphabet="abc ", min_size=1, max_size=6),
    st.dictionaries(st.text(alphabet="xyz", min_size=1, max_size=3), KEYS, max_size=12),
    st.integers(1, 100),
    st.integers(1, 6),
)
def test_closest_names_agrees_with_name_similarity(
    key: str, choices: dict[str, str], percent: int, limit: int
) -> None:
    """Exactly the ids whose similarity is at or above the threshold, best first, ties by id."""
    threshold = percent / 100
    expected = sorted(
        ((cid, name_similarity(key, name)) for cid, name in choices.items()),
        key=lambda hit: (-hit[1], hit[0]),
    )
    expected = [hit for hit in expected if hit[1] >= threshold][:limit]
    assert closest_names(key, choices, threshold, limit) == expected


def test_closest_names_ties_by_id_and_limit() -> None:
    """Equal scores come in id order, and no more than `limit` of them."""
    choices = {"c3": "globex", "c1": "globex", "c2": "globex", "c9": "globe x", "c0": "initech"}
    assert closest_names("globex", choices, 0.9) == [("c1", 1.0), ("c2", 1.0), ("c3", 1.0), ("c9", 0.92)]
    assert closest_names("globex", choices, 0.9, limit=2) == [("c1", 1.0), ("c2", 1.0)]
    assert closest_names("globex", choices, 0.93) == [("c1", 1.0), ("c2", 1.0), ("c3", 1.0)]
    assert closest_names("", choices, 0.5) == []


def test_closest_names_refuses_bad_arguments() -> None:
    """A threshold outside (0, 1] or a limit below 1 is a mistake."""
    for threshold in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="threshold"):
            closest_names("a", {}, threshold)
    with pytest.raises(ValueError, match="limit"):
        closest_names("a", {}, 0.5, limit=0)


def test_closest_names_is_fast_for_10000_customers() -> None:
    """Called once per payment, it scores 10,000 customers in well under a tenth of a second."""
    choices = {f"cus_{i:05d}": f"customer {i} holdings" for i in range(10_000)}
    choices["cus_globex"] = "globex"
    started = time.perf_counter()
    for _ in range(5):
        found = closest_names("globex", choices, 0.85)
    assert (time.perf_counter() - started) / 5 < 0.1
    assert found == [("cus_globex", 1.0)]


# -- invoice_key ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("INV-0042", "42"),
        ("inv 42", "42"),
        ("#42", "42"),
        ("No. 0042", "42"),
        ("Invoice no. 42", "42"),
        ("INV0042", "42"),
        ("Rechnung Nr. 42", "42"),
        ("Facture nº 42", "42"),
        ("INV-2024-0017", "2024-17"),
        ("ACME-17", "ACME-17"),
        ("acme_17", "ACME-17"),
        ("inv_a17", "A17"),
        ("ACME-INV-17", "ACME-INV-17"),
        ("INV-000", "0"),
        ("INV", ""),
        ("", ""),
        ("--", ""),
    ],
)
def test_invoice_key_examples(text: str, key: str) -> None:
    """Case, separators, leading trim words and leading zeros do not matter."""
    assert invoice_key(text) == key


@given(st.text(alphabet="INVOC0123 -#.A", max_size=16))
def test_invoice_key_is_idempotent(text: str) -> None:
    """A key is its own key: keys from Chargebee and from the text compare as they are."""
    assert invoice_key(invoice_key(text)) == invoice_key(text)


# -- invoice_numbers_in --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "keys"),
    [
        ("Payment for INV-0042 and INV 43", {"42", "43"}),
        ("inv#44, #45", {"44", "45"}),
        ("Invoice No. 46/47", {"46", "47"}),
        ("INV 42, 43 and 44", {"42", "43", "44"}),
        ("invoices 42/43", {"42", "43"}),
        ("INV 42 + 43; 44 & 45", {"42", "43", "44", "45"}),
        ("Ref 2024-0017", {"2024-17"}),
        ("Ref: A17 GX-1001", {"A17", "GX-1001"}),
        ("INV0042", {"42"}),
        ("Rechnung Nr. 42 und 43", {"42", "43"}),
        ("INV 42 43", {"42"}),
        ("INV 42 paid 1,250.00", {"42"}),
        ("INV 42, 1,250.00, 25.11.2026, 2026-11-25", {"42"}),
        ("Invoice 42 for November 2026", {"42"}),
        ("Globex Nov", set()),
        ("paid 1,250.00 on 2026-11-25", set()),
        ("Nov 2026", set()),
        ("42 and 43", set()),
        ("Invoice for November", set()),
        ("", set()),
    ],
)
def test_invoice_numbers_in_examples(text: str, keys: set[str]) -> None:
    """Numbers after a trim word or "#", lists joined to them, and letter-digit tokens count."""
    assert invoice_numbers_in(text) == keys


BARE = st.sampled_from(
    [
        "1,250.00",
        "12.50",
        "2026-11-25",
        "25.11.2026",
        "25/11/2026",
        "2026",
        "42",
        "Nov",
        "paid",
        "on",
        ",",
        "and",
    ]
)


@given(st.lists(BARE, max_size=12))
def test_invoice_numbers_in_ignores_bare_numbers_amounts_and_dates(words: list[str]) -> None:
    """Text with no trim word and no letter-digit token names no invoice."""
    assert invoice_numbers_in(" ".join(words)) == set()


@given(st.lists(BARE, max_size=6), st.integers(1, 99_999), st.lists(BARE, max_size=6))
def test_invoice_numbers_in_finds_a_number_anywhere(before: list[str], number: int, after: list[str]) -> None:
    """ "INV-<n>" among amounts and dates is found, as the key Chargebee's "INV-<n>" has."""
    text = " ".join([*before, f"INV-{number:05d}", *after])
    assert invoice_key(f"INV-{number}") in invoice_numbers_in(text)
