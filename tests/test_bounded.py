"""FixedLru: a least-recently-used map whose memory is taken when it is made, and its two users."""

from __future__ import annotations

import tracemalloc
import uuid

from service.bounded import FixedLru
from service.inbound import RecentIdentities


def placeholder(i: int) -> str:
    return f"\0p{i:06d}"


def test_it_keeps_the_most_recently_used_entries_and_drops_the_oldest() -> None:
    lru: FixedLru[str, int] = FixedLru(3, placeholder, 0)
    for n, key in enumerate("abc", 1):
        lru.put(key, n)
    assert lru.get("a") == 1  # now the newest
    lru.put("d", 4)  # drops b, the oldest
    assert "b" not in lru and lru.get("b") is None
    assert [lru.get(k) for k in "acd"] == [1, 3, 4]
    lru.put("a", 10)  # a new value for a key already here replaces it
    assert lru.get("a") == 10


def test_placeholders_are_dropped_first_and_never_answered_for_real_keys() -> None:
    lru: FixedLru[str, int] = FixedLru(4, placeholder, 0)
    assert lru.get("a") is None
    for key in "abcd":
        lru.put(key, 1)
    assert all(placeholder(i) not in lru for i in range(4))  # all four replaced by real ones
    assert all(key in lru for key in "abcd")


def test_its_memory_does_not_grow_as_real_entries_replace_placeholders() -> None:
    tracemalloc.start()
    try:
        recent = RecentIdentities(20_000)
        made, _ = tracemalloc.get_traced_memory()
        for _ in range(60_000):  # fills it three times over
            recent.add(("bank", "urn:bank:acme", str(uuid.uuid4())))
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert made > 20_000 * 16  # the entries were allocated when it was made
    assert after < made * 1.05, (made, after)


def test_recent_identities_remembers_what_was_added_lately() -> None:
    recent = RecentIdentities(2)
    first, second, third = (("bank", "urn:bank", f"e{i}") for i in range(3))
    recent.add(first)
    recent.add(second)
    assert first in recent and second in recent and third not in recent
    recent.add(third)
    assert first not in recent and third in recent
    assert ("bank", "urn:bank", "e1") in recent  # an equal identity, not the same object
    assert ("bank", "urn:bankx", "e1") not in recent and ("bank", "urn:bank", "e") not in recent
