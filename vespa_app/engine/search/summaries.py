"""Rendered summary fields, cached per stored document version.

A page of ranked hits renders the same documents query after query (a recommendation query
returns 500 hits; the popular products come back for every user). Rendering is a Python loop
per field per hit, so the engine keeps each document's rendered fields per summary plan and
reuses them while the document is unchanged.

Validity needs no invalidation hook: the stores never mutate a stored field dict; every put or
update stores a new dict (``DocumentStore._plan`` and ``apply_update``, ``MemoryStore.put``). An
entry is used only while the store still returns that very dict object; the cache holds a
reference to it, so its identity cannot pass to another dict.

Entries are kept out of the garbage collector's way: a rendered document is stored as a dict of
strings and numbers (None in an array field's place, so that the field order is kept) and its
arrays as tuples, which the collector does not track or stops tracking, so a full
collection does not walk 100k cached documents (the serving processes freeze what they loaded,
vespa_app/gc_freeze.py, and a collection over a warm cache would otherwise cost ~0.1 s per
100k entries). A document whose summary holds anything else (a tensor, a map) is not cached.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

# Entries per summary plan before that plan's entries are dropped and rebuilt (a size bound,
# not an LRU: one product catalogue fits well within it).
DEFAULT_CAPACITY = 1 << 18
_ATOMIC = (str, int, float, bool, type(None))


class _Plan:
    """The cached documents of one summary plan, by local id: the stored dict each was rendered
    from, its plain fields (a dict of strings and numbers, with None in an array field's place
    to keep the field order; a dict holding only such values is never tracked by the
    collector), and the rest as one flat tuple (hit id, then name and values of each array
    field), which the collector untracks after its second pass."""

    __slots__ = ("plain", "rest", "stored")

    def __init__(self) -> None:
        self.stored: dict[str, dict[str, Any]] = {}
        self.plain: dict[str, dict[str, Any]] = {}
        self.rest: dict[str, tuple[Any, ...]] = {}


class SummaryCache:
    """Shared by the query threads without a lock of its own: the engine renders hits under the
    store's read lock, so every thread rendering at the same time sees the same version of a
    document, and two threads can only race to put the same rendering."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = capacity
        self._plans: dict[Hashable, _Plan] = {}

    def plan(self, key: Hashable) -> _Plan:
        """The entries of one summary plan (schema, fields, id and sddocname flags)."""
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans.setdefault(key, _Plan())
        return plan

    @staticmethod
    def lookup(
        plan: _Plan, local_id: str, stored: dict[str, Any]
    ) -> tuple[dict[str, Any], str] | None:
        """(a new fields dict, hit id) rendered from this very ``stored`` dict, or None."""
        if plan.stored.get(local_id) is not stored:
            return None
        plain, rest = plan.plain.get(local_id), plan.rest.get(local_id)
        if plain is None or rest is None:
            return None
        fields = dict(plain)
        for i in range(1, len(rest), 2):
            fields[rest[i]] = list(rest[i + 1])
        return fields, rest[0]

    def remember(
        self,
        plan: _Plan,
        local_id: str,
        stored: dict[str, Any],
        fields: dict[str, Any],
        hit_id: str,
    ) -> None:
        """Cache ``fields`` (not changed by this call) for ``stored`` when every value is a
        string, number, bool or a flat list of them."""
        plain: dict[str, Any] = {}
        arrays: list[Any] = []
        for name, value in fields.items():
            if isinstance(value, list):
                if not all(isinstance(v, _ATOMIC) for v in value):
                    return
                plain[name] = None  # holds the field's place in the order
                arrays += (name, tuple(value))
            elif isinstance(value, _ATOMIC):
                plain[name] = value
            else:
                return
        if len(plan.stored) >= self.capacity:
            plan.stored.clear()
            plan.plain.clear()
            plan.rest.clear()
        plan.plain[local_id] = plain
        plan.rest[local_id] = (hit_id, *arrays)
        plan.stored[local_id] = stored  # last: lookups check it first
