"""Names and invoice numbers in comparable form: payer keys, name similarity, invoice keys. Pure.

Payer names (`payer_key`) lose accents, case, punctuation, leading "the"s and trailing legal forms,
so "Globex Corp." and "GLOBEX CORPORATION" are both "globex". "X & Co" is a legal form too: a
trailing "and" goes with the legal word after it, so "Müller GmbH & Co. KG" is "muller", while
"Johnson & Johnson" stays "johnson and johnson". A name made only of legal words keeps its last
non-empty form ("Company Inc" is "company"); a name with no letter or digit at all is "".

Invoice numbers (`invoice_key`) lose case, separators, leading words such as "INV" or "No." and
leading zeros, so "INV-0042", "#42" and "Invoice no. 42" are all "42". `invoice_numbers_in` finds
them in remittance text (its docstring has the rule that keeps amounts and dates out).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping

from rapidfuzz import fuzz, process

# Single-word legal forms; each also counts spelt with dots ("S.A." -> "s a") when short.
_LEGAL_WORDS = frozenset(
    "corp corporation inc incorporated llc ltd limited co company cie plc gmbh ag sa sarl sas bv nv"
    " oy oyj ab as asa aps srl spa pty kg kgaa lp llp pc ohg ug se sl sro kft bhd sdn pte pvt ltda"
    " lda ulc ev".split()
)
_LEGAL_FORMS = frozenset(
    {(word,) for word in _LEGAL_WORDS}
    | {tuple(word) for word in _LEGAL_WORDS if len(word) <= 5}
    | {("sp", "z", "o", "o")}  # Polish "Sp. z o.o."
)
_LONGEST_FORM = max(len(form) for form in _LEGAL_FORMS)
# Letters NFKD leaves whole, written the way an ASCII-only bank would.
_PLAIN_LETTERS = str.maketrans({"ø": "o", "æ": "ae", "œ": "oe", "ł": "l", "đ": "d", "ð": "d", "þ": "th"})
_APOSTROPHES = str.maketrans("", "", "'’‘ʼ`")
_NAME_WORD = re.compile(r"[^\W_]+")

_TRIM_WORDS = frozenset("INV INVOICE INVOICES NO NOS NR NUM NUMBER REF REFERENCE FACTURE RECHNUNG".split())
# A trim word glued to the number it introduces ("INV0042", "NO42"), as one chunk.
_GLUED = re.compile(f"(?:{'|'.join(_TRIM_WORDS)})(\\d+)")
_CHUNK = re.compile(r"[A-Z0-9]+")
_CONNECTORS = frozenset({"AND", "UND", "ET"})
# The lexemes of remittance text, in the order tried. Whatever matches none (spaces, ".", ":",
# "-", brackets) is neutral: "No. 42" is "No" then "42".
_LEXEME = re.compile(
    # Amounts and dates: 1,250 / 1,250.00 / 12.50 / 25.11.2026 / 2026-11-25 / 25/11/2026.
    r"(?P<figure>\d+(?:,\d{3})+(?:\.\d+)?(?!\d)|\d+(?:\.\d+)+|\d{4}-\d\d-\d\d(?![\w-])"
    r"|\d{1,2}[./]\d{1,2}[./]\d{2,4}(?!\d))"
    r"|(?P<word>[A-Z0-9]+(?:[-_][A-Z0-9]+)*)"
    r"|(?P<other>\w+)"  # a word in another script: never a number, ends a list
    r"|(?P<hash>\#)"
    r"|(?P<separator>[,;/&+])"
)


def _plain(text: str) -> str:
    """NFKD without combining marks: "Müller" -> "Muller", "Nº" -> "No"."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def payer_key(name: str) -> str:
    """The payer or customer name in the form names are compared in (see the module docstring)."""
    # Folded on both sides of NFKD: each can give what the other changes ("𝐀" -> "A", "İ" -> "i̇").
    text = _plain(_plain(name).casefold()).translate(_PLAIN_LETTERS).translate(_APOSTROPHES)
    words = _NAME_WORD.findall(text.replace("&", " and "))
    while len(words) > 1 and words[0] == "the":
        words = words[1:]
    stripped_legal_form = False
    while words:
        size = _legal_suffix(words)
        if size == 0 and stripped_legal_form and words[-1] == "and":
            size = 1
        if size == 0 or size == len(words):  # keep the last non-empty form
            break
        words = words[:-size]
        stripped_legal_form = True
    return " ".join(words)


def _legal_suffix(words: list[str]) -> int:
    """How many trailing words form a legal form (the longest such form), 0 for none."""
    for size in range(min(_LONGEST_FORM, len(words)), 0, -1):
        if tuple(words[-size:]) in _LEGAL_FORMS:
            return size
    return 0


def _hundredths(ratio: float) -> int:
    """A rapidfuzz score (0..100) as whole hundredths of similarity, half up."""
    return int(ratio + 0.5)


def name_similarity(a: str, b: str) -> float:
    """How alike two payer keys are, in [0, 1] to 2 decimals; an empty key is like nothing."""
    if not a.strip() or not b.strip():
        return 0.0
    return _hundredths(fuzz.token_sort_ratio(a, b)) / 100


def closest_names(
    key: str, choices: Mapping[str, str], threshold: float, limit: int = 5
) -> list[tuple[str, float]]:
    """The ids of `choices` (id -> payer key) at least `threshold` similar to `key`, best first.

    Exactly the ids whose `name_similarity` with `key` is at or above `threshold` (in (0, 1]),
    ties by id; an empty key matches nothing.
    rapidfuzz scores all choices in C, so 10,000 customers take a few milliseconds.
    """
    if not 0 < threshold <= 1:  # at 0 every customer would be a match
        raise ValueError(f"threshold must be in (0, 1], not {threshold}")
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    if not key.strip():
        return []
    at_least = round(threshold * 100)
    # Half a point lower, so that a score rounding up to the threshold is not cut off.
    found = process.extract(
        key, choices, scorer=fuzz.token_sort_ratio, score_cutoff=at_least - 0.5, limit=None
    )
    hits = [(choice_id, _hundredths(ratio)) for _, ratio, choice_id in found]
    ranked = sorted((hit for hit in hits if hit[1] >= at_least), key=lambda hit: (-hit[1], hit[0]))
    return [(choice_id, hundredths / 100) for choice_id, hundredths in ranked[:limit]]


def invoice_key(text: str) -> str:
    """The invoice number in canonical form: "INV-0042" -> "42", "INV-2024-0017" -> "2024-17".

    Upper case; chunks of A-Z0-9 (anything else separates); leading trim words dropped ("INV",
    "Invoice", "No", "Ref", ... and a trim word glued to digits: "INV0042" -> "42"); leading zeros
    of all-digit chunks dropped ("000" -> "0"); the chunks joined with "-". Nothing left -> "".
    """
    chunks = _CHUNK.findall(_plain(text).upper())
    while chunks and chunks[0] in _TRIM_WORDS:
        chunks.pop(0)
    if chunks and (glued := _GLUED.fullmatch(chunks[0])):
        chunks[0] = glued.group(1)
    return "-".join((chunk.lstrip("0") or "0") if chunk.isdigit() else chunk for chunk in chunks)


def invoice_numbers_in(text: str) -> set[str]:
    """The invoice keys that remittance text names ("Payment for INV-0042 and INV 43" -> 42, 43).

    A word counts when it has a digit and either has a letter too ("INV-0042", "A17", "GX-1001")
    or directly follows a trim word or "#" ("INV 43", "#45", "No. 46", "Ref 2024-0017"). After a
    counted word a list goes on while each next number is joined by "," ";" "/" "&" "+" or
    "and": "INV 42, 43 and 44" and "invoices 42/43" name all. A space alone does not join
    ("INV 42 43" names 42 only), and any other word ends the list. Bare numbers, amounts and
    dates ("paid 1,250.00 on 2026-11-25", "Nov 2026") never count, even inside a list.
    """
    keys: set[str] = set()
    armed = listing = joined = False  # after a trim word / after a counted word / list joined
    for lexeme in _LEXEME.finditer(_plain(text).upper()):
        kind, word = lexeme.lastgroup, lexeme.group()
        if kind == "hash" or (kind == "word" and word in _TRIM_WORDS):
            armed, listing = True, False
        elif kind == "separator" or (kind == "word" and word in _CONNECTORS):
            joined = listing
        elif kind == "word" and _counts(word, armed or joined):
            if key := invoice_key(word):
                keys.add(key)
            armed, listing, joined = False, True, False
        else:
            armed = listing = joined = False
    return keys


def _counts(word: str, introduced: bool) -> bool:
    """Whether a word names an invoice: it has a digit and a letter, or a trim word before it."""
    has_digit = any(c.isdigit() for c in word)
    return has_digit and (introduced or any(c.isalpha() for c in word))
