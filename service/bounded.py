"""A least-recently-used map of fixed size whose memory is taken when it is made.

A cache bounded by its number of entries still grows a process's memory until it is full, and
once more when its dict first churns. This one starts full of placeholder entries, keys no
caller makes, so real entries replace them like for like: a process's memory is what it will be
from the start (the memory benchmark: flat after warm-up), and the start figure is the one to
size a container by.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class FixedLru(Generic[K, V]):
    def __init__(self, capacity: int, placeholder: Callable[[int], K], value: V) -> None:
        """`placeholder(i)`: the i-th key no caller makes, shaped like a real one (same size)."""
        self._entries: OrderedDict[K, V] = OrderedDict((placeholder(i), value) for i in range(capacity))
        self._capacity = capacity
        self._churn(capacity)  # the dict's first resize under churn, now rather than mid-run

    def get(self, key: K) -> V | None:
        """The value, marked as used just now; None if the key is not (or no longer) here."""
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def __contains__(self, key: K) -> bool:
        return key in self._entries

    def put(self, key: K, value: V) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        if len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def _churn(self, times: int) -> None:
        """Replace the oldest entry with itself `times` times: the table reaches its steady size."""
        for _ in range(times):
            key, value = self._entries.popitem(last=False)
            self._entries[key] = value
