"""Shared test support for the search side: a SearchEngine over the in-memory store, fed with
the deterministic conformance catalogue (spec §10 fixture, defined in benchmarks/vespa_fixtures)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.vespa_fixtures import catalogue
from vespa_app.engine.memory_store import MemoryStore
from vespa_app.engine.schema import load_schemas
from vespa_app.engine.search import SearchEngine

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = ROOT / "vespa_app" / "package"


def make_engine(n: int = 2000, package: Path = PACKAGE) -> tuple[SearchEngine, MemoryStore, list]:
    schemas = load_schemas(package)
    store = MemoryStore(schemas)
    docs = catalogue(n)
    for local_id, fields in docs:
        store.put("product", local_id, fields)
    engine = SearchEngine(schemas, store, package, {})
    return engine, store, docs
