"""Batched HNSW inserts, graph persistence and concurrent feed + query (spec §6.2, §8).

Runs the real DocumentStore (op log on a temporary folder) with the SearchEngine as its listener,
on a small package with a 16-d HNSW field, so every path of search/hnsw.py is exercised: rows
pending (exact-searched) before the merger inserts them, inline merges when pending overflows,
a persisted graph adopted at start-up with changed documents turned into dead labels, and
queries racing a feed of puts, replacements and removals.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from vespa_app.engine.schema import load_schemas
from vespa_app.engine.search import SearchEngine, hnsw
from vespa_app.engine.store import DocumentStore

DIM = 16
SERVICES = """<services version="1.0">
  <container id="default" version="1.0"><search/><document-api/></container>
  <content id="shop" version="1.0"><redundancy>1</redundancy>
    <documents><document type="product" mode="index"/></documents></content>
</services>
"""
SCHEMA = f"""schema product {{
    document product {{
        field product_id type string {{ indexing: summary | attribute }}
        field version type int {{ indexing: summary | attribute }}
        field check type float {{ indexing: summary | attribute }}
        field embedding type tensor<float>(x[{DIM}]) {{
            indexing: attribute | index
            attribute {{ distance-metric: prenormalized-angular }}
            index {{ hnsw {{ max-links-per-node: 16
                            neighbors-to-explore-at-insert: 100 }} }}
        }}
    }}
    rank-profile nn {{
        inputs {{ query(q) tensor<float>(x[{DIM}]) }}
        first-phase {{ expression: closeness(field, embedding) }}
    }}
}}
"""


def vector(i: int, version: int) -> np.ndarray:
    v = np.random.default_rng(i * 1000 + version).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def fields(i: int, version: int) -> dict:
    # `check` ties the attribute columns together: a torn view would break version*1000 + i
    return {
        "product_id": f"P{i}",
        "version": version,
        "check": float(version * 1000 + i),
        "embedding": vector(i, version),
    }


@pytest.fixture
def package(tmp_path: Path) -> Path:
    pkg = tmp_path / "pkg"
    (pkg / "schemas").mkdir(parents=True)
    (pkg / "schemas" / "product.sd").write_text(SCHEMA)
    (pkg / "services.xml").write_text(SERVICES)
    return pkg


def open_engine(package: Path, data: Path) -> tuple[DocumentStore, SearchEngine]:
    schemas = load_schemas(package)
    store = DocumentStore(data, schemas)
    return store, SearchEngine(schemas, store, package, {})


def search(engine: SearchEngine, q: np.ndarray, target: int = 10, hits: int = 10) -> list[dict]:
    status, out = engine.search(
        {},
        {
            "yql": f"select * from product where {{targetHits:{target}}}"
            "nearestNeighbor(embedding, q)",
            "input.query(q)": q.tolist(),
            "ranking.profile": "nn",
            "hits": hits,
            # consistency, not latency, is checked here: Vespa's default 500 ms is too short
            # for a query racing graph merges on a loaded 2-core machine
            "timeout": "10s",
        },
    )
    assert status == 200, out
    return out["root"].get("children", [])


def top_id(engine: SearchEngine, q: np.ndarray) -> str:
    return search(engine, q, hits=1)[0]["fields"]["product_id"]


def put_all(store: DocumentStore, docs: list[tuple[int, int]]) -> None:
    for start in range(0, len(docs), 500):  # stay under the store's 1024 pending writes
        for f in [
            store.put("product", f"P{i}", fields(i, v)) for i, v in docs[start : start + 500]
        ]:
            f.result()


def test_pending_rows_are_visible_before_and_after_the_merge(package, tmp_path, monkeypatch):
    store, engine = open_engine(package, tmp_path / "data")
    vi = engine.segments["product"].hnsw["embedding"]
    monkeypatch.setattr(vi, "_start_merger", lambda: None)  # hold every row in pending
    try:
        put_all(store, [(i, 0) for i in range(300)])
        assert vi.pending_count == 300 and vi.n_labels == 0
        assert engine.pending_vectors() == 300
        assert top_id(engine, vector(7, 0)) == "P7"  # acknowledged => searchable
        while vi.merge_some(128):
            pass
        assert vi.pending_count == 0 and vi.n_labels == 300 and vi.identity
        assert top_id(engine, vector(7, 0)) == "P7"
        put_all(store, [(7, 1)])  # a replacement: the old label is dead, the new row pending
        assert vi.dead == 1 and vi.pending_count == 1
        assert top_id(engine, vector(7, 1)) == "P7"
        assert all(h["fields"]["version"] == 1 for h in search(engine, vector(7, 0), 300, 300)
                   if h["fields"]["product_id"] == "P7")  # fmt: skip
    finally:
        engine.close()
        store.close()


def test_inline_merge_bounds_pending(package, tmp_path, monkeypatch):
    store, engine = open_engine(package, tmp_path / "data")
    vi = engine.segments["product"].hnsw["embedding"]
    monkeypatch.setattr(vi, "_start_merger", lambda: None)
    monkeypatch.setattr(hnsw, "CHUNK", 32)
    vi.max_pending = 50
    try:
        put_all(store, [(i, 0) for i in range(400)])
        assert vi.pending_count <= 50 and vi.n_labels >= 350
        assert [top_id(engine, vector(i, 0)) for i in (0, 199, 399)] == ["P0", "P199", "P399"]
    finally:
        engine.close()
        store.close()


def test_persisted_graph_is_adopted_and_checked_against_the_documents(package, tmp_path):
    data = tmp_path / "data"
    store, engine = open_engine(package, data)
    put_all(store, [(i, 0) for i in range(500)])
    assert engine.wait_indexed(timeout=60)
    engine.close()  # persists the graph, tagged with the store's sequence number
    store.close()
    meta = (data / "index" / "product.embedding.meta").read_text()
    assert '"seq": 500' in meta and '"labels": 500' in meta

    store, engine = open_engine(package, data)
    vi = engine.segments["product"].hnsw["embedding"]
    assert vi.n_labels == 500 and vi.dead == 0 and vi.identity  # loaded, nothing re-inserted
    assert top_id(engine, vector(42, 0)) == "P42"
    # changes after the save, then a crash: the engine never writes the graph again
    put_all(store, [(i, 1) for i in range(10)] + [(i, 0) for i in range(500, 520)])
    for f in [store.remove("product", f"P{i}") for i in range(10, 15)]:
        f.result()
    for seg in engine.segments.values():
        for v in seg.hnsw.values():
            v.stop()
    store.close()

    store, engine = open_engine(package, data)
    vi = engine.segments["product"].hnsw["embedding"]
    try:
        # the 500 old labels are adopted; 10 replaced + 5 removed are dead; 30 rows inserted
        assert vi.n_labels == 530 and vi.dead == 15 and not vi.identity
        assert engine.pending_vectors() == 0
        assert top_id(engine, vector(3, 1)) == "P3"
        assert top_id(engine, vector(510, 0)) == "P510"
        assert top_id(engine, vector(12, 0)) != "P12"  # removed
        hit = search(engine, vector(3, 0), hits=400, target=530)
        assert {h["fields"]["version"] for h in hit if h["fields"]["product_id"] == "P3"} == {1}
    finally:
        engine.close()
        store.close()


def test_a_graph_that_does_not_match_the_package_is_rebuilt(package, tmp_path):
    data = tmp_path / "data"
    store, engine = open_engine(package, data)
    put_all(store, [(i, 0) for i in range(200)])
    engine.close()
    store.close()
    meta = data / "index" / "product.embedding.meta"
    meta.write_text(meta.read_text().replace('"max_links_per_node": 16', '"max_links_per_node": 8'))
    store, engine = open_engine(package, data)
    try:
        assert engine.segments["product"].hnsw["embedding"].n_labels == 200
        assert top_id(engine, vector(5, 0)) == "P5"
    finally:
        engine.close()
        store.close()


def test_concurrent_feed_and_queries_are_consistent(package, tmp_path, monkeypatch):
    """Queries racing puts, replacements and removals see whole documents whose attributes,
    vectors and stored fields agree; no query fails; the final state is complete."""
    monkeypatch.setattr(hnsw, "CHUNK", 64)  # many merges interleave with the queries
    store, engine = open_engine(package, tmp_path / "data")
    n = 3000
    errors: list[BaseException] = []
    done = threading.Event()
    rng = np.random.default_rng(0)
    checked = [0]

    def feed() -> None:
        try:
            put_all(store, [(i, 0) for i in range(n)])
            put_all(store, [(i, 1) for i in range(0, n, 3)])  # replacements
            for f in [store.remove("product", f"P{i}") for i in range(1, n, 7)]:
                f.result()
        except BaseException as e:
            errors.append(e)
        finally:
            done.set()

    def query(seed: int) -> None:
        local = np.random.default_rng(seed)
        try:
            while not done.is_set():
                q = vector(int(local.integers(n)), int(local.integers(2)))
                for h in search(engine, q, target=20, hits=20):
                    f = h["fields"]
                    i, v = int(f["product_id"][1:]), f["version"]
                    assert f["check"] == v * 1000 + i, f
                    expected = 1 / (1 + (1 - float(np.dot(vector(i, v), q))))
                    assert h["relevance"] == pytest.approx(expected, abs=1e-5), f
                    checked[0] += 1
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=feed)]
    threads += [threading.Thread(target=query, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    try:
        assert not errors, errors[0]
        assert checked[0] > 0, "no query overlapped the feed"
        assert engine.wait_indexed(timeout=60)
        removed = set(range(1, n, 7))
        assert store.count("product") == n - len(removed)
        for i in rng.choice(n, 60, replace=False):
            version = 1 if i % 3 == 0 else 0
            top = top_id(engine, vector(int(i), version))
            assert (top == f"P{i}") == (int(i) not in removed)
    finally:
        engine.close()
        store.close()
