"""A small time-to-live cache for lists that many requests share.

Context popularity (the cold-start and trending lists) depends on the request's context keys,
not on the user, and moves slowly: one Vespa query per context and category every few seconds
serves every cold user in between. Per-user exclusions (seen products, excluded categories) are
applied by the caller to the cached list, so the cache holds only what all users share.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")
logger = logging.getLogger(__name__)


class ListCache(Generic[T]):
    """Thread-safe TTL cache with a bounded number of entries (least recently used out).

    ``ttl_s`` 0 disables caching: every ``get`` fetches. Concurrent misses on one key may fetch
    twice; the last answer wins (cheaper than holding a lock over a network call).

    ``stale_s`` > 0 serves an entry for that much longer than ``ttl_s`` while it is refreshed
    in the background (stale-while-revalidate): a request then never waits for the refresh of a
    list it has seen recently, only for a list that nobody asked for in ``ttl_s + stale_s``. A
    failed background refresh leaves the old entry; once it is past the stale window the next
    request fetches in the foreground and sees the error.
    """

    def __init__(
        self,
        ttl_s: float,
        max_entries: int = 256,
        clock: Callable[[], float] = time.monotonic,
        stale_s: float = 0.0,
    ) -> None:
        if ttl_s < 0:
            raise ValueError(f"ttl_s must be >= 0, got {ttl_s!r}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries!r}")
        if stale_s < 0:
            raise ValueError(f"stale_s must be >= 0, got {stale_s!r}")
        self.ttl_s = ttl_s
        self.stale_s = stale_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, T]] = OrderedDict()
        self._refreshing: set[Hashable] = set()
        self._lock = threading.Lock()

    def get(self, key: Hashable, fetch: Callable[[], T]) -> T:
        if self.ttl_s == 0:
            return fetch()
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                age = now - entry[0]
                if age < self.ttl_s + self.stale_s:
                    self._entries.move_to_end(key)
                    if age >= self.ttl_s and key not in self._refreshing:
                        self._refreshing.add(key)
                        threading.Thread(
                            target=self._refresh, args=(key, fetch), daemon=True
                        ).start()
                    return entry[1]
        value = fetch()
        self._store(key, now, value)
        return value

    def _refresh(self, key: Hashable, fetch: Callable[[], T]) -> None:
        try:
            started = self._clock()
            self._store(key, started, fetch())
        except Exception:  # the stale entry stays; a foreground fetch will raise it
            logger.warning("background refresh of %r failed", key, exc_info=True)
        finally:
            with self._lock:
                self._refreshing.discard(key)

    def _store(self, key: Hashable, fetched_at: float, value: T) -> None:
        with self._lock:
            self._entries[key] = (fetched_at, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
