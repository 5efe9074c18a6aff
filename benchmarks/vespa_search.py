"""Embedded Vespa engine: /search/ latency for the project's NN + ranking queries, and HNSW recall.

Builds the engine in-process over an in-memory store holding N synthetic products (the catalogue
of benchmarks/vespa_fixtures.py: unit-norm 128-d vectors, 3 categories, 80% in stock), then times
`SearchEngine.search` (parameter handling, YQL, matching, ranking, summaries; no HTTP) for:
- retrieval: `{targetHits:400}nearestNeighbor and in_stock = true and !(product_id in (@seen))`,
  profile `retrieval`, hits 100;
- ranking: the same with profile `ranking` (global-phase ONNX history encoder once + ranker on
  the top 200), hits 100, summary `card` (the §9 request).
Recall@100: the matched set of `{targetHits:100}nearestNeighbor` (same filters) vs the same
query with `approximate:false`. The vectors are isotropic Gaussian (structureless), the hard case
for HNSW (anchors.md §5.3); recall on clustered, real embeddings is higher.

Reproduce: `python -m benchmarks.vespa_search --products 50000 --queries 200`
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.common import peak_rss_mib, write_results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--products", type=int, default=50_000, help="catalogue size (default 50000)"
    )
    parser.add_argument(
        "--queries", type=int, default=200, help="timed queries per kind (default 200)"
    )
    parser.add_argument(
        "--explore", type=int, default=0, help="hnsw.exploreAdditionalHits for the recall queries"
    )
    parser.add_argument(
        "--recall-queries", type=int, default=50, help="queries for recall (default 50)"
    )
    args = parser.parse_args(argv)

    from benchmarks.vespa_fixtures import NOW, PROJECT_PACKAGE, catalogue
    from vespa_app.engine.memory_store import MemoryStore
    from vespa_app.engine.schema import load_schemas
    from vespa_app.engine.search import SearchEngine

    schemas = load_schemas(PROJECT_PACKAGE)
    store = MemoryStore(schemas)
    t0 = time.perf_counter()
    docs = catalogue(args.products)
    for local_id, fields in docs:
        store.put("product", local_id, fields)
    t1 = time.perf_counter()
    engine = SearchEngine(schemas, store, PROJECT_PACKAGE, {})
    build_s = time.perf_counter() - t1
    print(
        f"catalogue {args.products} products in {t1 - t0:.1f}s, "
        f"index build (HNSW M=16 efC=200) {build_s:.1f}s"
    )

    rng = np.random.default_rng(5)
    vecs = np.stack([f["embedding"] for _, f in docs[: min(len(docs), 5000)]])

    def body(profile: str, exact: bool = False) -> dict:
        q = vecs[rng.integers(len(vecs))] + 0.3 * rng.standard_normal(vecs.shape[1]).astype(
            np.float32
        )
        q /= np.linalg.norm(q)
        seen = ",".join(f"P{i}" for i in rng.integers(0, args.products, 20))
        annot = "targetHits:400" + (", approximate:false" if exact else "")
        b = {
            "yql": f"select * from product where ({{{annot}}}nearestNeighbor(embedding, q_user)) "
            "and in_stock = true and !(product_id in (@seen))",
            "input.query(q_user)": q.tolist(),
            "seen": seen,
            "ranking.profile": profile,
            "ranking.freshness": str(NOW),
            "hits": 100,
            "timeout": "10s",
        }
        if profile == "ranking":
            b["input.query(hist)"] = [rng.integers(1, args.products, 50).astype(float).tolist()]
            b["input.query(ctx)"] = [rng.standard_normal(16).round(3).tolist()]
            b["presentation.summary"] = "card"
        return b

    rows = []
    results: dict = {"products": args.products, "index_build_s": round(build_s, 2)}
    for profile in ("retrieval", "ranking"):
        engine.search({}, body(profile))  # warm-up
        lat = []
        for _ in range(args.queries):
            b = body(profile)
            t = time.perf_counter()
            status, out = engine.search({}, b)
            lat.append((time.perf_counter() - t) * 1000)
            assert status == 200, out
        p50, p99 = np.percentile(lat, 50), np.percentile(lat, 99)
        rows.append((profile, len(lat), p50, p99))
        results[profile] = {
            "queries": len(lat),
            "p50_ms": round(float(p50), 2),
            "p99_ms": round(float(p99), 2),
        }

    recalls = []
    for _ in range(args.recall_queries):
        # targetHits 100 and hits 100: the returned hits are the operator's whole matched set
        b = body("retrieval")
        b["yql"] = b["yql"].replace(
            "targetHits:400", f"targetHits:100, hnsw.exploreAdditionalHits:{args.explore}"
        )
        approx = engine.search({}, b)[1]
        exact_yql = b["yql"].replace("targetHits:100,", "targetHits:100, approximate:false,")
        exact_body = dict(b, yql=exact_yql)
        exact = engine.search({}, exact_body)[1]
        a = {h["id"] for h in approx["root"].get("children", [])}
        e = {h["id"] for h in exact["root"].get("children", [])}
        recalls.append(len(a & e) / max(len(e), 1))
    results["recall_explore_additional_hits"] = args.explore
    results["recall_at_100_vs_exact"] = round(float(np.mean(recalls)), 4)
    results["recall_min"] = round(float(np.min(recalls)), 4)
    results["peak_rss_mib"] = round(peak_rss_mib(), 1)

    print(f"\n{'query':<10} {'n':>5} {'p50 ms':>8} {'p99 ms':>8}")
    for name, n, p50, p99 in rows:
        print(f"{name:<10} {n:>5} {p50:>8.2f} {p99:>8.2f}")
    print(f"\nrecall@100 approximate vs exact: mean {results['recall_at_100_vs_exact']:.4f}, "
          f"min {results['recall_min']:.4f} over {len(recalls)} queries")  # fmt: skip
    path = write_results("vespa_search", results)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
