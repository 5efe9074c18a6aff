"""A small time-to-live cache for lists that many requests share.

Context popularity (the cold-start and trending lists) depends on the request's context keys,
not on the user, and moves slowly: one Vespa query per context and category every few seconds
serves every cold user in between. Per-user exclusions (seen products, excluded categories) are
applied by the caller to the cached list, so the cache holds only what all users share.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class ListCache(Generic[T]):
    """Thread-safe TTL cache with a bounded number of entries (least recently used out).

    ``ttl_s`` 0 disables caching: every ``get`` fetches. Concurrent misses on one key may fetch
    twice; the last answer wins (cheaper than holding a lock over a network call).
    """

    def __init__(
        self,
        ttl_s: float,
        max_entries: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s < 0:
            raise ValueError(f"ttl_s must be >= 0, got {ttl_s!r}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries!r}")
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, T]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, fetch: Callable[[], T]) -> T:
        if self.ttl_s == 0:
            return fetch()
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and now - entry[0] < self.ttl_s:
                self._entries.move_to_end(key)
                return entry[1]
        value = fetch()
        with self._lock:
            self._entries[key] = (now, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
