"""Rendered summary fields, cached per stored document version.

A page of ranked hits renders the same documents query after query (a recommendation query
returns 500 hits; the popular products come back for every user). Rendering is a Python loop
per field per hit, so the engine keeps each document's rendered fields per summary plan and
reuses them while the document is unchanged.

Validity needs no invalidation hook: the store never mutates a stored field dict; every put or
update stores a new dict (``DocumentStore._plan``, ``apply_update``). An entry keeps a
reference to the dict it was rendered from and is used only while the store still returns
that very object, so a write makes the entry stale at once, and holding the reference means
its identity cannot be reused by another dict.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

# Entries per summary plan before that plan's entries are dropped and rebuilt (a size bound,
# not an LRU: one product catalogue fits well within it).
DEFAULT_CAPACITY = 1 << 18


class SummaryCache:
    """plan key -> local id -> (stored dict, what was rendered from it). Safe to share between
    query threads: each read and write is a single dict operation, and a lost race only
    renders a document twice. Callers must not change a payload once it is put."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = capacity
        self._plans: dict[Hashable, dict[str, tuple[dict[str, Any], Any]]] = {}

    def plan(self, key: Hashable) -> dict[str, tuple[dict[str, Any], Any]]:
        """The entries of one summary plan (schema, fields, documentid/sddocname flags)."""
        entries = self._plans.get(key)
        if entries is None:
            entries = self._plans.setdefault(key, {})
        return entries

    @staticmethod
    def get(entries: dict[str, tuple[dict[str, Any], Any]], local_id: str, stored: dict) -> Any:
        """What was rendered from this very ``stored`` dict, or None."""
        entry = entries.get(local_id)
        if entry is None or entry[0] is not stored:
            return None
        return entry[1]

    def put(
        self,
        entries: dict[str, tuple[dict[str, Any], Any]],
        local_id: str,
        stored: dict[str, Any],
        payload: Any,
    ) -> None:
        if len(entries) >= self.capacity:
            entries.clear()
        entries[local_id] = (stored, payload)
