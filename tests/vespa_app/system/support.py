"""Shared test support for the search side: an in-memory store with the DocumentStore surface,
and the deterministic conformance catalogue (spec §10 fixture: ~2,000 products without score
ties, 3 sellers, categories home, home/kitchen, toys, 3 users)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from vespa_app.build_baseline_models import EMBEDDING_DIM
from vespa_app.engine.schema import Schema, load_schemas
from vespa_app.engine.search import SearchEngine

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = ROOT / "vespa_app" / "package"
NOW = 1_760_000_000  # fixed `ranking.freshness` so freshness features are reproducible


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


WORDS = [
    "lavender", "face", "serum", "chef", "knife", "wooden", "spoon", "toy", "robot", "puzzle",
    "ceramic", "bowl", "steel", "pan", "soft", "blanket", "kids", "train", "garden", "lamp",
]  # fmt: skip


def catalogue(n: int = 2000, seed: int = 7, dim: int = EMBEDDING_DIM) -> list[tuple[str, dict]]:
    """Deterministic products; popularity, prices and vectors are distinct (no score ties)."""
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    cats = [["home"], ["home", "home/kitchen"], ["toys"]]
    pop = rng.permutation(n).astype(np.float64) / 10 + 0.05
    docs = []
    for i in range(n):
        words = [WORDS[j] for j in rng.choice(len(WORDS), size=3, replace=False)]
        docs.append(
            (
                f"P{i}",
                {
                    "product_id": f"P{i}",
                    "title": " ".join(words),
                    "description": " ".join(WORDS[j] for j in rng.choice(len(WORDS), size=6)),
                    "category_path": cats[i % 3],
                    "seller_id": f"s{i % 3}",
                    "price": round(5 + (i * 7.31) % 200, 2),
                    "margin": round(0.1 + (i % 17) / 50, 3),
                    "created_at": NOW - 3600 * ((i * 37) % 2000),
                    "in_stock": i % 5 != 0,
                    "popularity": float(pop[i]),
                    "embedding": vecs[i],
                },
            )
        )
    return docs


def make_engine(n: int = 2000, package: Path = PACKAGE) -> tuple[SearchEngine, MemoryStore, list]:
    schemas = load_schemas(package)
    store = MemoryStore(schemas)
    docs = catalogue(n)
    for local_id, fields in docs:
        store.put("product", local_id, fields)
    engine = SearchEngine(schemas, store, package, {})
    return engine, store, docs
