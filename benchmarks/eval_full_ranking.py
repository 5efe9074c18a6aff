"""Full-ranking evaluation speed at gowalla_lightgcn's size (29,858 users x 40,981 items).

An embedding model (score = user @ item.T, random 64-d vectors, fixed seed) is ranked against the
whole catalogue, seen items excluded, top 20 kept: the cost of evaluating one LightGCN-sized model.
The seen items and targets are gowalla's real ones when ../shared/data/gowalla_lightgcn exists,
otherwise synthetic ones of the same sizes (810,128 train and 217,242 test interactions). Reports
the time of the ranking alone and of the whole evaluate() (all metrics, all slices).

    python -m benchmarks.eval_full_ranking [--batch-size 1024] [--synthetic]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks.common import peak_rss_mib, write_results
from trainer.data.interactions import EVENT_COLUMNS, IdMap, InteractionData, event_code
from trainer.data.marketplace import DatasetInfo, Marketplace
from trainer.evaluation import evaluate
from trainer.evaluation.ranking import full_ranking
from trainer.models.base import Recommender, TrainReport
from trainer.paths import shared_data_dir

NAME = "eval_full_ranking"
USERS, ITEMS, TRAIN, TEST = 29_858, 40_981, 810_128, 217_242
DIM = 64


class RandomEmbeddings(Recommender):
    """Fixed random user and item vectors; score = user @ item.T, as a trained LightGCN scores."""

    name = "random-embeddings"

    def __init__(self, num_users: int, num_items: int, dim: int = DIM, seed: int = 0):
        super().__init__(None, num_users, num_items)
        generator = torch.Generator().manual_seed(seed)
        self.users = torch.randn(num_users, dim, generator=generator)
        self.items = torch.randn(num_items, dim, generator=generator)

    def fit(self, data, progress=True) -> TrainReport:
        return TrainReport(epochs=0, seconds=0.0, history=[])  # the vectors are the model

    def score(self, data, stage, users) -> torch.Tensor:
        return self.users[torch.as_tensor(users)] @ self.items.T  # (B, N)

    def item_embeddings(self) -> torch.Tensor:
        return self.items

    def user_embeddings(self, data, stage) -> torch.Tensor:
        return self.users

    def state_dict(self) -> dict:
        return {"users": self.users, "items": self.items}

    def load_state_dict(self, state: dict) -> None:
        self.users, self.items = state["users"], state["items"]


def real_data(folder: Path) -> InteractionData:
    from trainer.data.loaders import load_dataset
    from trainer.data.splits import split_dataset

    return split_dataset(load_dataset(folder))


def synthetic_data(seed: int = 0) -> InteractionData:
    """Random (user, item) clicks at gowalla's sizes, every user with train and test items."""
    rng = np.random.default_rng(seed)

    def frame(count: int, start: int) -> pd.DataFrame:
        # Every user appears, the rest spread at random; item popularity is skewed (Zipf-like).
        users = np.concatenate([np.arange(USERS), rng.integers(0, USERS, count - USERS)])
        items = np.minimum(rng.zipf(1.3, count) - 1, ITEMS - 1)
        return pd.DataFrame(
            {
                "user_idx": users.astype(np.int64),
                "item_idx": items.astype(np.int64),
                "timestamp": np.arange(start, start + count, dtype=np.int64),
                "event": np.full(count, event_code("click"), dtype=np.int8),
                "hour": np.full(count, -1, dtype=np.int8),
                "device": np.full(count, -1, dtype=np.int16),
                "location": np.full(count, -1, dtype=np.int32),
            }
        )[list(EVENT_COLUMNS)]

    train = frame(TRAIN, 0)
    test = frame(TEST, TRAIN).drop_duplicates(["user_idx", "item_idx"])
    user_ids = np.array([str(i) for i in range(USERS)], dtype=object)
    item_ids = np.array([str(i) for i in range(ITEMS)], dtype=object)
    products = pd.DataFrame({"product_id": item_ids, "category_id": None, "seller_id": None})
    info = DatasetInfo(
        name="synthetic-gowalla-size",
        source="benchmark",
        timestamps="ordinal",
        split="fixed",
        positive_events=("click",),
    )
    market = Marketplace(
        info=info,
        categories=pd.DataFrame(),
        sellers=pd.DataFrame(),
        products=products,
        users=pd.DataFrame({"user_id": user_ids}),
        events=pd.DataFrame(),
    )
    empty = train.iloc[:0]
    return InteractionData(
        market=market,
        users=IdMap(user_ids),
        items=IdMap(item_ids),
        train=train,
        valid=empty,
        test=test.reset_index(drop=True),
        valid_history=empty,
        protocol="fixed",
        locations=(),
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--batch-size", type=int, default=1024, help="users scored per batch")
    parser.add_argument("--k", type=int, default=20, help="length of the ranked lists")
    parser.add_argument(
        "--synthetic", action="store_true", help="use synthetic seen/targets even if gowalla exists"
    )
    args = parser.parse_args(argv)

    folder = shared_data_dir() / "gowalla_lightgcn"
    start = time.perf_counter()
    if folder.is_dir() and not args.synthetic:
        data, source = real_data(folder), f"real: {folder.name} (fixed R80/20 split)"
    else:
        data, source = synthetic_data(), "synthetic, gowalla sizes"
    load_seconds = time.perf_counter() - start
    model = RandomEmbeddings(data.num_users, data.num_items)

    start = time.perf_counter()
    ranking = full_ranking(model, data, "test", args.k, batch_size=args.batch_size, progress=True)
    rank_seconds = time.perf_counter() - start
    start = time.perf_counter()
    metrics = evaluate(model, data, "test", ks=(5, 10, 20), batch_size=args.batch_size)
    evaluate_seconds = time.perf_counter() - start

    users = len(ranking.users)
    results = {
        "data": source,
        "users": users,
        "items": data.num_items,
        "seen_interactions": int(data.seen_matrix("test").nnz),
        "test_interactions": len(data.test),
        "dim": DIM,
        "k": args.k,
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "load_and_split_seconds": round(load_seconds, 2),
        "full_ranking_seconds": round(rank_seconds, 2),
        "users_per_second": round(users / rank_seconds, 1),
        "evaluate_seconds": round(evaluate_seconds, 2),
        "target_seconds": 60.0,
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "random_model_metrics": {
            key: metrics[key]
            for key in ("HR@20", "Recall@20", "NDCG@20", "Coverage@20", "Gini@20", "users")
        },
    }
    print(f"Full-ranking evaluation, {source}")
    print(f"{'quantity':34} {'value':>14}")
    for key in (
        "users",
        "items",
        "seen_interactions",
        "test_interactions",
        "batch_size",
        "torch_threads",
        "load_and_split_seconds",
        "full_ranking_seconds",
        "users_per_second",
        "evaluate_seconds",
        "peak_rss_mib",
    ):
        print(f"{key:34} {results[key]:>14}")
    print(
        "random model (sanity: Recall@20 should be near 20 / items = "
        f"{20 / data.num_items:.5f}): "
        + ", ".join(f"{k}={v:.5f}" for k, v in results["random_model_metrics"].items())
    )
    path = write_results(NAME, results)
    print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
