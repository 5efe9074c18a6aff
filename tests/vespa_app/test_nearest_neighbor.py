"""nearestNeighbor (spec §6.1, §6.2; §10 cases 33-37): exact per metric, HNSW recall, filters,
hybrid closeness, tombstones, distanceThreshold. References are numpy brute force."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vespa_app.engine.memory_store import MemoryStore
from vespa_app.engine.schema import load_schemas
from vespa_app.engine.search import SearchEngine

DIM = 16
N = 3000
METRICS = {
    "euclid": "euclidean",
    "ang": "angular",
    "prenorm": "prenormalized-angular",
    "dot": "dotproduct",
}
SERVICES = """<services version="1.0">
  <container id="default" version="1.0"><search/><document-api/></container>
  <content id="vec" version="1.0"><redundancy>1</redundancy>
    <documents><document type="vectors" mode="index"/></documents></content>
</services>
"""


def _schema() -> str:
    fields = []
    for name, metric in METRICS.items():
        fields.append(f"""        field {name} type tensor<float>(x[{DIM}]) {{
            indexing: attribute | index
            attribute {{ distance-metric: {metric} }}
            index {{ hnsw {{ max-links-per-node: 16
                            neighbors-to-explore-at-insert: 100 }} }}
        }}""")
    fields.append(f"""        field ham type tensor<int8>(x[{DIM}]) {{
            indexing: attribute
            attribute {{ distance-metric: hamming }}
        }}""")
    profiles = []
    for name in [*METRICS, "ham"]:
        q = "qh" if name == "ham" else "q"
        profiles.append(f"""    rank-profile {name} {{
        inputs {{
            query(q) tensor<float>(x[{DIM}])
            query(qh) tensor<int8>(x[{DIM}])
        }}
        first-phase {{ expression: closeness(field, {name}) }}
        match-features {{
            closeness(field, {name}) distance(field, {name})
            closeness(label, nn) attribute(cat)
        }}
    }}""")
    del q
    return f"""schema vectors {{
    document vectors {{
        field vid type string {{ indexing: summary | attribute }}
        field cat type int {{ indexing: summary | attribute }}
{chr(10).join(fields)}
    }}
{chr(10).join(profiles)}
}}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    pkg: Path = tmp_path_factory.mktemp("vectors")
    (pkg / "schemas").mkdir()
    (pkg / "schemas" / "vectors.sd").write_text(_schema())
    (pkg / "services.xml").write_text(SERVICES)
    schemas = load_schemas(pkg)
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((30, DIM))
    vecs = (centres[rng.integers(0, 30, N)] + 0.4 * rng.standard_normal((N, DIM))).astype(
        np.float32
    )
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    ham = rng.integers(-128, 128, (N, DIM)).astype(np.float32)
    store = MemoryStore(schemas)
    for i in range(N):
        store.put(
            "vectors",
            f"v{i}",
            {
                "vid": f"v{i}",
                "cat": i % 100,
                "euclid": vecs[i],
                "ang": vecs[i],
                "prenorm": unit[i],
                "dot": vecs[i],
                "ham": ham[i],
            },
        )
    engine = SearchEngine(schemas, store, pkg, {})
    data = {"euclid": vecs, "ang": vecs, "prenorm": unit, "dot": vecs, "ham": ham}
    return engine, store, data, rng


def query(world, field, q, where="", target=10, hits=10, approximate=None, profile=None, **params):
    engine = world[0]
    annots = f'targetHits:{target}, label:"nn"'
    if approximate is not None:
        annots += f", approximate:{str(approximate).lower()}"
    qname = "qh" if field == "ham" else "q"
    body = {
        "yql": "select * from vectors where "
        f"({{{annots}}}nearestNeighbor({field}, {qname})){where}",
        f"input.query({qname})": [float(x) for x in q],
        "ranking.profile": profile or field,
        "hits": hits,
        **params,
    }
    status, out = engine.search({}, body)
    assert status == 200, out
    return out


def reference(metric: str, data: np.ndarray, q: np.ndarray) -> np.ndarray:
    a, q = data.astype(np.float64), q.astype(np.float32).astype(np.float64)
    if metric == "euclidean":
        return np.sqrt(((a - q) ** 2).sum(axis=1))
    if metric == "angular":
        return np.arccos(np.clip(a @ q / np.linalg.norm(a, axis=1) / np.linalg.norm(q), -1, 1))
    if metric == "prenormalized-angular":
        return 1 - a @ q / (q @ q)
    if metric == "dotproduct":
        return -(a @ q)
    x = np.bitwise_xor(a.astype(np.int8).view(np.uint8), q.astype(np.int8).view(np.uint8))
    return np.unpackbits(x, axis=1).sum(axis=1).astype(np.float64)


def hit_index(h) -> int:
    return int(h["fields"]["vid"][1:])


@pytest.mark.parametrize("field", [*METRICS, "ham"])
def test_33_34_exact_per_metric_matches_numpy(world, field):
    metric = METRICS.get(field, "hamming")
    data = world[2][field]
    q = data[17] * 0.9 + data[400] * 0.1 if field != "ham" else data[17]
    q = np.round(q) if field == "ham" else q
    out = query(world, field, q, approximate=False)
    dist = reference(metric, data, q)
    order = np.argsort(dist, kind="stable")
    hits = out["root"]["children"]
    assert [hit_index(h) for h in hits] == list(order[:10])
    assert out["root"]["fields"]["totalCount"] >= 10
    for h in hits:
        i = hit_index(h)
        mf = h["fields"]["matchfeatures"]
        closeness = -dist[i] if metric == "dotproduct" else 1 / (1 + dist[i])
        assert mf[f"distance(field,{field})"] == pytest.approx(dist[i], rel=1e-9, abs=1e-12)
        assert mf[f"closeness(field,{field})"] == pytest.approx(closeness, rel=1e-9)
        assert mf["closeness(label,nn)"] == mf[f"closeness(field,{field})"]
        assert h["relevance"] == pytest.approx(closeness, rel=1e-9)
    if metric == "dotproduct":
        top = hits[0]
        assert top["fields"]["matchfeatures"]["closeness(field,dot)"] == pytest.approx(
            float(data[hit_index(top)].astype(np.float64) @ q.astype(np.float32).astype(np.float64))
        )


def test_35_restrictive_filter_is_exact(world):
    data = world[2]["euclid"]
    q = data[5]
    out = query(world, "euclid", q, where=" and cat = 42", target=10)  # 1% of the documents
    allowed = np.flatnonzero(np.arange(N) % 100 == 42)
    dist = reference("euclidean", data[allowed], q)
    assert [hit_index(h) for h in out["root"]["children"]] == list(allowed[np.argsort(dist)[:10]])


def test_36_hnsw_recall_at_100(world):
    data = world[2]["prenorm"]
    rng = np.random.default_rng(11)
    recalls = []
    for qi in rng.integers(0, N, 10):
        q = data[qi] + 0.05 * rng.standard_normal(DIM).astype(np.float32)
        q = q / np.linalg.norm(q)
        approx = query(world, "prenorm", q, target=100, hits=100)
        exact = query(world, "prenorm", q, target=100, hits=100, approximate=False)
        a = {h["id"] for h in approx["root"]["children"]}
        e = {h["id"] for h in exact["root"]["children"]}
        recalls.append(len(a & e) / len(e))
    assert np.mean(recalls) >= 0.95


def test_filtered_hnsw_and_post_filter(world):
    data = world[2]["euclid"]
    q = data[123]
    allowed = np.flatnonzero(np.arange(N) % 100 < 30)
    ref = set(allowed[np.argsort(reference("euclidean", data[allowed], q))[:50]])
    for params in ({}, {"ranking.matching.postFilterThreshold": 0.1}):
        out = query(world, "euclid", q, where=" and cat < 30", target=50, hits=50, **params)
        got = {hit_index(h) for h in out["root"]["children"]}
        assert got <= set(allowed)
        assert len(got & ref) / 50 >= 0.9


def test_37_or_branch_gets_closeness(world):
    data = world[2]["euclid"]
    q = data[9]
    out = query(world, "euclid", q, where=" or cat = 77", target=5, hits=100)
    hits = out["root"]["children"]
    dist = reference("euclidean", data, q)
    nn = set(np.argsort(dist)[:5])
    others = [h for h in hits if hit_index(h) not in nn]
    assert len(others) == 30 and all(hit_index(h) % 100 == 77 for h in others)
    for h in others:
        mf = h["fields"]["matchfeatures"]
        assert mf["closeness(field,euclid)"] == pytest.approx(
            1 / (1 + dist[hit_index(h)]), rel=1e-9
        )
        assert mf["closeness(field,euclid)"] > 0


def test_distance_threshold(world):
    data = world[2]["euclid"]
    q = data[50]
    dist = np.sort(reference("euclidean", data, q))
    thr = float((dist[3] + dist[4]) / 2)
    engine = world[0]
    status, out = engine.search(
        {},
        {
            "yql": "select * from vectors where "
            f"{{targetHits:10, distanceThreshold:{thr}}}nearestNeighbor(euclid, q)",
            "input.query(q)": data[50].tolist(),
            "ranking.profile": "euclid",
        },
    )
    assert status == 200 and len(out["root"]["children"]) == 4


def test_removed_and_replaced_documents(world):
    _engine, store, data, _ = world
    q = data["euclid"][200]
    top = query(world, "euclid", q, target=3)["root"]["children"][0]
    assert top["fields"]["vid"] == "v200"
    old = store.get("vectors", "v200")
    store.remove("vectors", "v200")
    for approximate in (True, False):
        got = [
            h["fields"]["vid"]
            for h in query(world, "euclid", q, target=3, approximate=approximate)["root"][
                "children"
            ]
        ]
        assert "v200" not in got
    moved = dict(old, euclid=(data["euclid"][201] + 0.001).astype(np.float32))
    store.put("vectors", "v200", moved)
    got = [
        h["fields"]["vid"]
        for h in query(world, "euclid", data["euclid"][201], target=3)["root"]["children"]
    ]
    assert got[:2] == ["v201", "v200"] or got[:2] == ["v200", "v201"]
    store.put("vectors", "v200", old)


def test_target_hits_required_and_query_type_checked(world):
    engine = world[0]
    status, out = engine.search(
        {},
        {
            "yql": "select * from vectors where nearestNeighbor(euclid, q)",
            "input.query(q)": [0.0] * DIM,
            "ranking.profile": "euclid",
        },
    )
    assert status == 400 and out["root"]["errors"][0]["code"] == 4
    status, out = engine.search(
        {},
        {
            "yql": "select * from vectors where {targetHits:5}nearestNeighbor(euclid, nope)",
            "ranking.profile": "euclid",
        },
    )
    assert status == 400 and "query(nope)" in out["root"]["errors"][0]["message"]


@pytest.mark.parametrize("field", list(METRICS))
def test_large_target_hits_scan_returns_the_exact_top_k(world, field):
    """targetHits so large that HNSW would visit about every candidate: the engine scans them
    in one matrix product (float32 ranking, double recompute) and returns the exact top k."""
    metric = METRICS[field]
    data = world[2][field]
    q = data[77] * 0.6 + data[1200] * 0.4
    allowed = np.flatnonzero(np.arange(N) % 100 < 60)
    out = query(world, field, q, where=" and cat < 60", target=700, hits=400)
    dist = reference(metric, data[allowed], q)
    order = allowed[np.argsort(dist, kind="stable")]
    got = [hit_index(h) for h in out["root"]["children"]]
    assert got == list(order[:400])
    assert out["root"]["fields"]["totalCount"] == 700


def test_scan_keeps_rows_that_float32_rounding_would_reorder():
    """Rows whose float32 distances tie with the k-th are all handed to the double recompute."""
    from vespa_app.engine.search.matching import distances, scan_candidates

    rng = np.random.default_rng(5)
    base = rng.standard_normal(64).astype(np.float32)
    base /= np.linalg.norm(base)
    # 200 vectors within 1e-7 of each other: float32 cannot order them, double can
    mat = (base + 1e-7 * rng.standard_normal((200, 64))).astype(np.float32)
    mat = np.vstack([mat, rng.standard_normal((800, 64)).astype(np.float32)])
    q = base.astype(np.float64)
    allowed = np.ones(len(mat), dtype=bool)
    rows = scan_candidates(mat, "prenormalized-angular", allowed, q, 10)
    exact = np.argsort(distances("prenormalized-angular", mat, q), kind="stable")[:10]
    assert set(exact) <= set(rows.tolist())
