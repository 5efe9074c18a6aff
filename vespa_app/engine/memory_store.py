"""An in-memory DocumentStore: the store surface the search engine reads, without persistence.

For in-process benchmarks and tests of the search side, where the durable op-log store
(:mod:`vespa_app.engine.store`) would only add disk I/O. Writes normalise values exactly as the
real store does (float32 rounding, numpy tensors), so search sees the same stored values.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from vespa_app.engine.schema import Schema


class MemoryStore:
    """The DocumentStore surface the search engine uses, without persistence.

    Stored values follow the store contract: floats already float32-rounded, dense tensors as
    float32 arrays, mapped tensors as dicts."""

    def __init__(self, schemas: dict[str, Schema]):
        self.schemas = schemas
        self.docs: dict[str, dict[str, dict]] = {n: {} for n in schemas}
        self.listeners: list = []
        self._lock = threading.RLock()

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._lock:
            yield

    def get(self, doc_type: str, local_id: str) -> dict | None:
        return self.docs.get(doc_type, {}).get(local_id)

    def get_many(self, keys: list[tuple[str, str]]) -> list[dict | None]:
        return [self.get(doc_type, local_id) for doc_type, local_id in keys]

    def iter_documents(self, doc_type: str):
        return iter(list(self.docs.get(doc_type, {}).items()))

    def add_listener(self, listener) -> None:
        self.listeners.append(listener)

    def put(self, doc_type: str, local_id: str, fields: dict) -> None:
        fields = normalise(self.schemas[doc_type], fields)
        with self._lock:
            self.docs[doc_type][local_id] = fields
            for listener in self.listeners:
                listener.document_put(doc_type, local_id, fields)

    def remove(self, doc_type: str, local_id: str) -> None:
        with self._lock:
            self.docs[doc_type].pop(local_id, None)
            for listener in self.listeners:
                listener.document_removed(doc_type, local_id)


def normalise(schema: Schema, fields: dict) -> dict:
    """JSON-ish field values -> stored values (float32 rounding, numpy tensors)."""
    out = {}
    for name, v in fields.items():
        f = schema.fields[name]
        if f.type.kind == "float":
            out[name] = float(np.float32(v))
        elif f.type.kind == "tensor":
            tt = f.type.tensor
            if tt.is_dense:
                out[name] = np.asarray(v, dtype=np.float32).reshape(tt.shape)
            else:
                out[name] = {k: float(np.float32(x)) for k, x in v.items()}
        else:
            out[name] = v
    return out
