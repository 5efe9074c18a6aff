"""Stage-3 re-ranking latency: 500 ranked candidates -> 50 items with explanations.

Times `Reranker.rerank` end to end (Candidate objects in, explained items and summary out: array
building, filters, score rules, greedy placement, supporting history items) with the default
rules (MMR over 128-d embeddings, seller caps 2 per 10 and 20% share, freshness, margin ties,
small-seller minimum share), and the same rules with attribute similarity (no embeddings).
Candidates are synthetic: 80 sellers with Zipf-like frequency (so the caps bind), 3-level
categories, unit 128-d vectors, a 50-item history with embeddings.

Reproduce: `python -m benchmarks.rerank --requests 500`
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import numpy as np

from benchmarks.common import peak_rss_mib, write_results
from vespa_app.client.rerank import Candidate, HistoryItem, RequestContext, Reranker, load_rules

NOW = 1_700_000_000


def make_request(rng: np.random.Generator, n: int, dim: int, embeddings: bool):
    sellers = 80
    weights = 1.0 / np.arange(1, sellers + 1)
    seller = rng.choice(sellers, size=n, p=weights / weights.sum())
    top, mid, leaf = rng.integers(0, 4, n), rng.integers(0, 3, n), rng.integers(0, 3, n)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    ranker = np.sort(rng.standard_normal(n))[::-1]
    candidates = [
        Candidate(
            product_id=f"p{rng.integers(1_000_000)}-{i}",
            seller_id=f"s{seller[i]}",
            category_path=(f"c{top[i]}", f"c{top[i]}/{mid[i]}", f"c{top[i]}/{mid[i]}/{leaf[i]}"),
            retrieval_score=float(rng.random()),
            ranker_score=float(ranker[i]),
            created_at=int(NOW - rng.integers(0, 90 * 86_400)),
            margin=float(rng.uniform(0.02, 0.4)),
            price=float(rng.uniform(5, 200)),
            in_stock=True,
            embedding=vectors[i] if embeddings else None,
            source="ann" if i % 3 else "graph_walk",
        )
        for i in range(n)
    ]
    history = tuple(
        HistoryItem(
            product_id=f"h{j}",
            category_path=("c0", "c0/1", "c0/1/2"),
            embedding=rng.standard_normal(dim).astype(np.float32) if embeddings else None,
        )
        for j in range(50)
    )
    exposure = {f"s{s}": float(weights[s] / weights.sum()) for s in range(sellers)}
    context = RequestContext(user_id="u1", now=NOW, k=50, history=history)
    return candidates, context, exposure


def time_variant(reranker: Reranker, requests, repeats: int) -> dict:
    for candidates, context, exposure in requests[:5]:
        reranker.rerank(candidates, context, exposure)  # warm-up
    times = []
    shares = []
    for r in range(repeats):
        candidates, context, exposure = requests[r % len(requests)]
        t0 = time.perf_counter()
        result = reranker.rerank(candidates, context, exposure)
        times.append((time.perf_counter() - t0) * 1000)
        shares.append(result.summary["max_seller_count"] / max(1, len(result.items)))
    ms = np.array(times)
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "max_seller_share": float(max(shares)),
        "returned": len(result.items),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500, help="timed requests per variant")
    parser.add_argument("--candidates", type=int, default=500, help="candidates per request")
    parser.add_argument("--dim", type=int, default=128, help="embedding size")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    rules = load_rules()
    attribute_rules = dataclasses.replace(
        rules, diversity=dataclasses.replace(rules.diversity, similarity="attributes")
    )
    pools = 20
    with_vectors = [make_request(rng, args.candidates, args.dim, True) for _ in range(pools)]
    without = [make_request(rng, args.candidates, args.dim, False) for _ in range(pools)]
    variants = {
        "mmr_embedding": time_variant(Reranker(rules), with_vectors, args.requests),
        "mmr_attributes": time_variant(Reranker(attribute_rules), without, args.requests),
    }
    print(f"{args.candidates} candidates -> 50, {args.requests} requests per variant")
    print(f"{'variant':<16} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'max share':>10}")
    for name, row in variants.items():
        print(
            f"{name:<16} {row['p50_ms']:>8.3f} {row['p99_ms']:>8.3f} {row['mean_ms']:>8.3f} "
            f"{row['max_seller_share']:>10.2f}"
        )
    path = write_results(
        "rerank",
        {
            "candidates": args.candidates,
            "k": 50,
            "dim": args.dim,
            "requests": args.requests,
            "rules": "vespa_app/client/rerank/rules.toml (attributes: similarity=attributes)",
            "variants": variants,
            "peak_rss_mib": peak_rss_mib(),
            # The machine is shared: timings scale with the other processes' load.
            "load_average_1m_at_end": os.getloadavg()[0],
        },
    )
    print(f"load average (1 min) {os.getloadavg()[0]:.2f}; wrote {path}")


if __name__ == "__main__":
    main()
