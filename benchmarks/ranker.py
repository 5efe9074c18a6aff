"""The middle-stage ranker as a re-ranker of retrieval's top 500, and its serving latency.

For each dataset: a LightGCN retrieval model (dim 128, the product embedding width of the
package) is trained under a time budget; the ranker is trained on its frozen item embeddings
(impression outcomes where the data has them, next-item targets with negatives half drawn from
retrieval's own top 100); then, for a fixed sample of test users, retrieval's top 500 (seen items
excluded, full_ranking) are re-ranked and NDCG@10 / Precision@10 of both orders are compared on
the same lists. Latency: per query, 500 candidates, onnxruntime (intra_op_num_threads=1) against
PyTorch eager (1 thread) in the same run, with the history encoder (one encoder call + the
scorer over 500 rows) and without it (scorer only, user_state given).

    nice -n 15 python -m benchmarks.ranker [--datasets marketplace-medium,beauty_s3rec]

``--features`` compares, on the same retrieval model and lists, residual rankers (scorer + w *
retrieval cosine) without features (history 50), with the history codes (event, hour, device,
location) and candidate features (price, margin, popularity, freshness) at history 50, and with
everything the ``ranking_features`` profile serves: history 100, those features and the seller
and category codes. Each dataset uses only the features its data carries (``applicable``: a
review dataset has no impressions, context or margin), all trained on impression outcomes (where
there are any) + next-item targets (results: ranker_features_h100.json):

    nice -n 10 python -m benchmarks.ranker --features --datasets marketplace-medium,beauty_s3rec
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from benchmarks.common import RESULTS_DIR, peak_rss_mib, write_results
from benchmarks.graph_models import load
from trainer.evaluation.ranking import evaluation_users, full_ranking
from trainer.models.lightgcn import LightGCN, LightGCNConfig
from trainer.models.ranker import (
    Ranker,
    RankerConfig,
    encoder_example,
    encoder_input_names,
    export_candidate_scorer,
    export_history_encoder,
    rerank_evaluation,
)
from trainer.ranking.features import code_vocabularies

CANDIDATES = 500


def retrieval_candidates(model, data, stage, users, k, chunk=2048) -> np.ndarray:
    return full_ranking(model, data, stage, k, users=users, batch_size=chunk).items


def latency(ranker: Ranker, runs: int) -> dict[str, float]:
    """Median / p99 milliseconds per query for 500 candidates."""
    torch.set_num_threads(1)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory() as tmp:
        enc_path = export_history_encoder(ranker, Path(tmp) / "history_encoder.onnx")
        sco_path = export_candidate_scorer(ranker, Path(tmp) / "ranker.onnx")
        encoder = ort.InferenceSession(str(enc_path), options, providers=["CPUExecutionProvider"])
        scorer = ort.InferenceSession(str(sco_path), options, providers=["CPUExecutionProvider"])
    inputs = encoder_example(ranker, 1, ranker.config.history_len)
    inputs["hist"][:] = np.random.default_rng(0).integers(
        1, ranker.num_items + 1, inputs["hist"].shape
    )
    items = np.random.default_rng(1).integers(0, ranker.num_items, CANDIDATES)
    cand = ranker.cand_vectors(items, np.zeros(CANDIDATES)).numpy()
    state = encoder.run(None, inputs)[0]

    def ort_full():
        s = encoder.run(None, inputs)[0]
        return scorer.run(None, {"user_state": np.repeat(s, CANDIDATES, 0), "cand": cand})[0]

    def ort_scorer():
        return scorer.run(None, {"user_state": np.repeat(state, CANDIDATES, 0), "cand": cand})[0]

    t_inputs = [torch.as_tensor(inputs[k]) for k in encoder_input_names(ranker.config)]
    t_cand, t_state = torch.as_tensor(cand), torch.as_tensor(state)

    @torch.no_grad()
    def torch_full():
        s = ranker.encoder(*t_inputs)
        return ranker.scorer(s.expand(CANDIDATES, -1), t_cand)

    @torch.no_grad()
    def torch_scorer():
        return ranker.scorer(t_state.expand(CANDIDATES, -1), t_cand)

    out = {}
    for name, fn in (
        ("onnx_with_encoder", ort_full),
        ("onnx_scorer_only", ort_scorer),
        ("torch_with_encoder", torch_full),
        ("torch_scorer_only", torch_scorer),
    ):
        for _ in range(10):
            fn()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1000)
        out[f"{name}/p50_ms"] = float(np.median(times))
        out[f"{name}/p99_ms"] = float(np.percentile(times, 99))
    return out


def run_dataset(name: str, args) -> dict:
    torch.set_num_threads(1)
    started = time.perf_counter()
    data = load(name)
    result: dict = {
        "users": data.num_users,
        "items": data.num_items,
        "load_s": time.perf_counter() - started,
    }
    torch.manual_seed(0)
    retrieval = LightGCN(
        LightGCNConfig(
            dim=128, loss="softmax", lr=5e-3, time_budget=args.retrieval_budget, threads=1
        ),
        data.num_users,
        data.num_items,
    )
    t = time.perf_counter()
    retrieval.fit(data, progress=False)
    result["retrieval_train_s"] = time.perf_counter() - t
    t = time.perf_counter()
    train_candidates = retrieval_candidates(
        retrieval, data, "valid", np.arange(data.num_users), CANDIDATES
    )
    result["candidates_s"] = time.perf_counter() - t
    # A residual on retrieval (score = scorer + w * cosine), trained on the validation targets
    # against retrieval's own top 500 (the list it re-ranks), one encoder block so that several
    # epochs fit the budget; valid_users held out of training select the epoch.
    config = RankerConfig(
        time_budget=args.ranker_budget,
        max_impressions=args.max_samples,
        max_targets=args.max_samples,
        epochs=args.epochs,
        blocks=1,
        target_stage="valid",
        impression_weight=0.0,
        hard_share=1.0,
        valid_users=1000,
        valid_candidates=CANDIDATES,
    )
    ranker = Ranker(
        config, retrieval.item_embeddings(), user_embeddings=retrieval.user_embeddings(data, "test")
    )
    report = ranker.fit(data, train_candidates, progress=True)
    result["ranker"] = {k: v for k, v in report.items() if k != "history"}
    result["ranker"]["history"] = report["history"]
    result["ranker"]["retrieval_weight"] = ranker.weight
    result["ranker"]["config"] = {
        k: getattr(config, k)
        for k in ("blocks", "target_stage", "impression_weight", "hard_share", "negatives")
    }
    users = evaluation_users(data, "test")
    rng = np.random.default_rng(0)
    if len(users) > args.test_users:
        users = np.sort(rng.choice(users, args.test_users, replace=False))
    candidates = retrieval_candidates(retrieval, data, "test", users, CANDIDATES)
    t = time.perf_counter()
    result["rerank"] = rerank_evaluation(ranker, data, "test", users, candidates)
    result["rerank_s"] = time.perf_counter() - t
    result["latency"] = latency(ranker, args.runs)
    return result


FEATURES = {
    "history_features": ("event", "hour", "device", "location"),
    "cand_features": ("price", "margin", "popularity", "freshness"),
}
CODES = ("seller", "category")


def applicable(data) -> dict[str, tuple[str, ...]]:
    """The features and codes of the full set that ``data`` carries: a history code needs known
    values (event: more than one type), a candidate column known values, a code more than one
    known id."""
    train, products = data.train, data.market.products
    history = tuple(
        n
        for n in FEATURES["history_features"]
        if (train[n].nunique() > 1 if n == "event" else bool((train[n] >= 0).any()))
    )
    columns = {"price": "price", "margin": "margin", "freshness": "created_at"}
    cand = tuple(
        n
        for n in FEATURES["cand_features"]
        if n == "popularity" or bool(products[columns[n]].notna().any())
    )
    sources = {"seller": "seller_id", "category": "category_id"}
    codes = tuple(n for n in CODES if products[sources[n]].dropna().nunique() > 1)
    return {"history_features": history, "cand_features": cand, "cand_codes": codes}


def run_features(name: str, args) -> dict:
    """Retrieval order vs the ranker without and with features on the same top-500 lists; both
    rankers trained on impression outcomes + next-item targets (training events)."""
    torch.set_num_threads(1)
    data = load(name)
    result: dict = {"users": data.num_users, "items": data.num_items}
    torch.manual_seed(0)
    retrieval = LightGCN(
        LightGCNConfig(
            dim=128, loss="softmax", lr=5e-3, time_budget=args.retrieval_budget, threads=1
        ),
        data.num_users,
        data.num_items,
    )
    retrieval.fit(data, progress=False)
    train_candidates = retrieval_candidates(
        retrieval, data, "valid", np.arange(data.num_users), CANDIDATES
    )
    users = evaluation_users(data, "test")
    rng = np.random.default_rng(0)
    if len(users) > args.test_users:
        users = np.sort(rng.choice(users, args.test_users, replace=False))
    candidates = retrieval_candidates(retrieval, data, "test", users, CANDIDATES)
    result["variants"] = {}
    user_vectors = retrieval.user_embeddings(data, "test")
    present = applicable(data)
    result["applicable"] = {k: list(v) for k, v in present.items()}
    h50 = {k: v for k, v in present.items() if k != "cand_codes"}
    variants = [
        ("residual_without_features", {}, True),
        ("residual_with_features", h50, True),
        ("residual_with_features_h100_codes", {**present, "history_len": 100}, True),
        # Attribution (only with --variants): history 100 alone, codes alone.
        ("residual_with_features_h100", {**h50, "history_len": 100}, True),
        ("residual_with_features_codes", present, True),
    ]
    main_three = [v[0] for v in variants[:3]]
    wanted = args.variants.split(",") if args.variants else main_three
    for variant, extra, residual in variants:
        if variant not in wanted:
            continue
        torch.manual_seed(0)
        config = RankerConfig(
            time_budget=args.ranker_budget,
            max_impressions=args.max_samples,
            max_targets=args.max_samples,
            epochs=args.epochs,
            blocks=1,
            valid_users=1000,
            valid_candidates=CANDIDATES,
            **extra,
        )
        # residual: score = scorer + w * retrieval cosine (starts at retrieval order).
        ranker = Ranker(
            config,
            retrieval.item_embeddings(),
            user_embeddings=user_vectors if residual else None,
            vocabularies=code_vocabularies(data.market, config.cand_codes),
        )
        report = ranker.fit(data, train_candidates, progress=True)
        rerank = rerank_evaluation(ranker, data, "test", users, candidates)
        result["variants"][variant] = {
            "residual": residual,
            "retrieval_weight": ranker.weight if residual else 0.0,
            "history_len": config.history_len,
            "features": {k: list(v) for k, v in extra.items() if k != "history_len"},
            "training": {k: v for k, v in report.items()},
            "rerank": rerank,
            "latency": latency(ranker, args.runs),
        }
        print(
            f"{name} {variant}: NDCG@10 retrieval {rerank['retrieval/NDCG@10']:.4f} "
            f"ranker {rerank['ranker/NDCG@10']:.4f}; P@10 retrieval "
            f"{rerank['retrieval/Precision@10']:.4f} ranker {rerank['ranker/Precision@10']:.4f}",
            flush=True,
        )
    return result


def main_features(args) -> None:
    results = {
        "protocol": (
            "test users (sample), LightGCN dim 128 top 500, seen items excluded (full_ranking), "
            "re-ranked by residual rankers (scorer + w * retrieval cosine): without features "
            "(history 50), with the history codes (event, hour, device, location) and "
            "candidate features (price, margin, popularity, freshness) the dataset carries "
            "(history 50), and with those plus the seller and category codes at history 100; "
            "all trained on impression outcomes + next-item targets of the training events; "
            "NDCG@10 / Precision@10 on the same lists; latency per query for 500 candidates, "
            "ONNX 1 thread vs eager torch 1 thread"
        ),
        "datasets": {name: run_features(name, args) for name in args.datasets.split(",")},
        "peak_rss_mib": peak_rss_mib(),
    }
    path = write_results(args.features_name, results, module="ranker")
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="marketplace-medium,beauty_s3rec")
    parser.add_argument("--retrieval-budget", type=float, default=60.0, help="LightGCN seconds")
    parser.add_argument("--ranker-budget", type=float, default=90.0, help="ranker seconds")
    parser.add_argument("--epochs", type=int, default=30, help="ranker epoch limit")
    parser.add_argument("--max-samples", type=int, default=60_000, help="per sample kind")
    parser.add_argument("--test-users", type=int, default=5000, help="re-ranked test users")
    parser.add_argument("--runs", type=int, default=200, help="latency repetitions")
    parser.add_argument(
        "--features",
        action="store_true",
        help="ranker without vs with features (writes ranker_features.json)",
    )
    parser.add_argument(
        "--variants",
        default="",
        help="with --features: comma-separated variant names to run (default: without "
        "features, with features, with features + history 100 + codes; also "
        "residual_with_features_h100, residual_with_features_codes)",
    )
    parser.add_argument(
        "--features-name",
        default="ranker_features_h100",
        help="with --features: the results file name (benchmarks/results/NAME.json)",
    )
    args = parser.parse_args(argv)
    if args.features:
        main_features(args)
        return
    results = {
        "protocol": (
            "test users (sample), LightGCN dim 128 top 500, seen items excluded (full_ranking), "
            "re-ranked by the residual ranker (scorer + w * retrieval cosine) trained on "
            "validation targets; NDCG@10 / Precision@10 of both orders on the same lists"
        ),
        "datasets": {},
    }
    header = ("dataset", "NDCG@10 ret", "NDCG@10 rank", "P@10 ret", "P@10 rank")
    print(f"{header[0]:<20} " + " ".join(f"{h:>13}" for h in header[1:]))
    for name in args.datasets.split(","):
        res = run_dataset(name, args)
        results["datasets"][name] = res
        r = res["rerank"]
        print(
            f"{name:<20} {r['retrieval/NDCG@10']:>13.4f} {r['ranker/NDCG@10']:>13.4f} "
            f"{r['retrieval/Precision@10']:>13.4f} {r['ranker/Precision@10']:>13.4f}",
            flush=True,
        )
        lat = res["latency"]
        print(
            "  latency p50 ms (500 candidates): "
            + ", ".join(
                f"{k.split('/')[0]} {v:.2f}" for k, v in lat.items() if k.endswith("p50_ms")
            ),
            flush=True,
        )
    results["peak_rss_mib"] = peak_rss_mib()
    # Datasets not rerun keep their last results (one dataset can be rerun on its own).
    previous = RESULTS_DIR / "ranker.json"
    if previous.exists():
        kept = json.loads(previous.read_text()).get("datasets", {})
        results["datasets"] = {**kept, **results["datasets"]}
    path = write_results("ranker", results)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
