"""GraphSAGE, PinSAGE and GAT against LightGCN and the baselines, full ranking plus cold start.

For each dataset every model is trained with a wall-clock budget (``--budget`` seconds of
training steps, epochs chosen on validation NDCG@20) and evaluated on the test stage with the
full-ranking protocol of :func:`trainer.evaluation.evaluate`; the table shows the overall metrics
and the cold-start slices: ``cold_users`` (at most 3 positive history events) and ``new_items``
(targets that are items with no event before the test stage; only inductive models can rank
those). Also recorded: training seconds, epochs, and for the sampled graph models the share of a
training step spent sampling.

Datasets: a folder name under ../shared/data (any supported format, e.g. ``beauty_s3rec``), a
path to a dataset folder, or ``marketplace-<scale>[@seed]`` for the synthetic marketplace
(``trainer.data.synthetic.generate(scale, seed)``, seed 0 by default; another generator seed
gives another draw of users, products and new listings, e.g. a second new-item slice).

``--seeds 0,1`` trains every model once per seed: a row holds the mean of each metric, and
``seeds`` the per-seed values of the table's metrics (with the prior weights each run chose).

    nice -n 15 python -m benchmarks.graph_models --datasets beauty_s3rec,marketplace-medium
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import peak_rss_mib, write_results
from trainer.data.interactions import InteractionData
from trainer.data.splits import split_dataset
from trainer.evaluation import evaluate, format_table
from trainer.models.registry import all_models
from trainer.paths import shared_data_dir

MODELS = ("mostpop", "itemknn", "bprmf", "lightgcn", "graphsage", "pinsage", "gat")
SHOWN = (
    "HR@10",
    "NDCG@10",
    "Recall@20",
    "NDCG@20",
    "cold_users/HR@10",
    "cold_users/NDCG@10",
    "new_items/HR@10",
    "new_items/Recall@20",
    "train_s",
)
# Settings beyond the defaults, per model (the budget, threads and seed are added to all).
OVERRIDES: dict[str, dict[str, Any]] = {
    "lightgcn": {"loss": "softmax", "num_negatives": 1024, "temperature": 0.1, "lr": 5e-3},
    # BPR-MF has no time budget; a few epochs keep it within the others' budget on 2 busy cores.
    "bprmf": {"epochs": 8},
}


def load(name: str) -> InteractionData:
    if name.startswith("marketplace-"):
        from trainer.data.synthetic import generate

        scale, _, seed = name.removeprefix("marketplace-").partition("@")
        return split_dataset(generate(scale, seed=int(seed or 0)))
    from trainer.data.loaders import load_dataset

    folder = Path(name)
    if not folder.exists():
        folder = shared_data_dir() / name
    if not folder.exists():
        raise SystemExit(f"dataset not found: {name} (looked in {shared_data_dir()})")
    return split_dataset(load_dataset(folder))


def configure(cls, budget: float, threads: int, seed: int = 0) -> Any:
    fields = {field.name for field in dataclasses.fields(cls.config_class)}
    wanted: dict[str, Any] = {"threads": threads, "seed": seed}
    if "time_budget" in fields:  # the budget, not an epoch count, ends training
        wanted.update(time_budget=budget, epochs=1000)
    wanted.update(OVERRIDES.get(cls.name, {}))
    return cls.config_class(**{key: value for key, value in wanted.items() if key in fields})


def run_model(
    name: str, data: InteractionData, budget: float, threads: int, seed: int = 0
) -> dict[str, Any]:
    cls = all_models()[name]
    config = configure(cls, budget, threads, seed)
    model = cls(config, data.num_users, data.num_items)
    start = time.perf_counter()
    report = model.fit(data, progress=False)
    train_s = time.perf_counter() - start
    previous = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        metrics = evaluate(model, data, stage="test", protocol="full", ks=(10, 20))
    finally:
        torch.set_num_threads(previous)
    row: dict[str, Any] = {
        key: float(value)
        for key, value in metrics.items()
        if "@" not in key or key.split("/")[-1].split("@")[0] in ("HR", "Recall", "NDCG")
    }
    row.update(
        train_s=round(train_s, 1),
        epochs=report.epochs,
        best_epoch=report.best_epoch,
        config=dataclasses.asdict(config),
    )
    prior = getattr(model, "prior", None)
    if prior is not None:  # the graph models' score priors, chosen on validation
        row["prior"] = dataclasses.asdict(prior)
    shares = [r["sample_share"] for r in report.history if "sample_share" in r]
    if shares:
        row["sample_share"] = round(sum(shares) / len(shares), 3)
        row["epoch_s"] = round(report.history[-1]["seconds"], 1)
    return row


def run_seeds(
    name: str, data: InteractionData, budget: float, threads: int, seeds: list[int]
) -> dict[str, Any]:
    """One row: the first seed's row with every number replaced by the mean over ``seeds``."""
    runs = {seed: run_model(name, data, budget, threads, seed) for seed in seeds}
    row = dict(runs[seeds[0]])
    if len(seeds) > 1:
        for key in row:
            values = [run.get(key) for run in runs.values()]
            if all(isinstance(v, float | int) and not isinstance(v, bool) for v in values):
                row[key] = float(sum(values) / len(values))
        row["seeds"] = {
            str(seed): {
                **{key: run[key] for key in (*SHOWN, "best_epoch") if key in run},
                **({"prior": run["prior"]} if "prior" in run else {}),
            }
            for seed, run in runs.items()
        }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.graph_models", description=__doc__)
    parser.add_argument(
        "--datasets",
        default="beauty_s3rec,marketplace-medium",
        help="comma-separated: shared-data folder names, paths, or marketplace-<scale>",
    )
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated model names")
    parser.add_argument(
        "--budget", type=float, default=180.0, help="seconds of training steps per model"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (shared machine)")
    parser.add_argument(
        "--seeds", default="0", help="comma-separated training seeds; rows hold their mean"
    )
    parser.add_argument(
        "--results",
        default="graph_models",
        help="name of the results file (benchmarks/results/NAME.json); a partial rerun can keep "
        "the full table's file",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    seeds = [int(seed) for seed in args.seeds.split(",") if seed.strip()]
    results: dict[str, Any] = {
        "budget_s": args.budget,
        "threads": args.threads,
        "seeds": seeds,
        "datasets": {},
    }
    for dataset in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        start = time.perf_counter()
        data = load(dataset)
        rows: dict[str, dict[str, Any]] = {}
        entry = {
            "users": data.num_users,
            "items": data.num_items,
            "train_events": len(data.train),
            "protocol": data.protocol,
            "load_s": round(time.perf_counter() - start, 1),
            "models": rows,
        }
        results["datasets"][dataset] = entry
        for name in models:
            logging.info("== %s on %s", name, dataset)
            rows[name] = run_seeds(name, data, args.budget, args.threads, seeds)
            write_results(
                args.results, results, module="graph_models"
            )  # partial results survive an interruption
        print(f"\n{dataset}: {data.num_users} users, {data.num_items} items, test stage")
        table = {name: {key: row[key] for key in SHOWN if key in row} for name, row in rows.items()}
        print(format_table(table, models_as_rows=True, keys=list(SHOWN)))
        slices = {name: row.get("new_items/users", 0.0) for name, row in rows.items()}
        print(
            f"cold users: {rows[models[0]].get('cold_users/users', 0):.0f}, "
            f"users with new-item targets: {max(slices.values()):.0f}"
        )
    results["peak_rss_mib"] = round(peak_rss_mib(), 1)
    path = write_results(args.results, results, module="graph_models")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
