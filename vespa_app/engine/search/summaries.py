"""Rendered summary fields, cached per stored document version.

A page of ranked hits renders the same documents query after query (a recommendation query
returns 500 hits; the popular products come back for every user). Rendering is a Python loop
per field per hit, so the engine keeps each document's rendered fields per summary plan and
reuses them while the document is unchanged.

Validity needs no invalidation hook: the stores never mutate a stored field dict; every put or
update stores a new dict (``DocumentStore._plan`` and ``apply_update``, ``MemoryStore.put``). An
entry is used only while the store still returns that very dict object; the cache holds a
reference to it, so its identity cannot pass to another dict.

Entries are kept out of the garbage collector's way: a rendered document is stored as tuples of
strings and numbers (arrays of them as tuples), which the collector stops tracking, so a full
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
    """The cached documents of one summary plan: local id -> stored dict it was rendered from,
    and local id -> (field names, values, hit id)."""

    __slots__ = ("rendered", "stored")

    def __init__(self) -> None:
        self.stored: dict[str, dict[str, Any]] = {}
        self.rendered: dict[str, tuple[tuple[str, ...], tuple[Any, ...], str]] = {}


class SummaryCache:
    """Safe to share between query threads: each read and write is a single dict operation, and
    a lost race only renders a document twice."""

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
        entry = plan.rendered.get(local_id)
        if entry is None:
            return None
        names, values, hit_id = entry
        fields = {n: list(v) if type(v) is tuple else v for n, v in zip(names, values, strict=True)}
        return fields, hit_id

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
        values = []
        for value in fields.values():
            if isinstance(value, list):
                if not all(isinstance(v, _ATOMIC) for v in value):
                    return
                values.append(tuple(value))
            elif isinstance(value, _ATOMIC):
                values.append(value)
            else:
                return
        if len(plan.rendered) >= self.capacity:
            plan.rendered.clear()
            plan.stored.clear()
        plan.rendered[local_id] = (tuple(fields), tuple(values), hit_id)
        plan.stored[local_id] = stored
