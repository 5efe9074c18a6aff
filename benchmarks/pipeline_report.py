"""The design brief's table, measured: traditional pipeline against GNN+Transformer, offline.

For each dataset, on the test stage and the same users, every system runs the whole pipeline one
request at a time (trainer.evaluation.pipeline): stage 1 candidates, stage 2 ranking, stage 3 the
serving re-ranker with vespa_app/client/rerank/rules.toml (served k = 50, metrics on the top 10).

- traditional: MostPop and ItemKNN (each its own column) score the catalogue; their top 500 go
  to the re-ranker (no learned ranker);
- GNN+Transformer: GAT and LightGCN are trained (``--budget`` seconds each) and the one with the
  better validation NDCG@10 (full ranking, never test) gives stage 1 (top 10k by cosine, the
  package's first phase keeps 500); the residual transformer ranker, trained on the validation
  targets against that model's top 500, scores them; then the same re-ranker.

Trained checkpoints are cached under artifacts/pipeline_report/<dataset>/ (reused when the budget
matches; ``--retrain`` forces training); the medium marketplace is generated once
(trainer.data.synthetic, seed 0) and cached there too. Writes
benchmarks/results/pipeline_report.json and pipeline_report_<dataset>.png (one bar chart per
metric with the brief's targets drawn). Metric definitions: docs/pipeline-report.md.

    nice -n 10 python -m benchmarks.pipeline_report --datasets marketplace-medium,beauty_s3rec \\
        --budget 300 --users 5000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

# One BLAS thread per process, as torch gets one: with OpenBLAS's default threads beside torch on
# this loaded 2-core machine, the (20k x 64) matrix-vector products of stage 1 and of the
# re-ranker's MMR took 15-30 ms instead of 0.3 ms. Must be set before numpy loads OpenBLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import torch

from benchmarks.common import RESULTS_DIR, peak_rss_mib, write_results
from benchmarks.graph_models import configure
from benchmarks.graph_models import load as load_named
from trainer.data.interactions import InteractionData
from trainer.data.splits import split_dataset
from trainer.evaluation.pipeline import (
    RANK_COUNT,
    SERVED_K,
    TARGET_HITS,
    BaselineSystem,
    Catalogue,
    GraphRankerSystem,
    K,
    pipeline_metrics,
    run_pipeline,
    sample_users,
    seller_exposure,
    validation_ndcg,
)
from trainer.evaluation.ranking import full_ranking
from trainer.models.base import Recommender, load_checkpoint, save_checkpoint
from trainer.models.ranker import Ranker, RankerConfig, load_ranker, save_ranker
from trainer.models.registry import all_models
from trainer.paths import artifacts_dir
from vespa_app.client.rerank import Reranker

NAME = "pipeline_report"
# The design brief's expected results (anchors.md §6): design targets, not published numbers.
TARGETS = {
    "Precision@10": {"traditional": 0.15, "gnn_transformer": (0.22, 0.28)},
    "Coverage@10": {"traditional": 0.40, "gnn_transformer": (0.65, 0.75)},
    "cold_users/Precision@10": {"traditional": 0.05, "gnn_transformer": (0.15, 0.20)},
    "ILD-path@10": {"traditional": 0.3, "gnn_transformer": (0.5, 0.6)},
    "latency/total/p50_ms": {"traditional": 30.0, "gnn_transformer": (45.0, 45.0)},
}
TABLE = (
    ("Precision@10", "Precision@10"),
    ("HR@10", "HR@10"),
    ("NDCG@10", "NDCG@10"),
    ("Coverage@10", "Coverage@10"),
    ("cold-start P@10", "cold_users/Precision@10"),
    ("cold-start users", "cold_users/users"),
    ("ILD-path@10", "ILD-path@10"),
    ("ILD-category@10", "ILD-category@10"),
    ("ILD-embedding@10", "ILD-embedding@10"),
    ("ILD-seller@10", "ILD-seller@10"),
    ("latency p50 ms", "latency/total/p50_ms"),
    ("latency p99 ms", "latency/total/p99_ms"),
    ("  stage 1 p50 ms", "latency/retrieve/p50_ms"),
    ("  stage 2 p50 ms", "latency/rank/p50_ms"),
    ("  stage 3 p50 ms", "latency/rerank/p50_ms"),
)
log = logging.getLogger(NAME)


def cache_dir(dataset: str) -> Path:
    return artifacts_dir() / NAME / dataset.replace("/", "_")


def load_dataset(name: str) -> InteractionData:
    """A shared-data folder name or path, or marketplace-<scale> (generated once, cached)."""
    if not name.startswith("marketplace-"):
        return load_named(name)
    from trainer.data.marketplace import load_marketplace, save_marketplace
    from trainer.data.synthetic import generate

    folder = cache_dir(name) / "dataset"
    if (folder / "dataset.json").exists():
        return split_dataset(load_marketplace(folder))
    market = generate(name.removeprefix("marketplace-"), seed=0)
    save_marketplace(market, folder)
    return split_dataset(market)


def trained_model(
    name: str, data: InteractionData, dataset: str, args: argparse.Namespace
) -> tuple[Recommender, dict[str, Any]]:
    """A graph or baseline model, from the cache when it was trained with the same budget."""
    path = cache_dir(dataset) / f"{name}.pt"
    cls = all_models()[name]  # also fills the registry load_checkpoint reads
    if path.exists() and not args.retrain:
        checkpoint = load_checkpoint(path)
        if checkpoint.extra.get("budget") == args.budget:
            log.info("%s: cached %s", dataset, path)
            return checkpoint.model, checkpoint.extra
    model = cls(configure(cls, args.budget, args.threads), data.num_users, data.num_items)
    start = time.perf_counter()
    report = model.fit(data, progress=False)
    info = {
        "budget": args.budget,
        "train_s": round(time.perf_counter() - start, 1),
        "epochs": report.epochs,
        "best_epoch": report.best_epoch,
    }
    if name not in ("mostpop", "itemknn"):  # baselines retrain in seconds
        save_checkpoint(model, data, path, **info)
    return model, info


def ranker_config(args: argparse.Namespace, valid_users: int) -> RankerConfig:
    # As benchmarks/ranker.py: residual on retrieval, trained on the validation targets against
    # retrieval's own top 500, one encoder block so that several epochs fit the budget.
    return RankerConfig(
        time_budget=args.budget,
        max_impressions=60_000,
        max_targets=60_000,
        epochs=30,
        blocks=1,
        target_stage="valid",
        impression_weight=0.0,
        hard_share=1.0,
        # Held out of training to select the epoch: at most a fifth of the validation users.
        valid_users=max(min(1000, valid_users // 5), 1),
        valid_candidates=RANK_COUNT,
        seed=0,
    )


def trained_ranker(
    model: Recommender, data: InteractionData, dataset: str, args: argparse.Namespace
) -> tuple[Ranker, dict[str, Any]]:
    """The residual ranker over ``model``'s embeddings, with the test stage's user vectors."""
    path = cache_dir(dataset) / f"ranker-{model.name}.pt"
    ranker = None
    info: dict[str, Any] = {}
    if path.exists() and not args.retrain:
        raw = torch.load(path, map_location="cpu", weights_only=False)
        if raw.get("extra", {}).get("budget") == args.budget:
            log.info("%s: cached %s", dataset, path)
            ranker, info = load_ranker(path), raw["extra"]
    if ranker is None:
        candidates = full_ranking(
            model, data, "valid", RANK_COUNT, users=np.arange(data.num_users), batch_size=2048
        ).items
        # Validation user vectors: the history before the validation targets it trains on.
        ranker = Ranker(
            ranker_config(args, len(np.unique(data.valid["user_idx"]))),
            model.item_embeddings(),
            user_embeddings=model.user_embeddings(data, "valid"),
        )
        report = ranker.fit(data, candidates, progress=False)
        info = {
            "budget": args.budget,
            "train_s": round(report["seconds"], 1),
            "epochs": report["epochs"],
            "best_epoch": report["best_epoch"],
            "retrieval_weight": ranker.weight,
            "valid_ndcg@10": max(h.get("valid_ndcg@10", 0.0) for h in report["history"]),
        }
        save_ranker(ranker, path, **info)
    # Test requests read the user vectors of the test stage's history (the user document).
    served = Ranker(
        ranker.config,
        ranker.item_vectors,
        normalised=True,
        user_embeddings=model.user_embeddings(data, "test"),
    )
    served.load_state_dict(ranker.state_dict())
    served.train_mode(False)
    return served, info


def run_dataset(dataset: str, args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    data = load_dataset(dataset)
    catalogue = Catalogue.from_data(data)
    entry: dict[str, Any] = {
        "users_total": data.num_users,
        "items": data.num_items,
        "train_events": len(data.train),
        "protocol": data.protocol,
        "load_s": round(time.perf_counter() - start, 1),
        "in_stock_items": int(catalogue.in_stock.sum()),
    }
    valid_users = sample_users(data, "valid", args.valid_users, seed=1)
    graphs: dict[str, dict[str, Any]] = {}
    models: dict[str, Recommender] = {}
    for name in args.graph_models:
        log.info("%s: %s", dataset, name)
        model, info = trained_model(name, data, dataset, args)
        info["valid_NDCG@10"] = validation_ndcg(model, data, valid_users)
        graphs[name], models[name] = info, model
        log.info("%s: %s validation NDCG@10 %.4f", dataset, name, info["valid_NDCG@10"])
    best = max(graphs, key=lambda n: graphs[n]["valid_NDCG@10"])
    entry["graph_models"] = graphs
    entry["graph_model"] = best
    entry["valid_users"] = len(valid_users)
    log.info("%s: ranker over %s", dataset, best)
    ranker, ranker_info = trained_ranker(models[best], data, dataset, args)
    entry["ranker"] = {**ranker_info, "config": dataclasses.asdict(ranker.config)}

    users = sample_users(data, "test", args.users, seed=0)
    exposure = seller_exposure(data, "test", catalogue)
    entry["evaluated_users"] = len(users)
    entry["fairness_active"] = exposure is not None
    reranker = Reranker()
    entry["rules_file"] = reranker.rules.source
    embeddings = models[best].item_embeddings().numpy()
    if args.mmr_embeddings:  # the product vectors serving attaches (the stage-1 model's)
        catalogue = catalogue.with_embeddings(embeddings)
    entry["mmr_similarity"] = (
        reranker.rules.diversity.similarity if args.mmr_embeddings else "attributes"
    )
    torch.set_num_threads(1)  # serving's one thread per request (ORT intra_op_num_threads=1)
    systems = []
    for name in args.baselines:
        model, info = trained_model(name, data, dataset, args)
        systems.append(("traditional", BaselineSystem(model, catalogue)))
    systems.append(
        (
            "gnn_transformer",
            GraphRankerSystem(models[best], ranker, catalogue, name=f"{best}+ranker"),
        )
    )
    entry["systems"] = {}
    for kind, system in systems:
        log.info("%s: pipeline %s over %d users", dataset, system.name, len(users))
        run = run_pipeline(system, data, "test", users, reranker, exposure, progress=args.progress)
        metrics = pipeline_metrics(run, data, "test", catalogue, embeddings=embeddings)
        entry["systems"][system.name] = {
            "kind": kind,
            "metrics": metrics,
            "rules_moved": run.rules_moved,
            "score_source": run.score_source,
        }
    entry["seconds"] = round(time.perf_counter() - start, 1)
    entry["load_average_1m_at_end"] = os.getloadavg()[0]
    entry["openblas_threads"] = os.environ.get("OPENBLAS_NUM_THREADS")
    return entry


def _fmt(value: float | None, key: str) -> str:
    if value is None:
        return "n/a"
    if key.endswith("/users"):
        return f"{value:.0f}"
    if "latency" in key:
        return f"{value:.1f}"
    return f"{value:.4f}"


def _target(key: str, kind: str) -> str:
    target = TARGETS.get(key, {}).get(kind)
    if target is None:
        return ""
    if isinstance(target, tuple):
        return f"{target[0]:g}" if target[0] == target[1] else f"{target[0]:g}-{target[1]:g}"
    return f"{target:g}"


def markdown_table(entry: dict[str, Any]) -> str:
    """The measured values per system, the brief's targets beside them."""
    names = list(entry["systems"])
    kinds = [entry["systems"][n]["kind"] for n in names]
    head = ["metric", *names, "target traditional", "target GNN+Transformer"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, key in TABLE:
        cells = [_fmt(entry["systems"][n]["metrics"].get(key), key) for n in names]
        lines.append(
            f"| {label.strip()} | "
            + " | ".join(cells)
            + f" | {_target(key, 'traditional')} | {_target(key, 'gnn_transformer')} |"
        )
    del kinds
    return "\n".join(lines)


def plot(dataset: str, entry: dict[str, Any], path: Path) -> Path:
    """One bar chart per metric: every system, the traditional target as a dashed line and the
    GNN+Transformer target range as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        ("Precision@10", "Precision@10"),
        ("cold-start Precision@10 (users with ≤ 3 history events)", "cold_users/Precision@10"),
        ("catalog coverage@10", "Coverage@10"),
        ("diversity: ILD-path@10", "ILD-path@10"),
        ("latency per request, in process (bar p50, tick p99), ms", "latency/total/p50_ms"),
        ("HR@10 (no target in the brief)", "HR@10"),
    )
    names = list(entry["systems"])
    colours = [
        "#4c72b0" if entry["systems"][n]["kind"] == "traditional" else "#dd8452" for n in names
    ]
    fig, axes = plt.subplots(2, 3, figsize=(14, 8))
    for ax, (title, key) in zip(axes.ravel(), panels, strict=True):
        values = [entry["systems"][n]["metrics"].get(key, np.nan) for n in names]
        x = np.arange(len(names))
        ax.bar(x, np.nan_to_num(values), color=colours)
        tops = [v for v in values if not np.isnan(v)]
        if key.startswith("latency"):
            p99 = [
                entry["systems"][n]["metrics"].get("latency/total/p99_ms", np.nan) for n in names
            ]
            ax.scatter(x, p99, marker="_", s=600, color="black", label="p99", zorder=3)
            tops += p99
        for xi, v in zip(x, values, strict=True):
            label = (
                "n/a (no users)"
                if np.isnan(v)
                else (f"{v:.1f}" if "latency" in key else f"{v:.3f}")
            )
            ax.annotate(label, (xi, 0 if np.isnan(v) else v), ha="center", va="bottom", fontsize=8)
        target = TARGETS.get(key, {})
        if "traditional" in target:
            ax.axhline(
                target["traditional"], color="#4c72b0", ls="--", lw=1, label="target traditional"
            )
            tops.append(target["traditional"])
        if "gnn_transformer" in target:
            low, high = target["gnn_transformer"]
            if low == high:
                ax.axhline(low, color="#dd8452", ls="--", lw=1, label="target GNN+T")
            else:
                ax.axhspan(low, high, color="#dd8452", alpha=0.2, label="target GNN+T")
            tops.append(high)
        if key == "Precision@10" and entry["protocol"] == "leave_one_out":
            # one target per user: Precision@10 = HR@10 / 10 <= 0.1
            ax.axhline(0.1, color="grey", ls=":", lw=1, label="ceiling (1 target)")
        ax.set_ylim(0, 1.25 * max(tops, default=1.0) or 1.0)
        ax.set_xticks(x, names, fontsize=8)
        ax.set_title(title, fontsize=9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper right", framealpha=0.9)
    fig.suptitle(
        f"{dataset}: {entry['evaluated_users']} test users, {entry['protocol']} split, top 10 of "
        f"the re-ranked 50 (blue: traditional, orange: GNN+Transformer = "
        f"{entry['graph_model']} + ranker)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{NAME}", description=__doc__)
    parser.add_argument("--datasets", default="marketplace-medium,beauty_s3rec")
    parser.add_argument("--budget", type=float, default=300.0, help="training seconds per model")
    parser.add_argument("--users", type=int, default=0, help="test users to sample; 0 = all")
    parser.add_argument("--valid-users", type=int, default=5000, help="for model selection")
    parser.add_argument("--graph-models", default="gat,lightgcn", help="stage-1 candidates")
    parser.add_argument("--baselines", default="mostpop,itemknn", help="traditional systems")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training")
    parser.add_argument(
        "--mmr-embeddings",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="give candidates the stage-1 model's product vectors, as the serving pipeline "
        "does (MMR by embedding cosine); --no-mmr-embeddings: attribute similarity",
    )
    parser.add_argument("--retrain", action="store_true", help="ignore cached checkpoints")
    parser.add_argument(
        "--plot-only", action="store_true", help="redraw the PNGs from the results file"
    )
    parser.add_argument("--progress", action="store_true", help="progress bar per system")
    args = parser.parse_args(argv)
    args.graph_models = [m for m in args.graph_models.split(",") if m]
    args.baselines = [m for m in args.baselines.split(",") if m]
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    log.setLevel(logging.INFO)
    torch.set_num_threads(max(args.threads, 1))
    results: dict[str, Any] = {
        "protocol": (
            f"test stage, full pipeline per request: stage 1 (baseline top {RANK_COUNT}, or "
            f"graph-model cosine top {TARGET_HITS} + first phase to {RANK_COUNT}), stage 2 "
            f"(residual ranker, GNN+Transformer only), stage 3 (rules.toml, k={SERVED_K}); "
            f"metrics on the top {K}; seen items (except targets) and out-of-stock items excluded"
        ),
        "targets": {k: v for k, v in TARGETS.items()},
        "budget_s": args.budget,
        "datasets": {},
    }
    previous = RESULTS_DIR / f"{NAME}.json"
    if args.plot_only:
        for dataset, entry in json.loads(previous.read_text())["datasets"].items():
            print(plot(dataset, entry, RESULTS_DIR / f"{NAME}_{dataset}.png"))
        return
    for dataset in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        entry = run_dataset(dataset, args)
        png = RESULTS_DIR / f"{NAME}_{dataset}.png"
        entry["plot"] = str(plot(dataset, entry, png).relative_to(RESULTS_DIR.parents[1]))
        entry["peak_rss_mib"] = round(peak_rss_mib(), 1)
        # Datasets not rerun keep their last results (read now: one dataset per process can run
        # beside another).
        if previous.exists():
            results["datasets"] = json.loads(previous.read_text()).get("datasets", {})
        results["datasets"][dataset] = entry
        write_results(NAME, results)
        print(
            f"\n{dataset} ({entry['protocol']}, {entry['evaluated_users']} test users, "
            f"stage 1 from {entry['graph_model']}):"
        )
        print(markdown_table(entry), flush=True)
    print(f"\nwrote {RESULTS_DIR / (NAME + '.json')}")


if __name__ == "__main__":
    main()
