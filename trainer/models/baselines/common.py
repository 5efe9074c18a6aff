"""Pieces the baselines share: the per-stage history matrix and a lean validation metric.

Validation runs after every epoch, so it computes only what epoch selection needs (NDCG@k and
Recall@k on full ranking with seen items masked) on a fixed sample of users, rather than the
full metric suite of :mod:`trainer.evaluation`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from trainer.data.interactions import InteractionData, Stage


class HistoryCache:
    """The (num_users, num_items) positive-history matrix of one (data, stage), built once.

    ``score`` is called once per batch of users; rebuilding the matrix from the event frames each
    time would cost more than scoring on the larger datasets. One entry is enough: evaluation
    scores one stage of one dataset at a time.
    """

    def __init__(self) -> None:
        self._key: tuple[Any, str] | None = None
        self._matrix: sp.csr_matrix | None = None

    def get(self, data: InteractionData, stage: Stage) -> sp.csr_matrix:
        if self._key is None or self._key[0] is not data or self._key[1] != stage:
            self._matrix = data.seen_matrix(stage).tocsr()
            self._key = (data, stage)
        assert self._matrix is not None
        return self._matrix


def validation_metrics(
    score_fn,
    data: InteractionData,
    k: int = 20,
    max_users: int = 5000,
    seed: int = 0,
    batch_size: int = 1024,
) -> dict[str, float] | None:
    """NDCG@k and Recall@k on ``data.valid`` (full ranking, seen items masked), or None.

    ``score_fn(users) -> (B, num_items)`` scores a batch. Users are subsampled to ``max_users``
    with a fixed seed so successive epochs are compared on the same users.
    """
    valid = data.valid
    if len(valid) == 0:
        return None
    users_all = valid["user_idx"].to_numpy()
    items_all = valid["item_idx"].to_numpy()
    users = np.unique(users_all)
    if len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    num_items = np.int64(data.num_items)
    target_keys = np.unique(users_all.astype(np.int64) * num_items + items_all)
    counts_all = np.bincount(target_keys // num_items, minlength=data.num_users)
    seen = data.seen_matrix("valid").tocsr()
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ndcg_sum = recall_sum = 0.0
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        scores = score_fn(batch).detach().float().clone()  # (B, I)
        rows, cols = seen[batch].nonzero()
        scores[torch.as_tensor(rows), torch.as_tensor(cols)] = -torch.inf
        top = torch.topk(scores, k=min(k, data.num_items), dim=1).indices.numpy()  # (B, k)
        keys = batch[:, None].astype(np.int64) * num_items + top
        hits = np.isin(keys, target_keys).astype(np.float64)  # (B, k) 0/1
        counts = counts_all[batch]
        ideal = np.array([discounts[: int(min(c, k))].sum() for c in counts])
        ndcg_sum += float((hits @ discounts[: hits.shape[1]] / ideal).sum())
        recall_sum += float((hits.sum(axis=1) / counts).sum())
    n = len(users)
    return {f"NDCG@{k}": ndcg_sum / n, f"Recall@{k}": recall_sum / n}


def is_better(value: float, best: float | None) -> bool:
    return best is None or (not math.isnan(value) and value > best)
