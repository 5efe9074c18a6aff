"""LightGCN on gowalla_lightgcn: per-epoch time against PyG's LightGCN, and the quality curve.

Two parts, both on the dataset's fixed R80/20 split (anchors.md §3.1: full ranking, training items
excluded, @20, embedding 64):

1. **Per-epoch time.** The same BPR steps (same batches, same negatives, batch size, 3 layers,
   dim 64, Adam) through our LightGCN (precomputed CSR Â, symmetric custom backward) and through
   ``torch_geometric.nn.models.LightGCN`` driven by ``edge_index``, in the same process. With
   ``--timing-steps N`` each side runs N steps and the epoch time is extrapolated from the mean
   step time (steps per epoch = ceil(train pairs / batch size)); ``--timing-steps 0`` times whole
   epochs.
2. **Quality curve** (skipped with ``--minutes 0``). Training with the chosen config for at most
   ``--minutes`` of training time; every ``--eval-every`` epochs, Recall@20 and NDCG@20 on the
   test split (full ranking, training items excluded) are recorded against epoch and training
   wall time. Gowalla has no validation split, so like the official LightGCN code this curve
   reads test; the final row also runs :func:`trainer.evaluation.evaluate`.

Writes ``benchmarks/results/lightgcn_gowalla.json`` and ``lightgcn_gowalla.png``.

    python -m benchmarks.lightgcn_gowalla --minutes 0 --timing-steps 10       # timing only
    python -m benchmarks.lightgcn_gowalla --minutes 90                        # the full run
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from trainer.config import build_config
from trainer.data.loaders import load_dataset
from trainer.data.splits import split_dataset
from trainer.graph import torch_geometric
from trainer.graph.propagation import to_torch_csr
from trainer.models.lightgcn import (
    LightGCN,
    LightGCNConfig,
    _sample_negatives,
    interaction_adjacency,
)
from trainer.paths import shared_data_dir

RESULTS = Path(__file__).resolve().parent / "results"
NAME = "lightgcn_gowalla"
# The quality run's defaults: sampled softmax converges in far fewer epochs than BPR, and with
# unit-length ego rows (scores keep the magnitudes propagation gives) it goes faster and higher
# than with cosine scores (docs/graph-models.md has both curves).
CURVE_DEFAULTS = [
    "loss='softmax'",
    "normalize='ego'",
    "batch_size=16384",
    "lr=0.005",
    "num_negatives=2048",
    "temperature=0.05",
    "reg=0.0",
    "epochs=100000",
    "eval_every=0",
    "patience=0",
]


def test_metrics(model: LightGCN, data, k: int = 20, batch_size: int = 2048) -> dict[str, float]:
    """Recall@k and NDCG@k on the test split, full ranking with training positives masked."""
    seen = data.seen_matrix("test").tocsr()
    targets = data.positives(data.test)
    num_items = data.num_items
    wanted = targets["user_idx"].to_numpy(np.int64) * np.int64(num_items) + targets[
        "item_idx"
    ].to_numpy(np.int64)
    wanted = np.unique(wanted)
    counts = np.bincount(wanted // num_items, minlength=data.num_users)
    users = np.flatnonzero(counts)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    recall = ndcg = 0.0
    for first in range(0, len(users), batch_size):
        batch = users[first : first + batch_size]
        scores = model.score(data, "test", batch).clone()  # (B, I)
        rows, cols = seen[batch].nonzero()
        scores[torch.as_tensor(rows), torch.as_tensor(cols)] = -torch.inf
        top = torch.topk(scores, k, dim=1).indices.numpy()  # (B, k)
        hits = np.isin(batch[:, None] * np.int64(num_items) + top, wanted).astype(np.float64)
        n = counts[batch]
        ideal = np.cumsum(discounts)[np.minimum(n, k) - 1]
        recall += float((hits.sum(1) / n).sum())
        ndcg += float(((hits @ discounts) / ideal).sum())
    return {f"Recall@{k}": recall / len(users), f"NDCG@{k}": ndcg / len(users)}


def time_epochs(data, batch_size: int, steps: int, seed: int = 0) -> dict[str, float]:
    """Seconds per epoch of BPR training: ours vs PyG's LightGCN on the same batches."""
    config = LightGCNConfig(dim=64, layers=3, batch_size=batch_size, lr=1e-3, seed=seed)
    pairs = data.train_matrix().tocoo()
    users_all, items_all = pairs.row.astype(np.int64), pairs.col.astype(np.int64)
    keys = np.sort(users_all * np.int64(data.num_items) + items_all)
    steps_per_epoch = math.ceil(len(users_all) / batch_size)
    steps = steps_per_epoch if steps <= 0 else min(steps, steps_per_epoch)
    order = np.random.default_rng(seed).permutation(len(users_all))
    batches = [order[i * batch_size : (i + 1) * batch_size] for i in range(steps)]

    ours = LightGCN(config, data.num_users, data.num_items)
    start = time.perf_counter()
    adjacency = to_torch_csr(interaction_adjacency(data, "valid", None))
    setup_ours = time.perf_counter() - start
    optimizer = torch.optim.Adam(ours.net.parameters(), lr=config.lr)
    rng = np.random.default_rng(seed)
    ours.train_step(adjacency, users_all[batches[0]], items_all[batches[0]], keys, rng, optimizer)
    start = time.perf_counter()
    for batch in batches:
        ours.train_step(adjacency, users_all[batch], items_all[batch], keys, rng, optimizer)
    ours_step = (time.perf_counter() - start) / len(batches)

    num_users = data.num_users
    pyg = torch_geometric.nn.models.LightGCN(num_users + data.num_items, 64, num_layers=3)
    edge_index = torch.from_numpy(
        np.stack(
            [
                np.concatenate([users_all, num_users + items_all]),
                np.concatenate([num_users + items_all, users_all]),
            ]
        )
    )
    optimizer = torch.optim.Adam(pyg.parameters(), lr=config.lr)
    rng = np.random.default_rng(seed)

    def pyg_step(batch: np.ndarray) -> None:
        users = users_all[batch]
        negatives = _sample_negatives(users, keys, data.num_items, rng)
        u = torch.from_numpy(users)
        p = torch.from_numpy(num_users + items_all[batch])
        n = torch.from_numpy(num_users + negatives)
        embedding = pyg.get_embedding(edge_index)  # (U+I, D)
        pos_rank = (embedding[u] * embedding[p]).sum(-1)
        neg_rank = (embedding[u] * embedding[n]).sum(-1)
        loss = pyg.recommendation_loss(
            pos_rank, neg_rank, node_id=torch.cat([u, p, n]), lambda_reg=config.reg
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    pyg_step(batches[0])
    start = time.perf_counter()
    for batch in batches:
        pyg_step(batch)
    pyg_time = (time.perf_counter() - start) / len(batches)
    return {
        "batch_size": batch_size,
        "steps_timed": len(batches),
        "steps_per_epoch": steps_per_epoch,
        "ours_step_s": ours_step,
        "pyg_step_s": pyg_time,
        "ours_epoch_s": ours_step * steps_per_epoch,
        "pyg_epoch_s": pyg_time * steps_per_epoch,
        "ours_setup_s": setup_ours,
        "speedup": pyg_time / ours_step,
    }


def train_curve(data, config: LightGCNConfig, eval_every: int) -> list[dict[str, float]]:
    model = LightGCN(config, data.num_users, data.num_items)
    curve: list[dict[str, float]] = []

    def record(current: LightGCN, row: dict[str, float]) -> None:
        epoch = int(row["epoch"])
        if epoch % eval_every and current.config.time_budget - row["train_seconds"] > 0:
            return
        metrics = test_metrics(current, data)
        point = {
            "epoch": epoch,
            "train_seconds": row["train_seconds"],
            "loss": row["loss"],
            **metrics,
        }
        curve.append(point)
        print(
            f"epoch {epoch:4d}  train {row['train_seconds']:7.0f}s  loss {row['loss']:.4f}  "
            f"Recall@20 {metrics['Recall@20']:.4f}  NDCG@20 {metrics['NDCG@20']:.4f}",
            flush=True,
        )

    model.epoch_callback = record
    model.fit(data, progress=False)
    return curve


def plot(curve: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, x_key, label in (
        (axes[0], "train_seconds", "training time (s)"),
        (axes[1], "epoch", "epoch"),
    ):
        for metric in ("Recall@20", "NDCG@20"):
            axis.plot([p[x_key] for p in curve], [p[metric] for p in curve], label=metric)
        axis.axhline(0.1824, color="grey", linestyle=":", label="official Recall@20 0.1824")
        axis.axhline(0.1547, color="grey", linestyle="--", label="official NDCG@20 0.1547")
        axis.set_xlabel(label)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("test metric (full ranking)")
    axes[0].legend(fontsize=8)
    figure.suptitle("LightGCN on gowalla_lightgcn")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dataset",
        type=Path,
        default=shared_data_dir() / "gowalla_lightgcn",
        help="gowalla_lightgcn folder (LightGCN split format)",
    )
    parser.add_argument(
        "--minutes", type=float, default=90.0, help="training-time budget of the curve; 0 skips"
    )
    parser.add_argument("--eval-every", type=int, default=5, help="epochs between curve points")
    parser.add_argument(
        "--timing-steps",
        type=int,
        default=10,
        help="steps timed per implementation (0: whole epochs; -1: skip the timing)",
    )
    parser.add_argument(
        "--timing-batch-size", type=int, default=2048, help="BPR batch size of the timing"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="LightGCNConfig override for the curve run (repeatable), e.g. --set lr=0.01",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    start = time.perf_counter()
    data = split_dataset(load_dataset(args.dataset))
    result: dict = {
        "command": "python -m benchmarks.lightgcn_gowalla "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "dataset": str(args.dataset),
        "protocol": "FULL, fixed R80/20, training items excluded, @20",
        "num_users": data.num_users,
        "num_items": data.num_items,
        "train_pairs": int(data.train_matrix().nnz),
        "load_seconds": time.perf_counter() - start,
        "torch": torch.__version__,
        "torch_geometric": torch_geometric.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }
    if args.timing_steps >= 0:
        timing = time_epochs(data, args.timing_batch_size, args.timing_steps)
        result["timing"] = timing
        print(
            f"per-epoch time (batch {timing['batch_size']}, {timing['steps_per_epoch']} steps, "
            f"timed on {timing['steps_timed']} steps):\n"
            f"  ours (CSR + symmetric backward): {timing['ours_epoch_s']:8.1f} s "
            f"({timing['ours_step_s'] * 1000:.0f} ms/step)\n"
            f"  torch_geometric LightGCN:        {timing['pyg_epoch_s']:8.1f} s "
            f"({timing['pyg_step_s'] * 1000:.0f} ms/step)\n"
            f"  speed-up: {timing['speedup']:.1f}x",
            flush=True,
        )
    if args.minutes > 0:
        config = build_config(
            LightGCNConfig,
            overrides=[*CURVE_DEFAULTS, f"time_budget={args.minutes * 60.0}", *args.overrides],
        )
        curve = train_curve(data, config, args.eval_every)
        result["config"] = {k: v for k, v in config.__dict__.items()}
        result["curve"] = curve
        result["final"] = curve[-1] if curve else None
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{NAME}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    if result.get("curve"):
        plot(result["curve"], RESULTS / f"{NAME}.png")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
