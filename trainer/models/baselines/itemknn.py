"""ItemKNN: item-item cosine similarity over co-occurrence, top-k neighbours per item.

Sarwar et al., "Item-based collaborative filtering recommendation algorithms", WWW 2001
(https://dl.acm.org/doi/10.1145/371920.372071). Similarity of items i and j is
``|U_i ∩ U_j| / (sqrt(|U_i| |U_j|) + shrink)`` over the users with positive training events;
only each item's ``neighbours`` most similar items are kept, so the model is a sparse
(num_items, num_items) matrix S. A user's scores are their positive history row times S, using
``data.history(stage)`` so the validation events count as history when scoring test.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from tqdm import tqdm

from trainer.data.interactions import InteractionData, Stage
from trainer.models.base import Recommender, TrainReport, register
from trainer.models.baselines.common import HistoryCache

# Rows of the dense co-occurrence block computed at once: bounds memory at ~64 MB.
BLOCK_CELLS = 1 << 24


@dataclass(frozen=True)
class ItemKNNConfig:
    neighbours: int = 100  # similar items kept per item
    shrink: float = 0.0  # added to the cosine denominator; damps similarities of rare items


@register("itemknn")
class ItemKNN(Recommender):
    """Item-item cosine over co-occurrence; scores sum the neighbours of the user's items."""

    config_class = ItemKNNConfig

    def __init__(self, config: ItemKNNConfig, num_users: int, num_items: int):
        super().__init__(config, num_users, num_items)
        if config.neighbours < 1:
            raise ValueError(f"itemknn: neighbours must be >= 1, got {config.neighbours}")
        if config.shrink < 0:
            raise ValueError(f"itemknn: shrink must be >= 0, got {config.shrink}")
        self.similarity = sp.csr_matrix((num_items, num_items), dtype=np.float32)
        self._history = HistoryCache()

    @classmethod
    def test_config(cls) -> ItemKNNConfig:
        return ItemKNNConfig(neighbours=20)

    def fit(self, data: InteractionData, progress: bool = True) -> TrainReport:
        start = time.perf_counter()
        interactions = data.train_matrix().tocsr()  # (U, I) binary
        by_item = interactions.T.tocsr()  # (I, U)
        norms = np.sqrt(np.asarray(interactions.sum(axis=0)).ravel()).astype(np.float32)  # (I,)
        k = min(self.config.neighbours, self.num_items - 1)
        block = max(1, BLOCK_CELLS // max(self.num_items, 1))
        rows, cols, values = [], [], []
        for first in tqdm(
            range(0, self.num_items, block), desc="itemknn similarity", disable=not progress
        ):
            last = min(first + block, self.num_items)
            co = torch.from_numpy((by_item[first:last] @ interactions).toarray())  # (b, I)
            denominator = torch.from_numpy(np.outer(norms[first:last], norms)) + self.config.shrink
            sim = torch.where(denominator > 0, co / denominator.clamp_min(1e-12), 0.0)
            sim[torch.arange(last - first), torch.arange(first, last)] = 0.0  # no self-links
            if k < 1:
                continue
            top_values, top_cols = torch.topk(sim, k=k, dim=1)  # (b, k)
            keep = top_values > 0
            row_idx = torch.arange(first, last).unsqueeze(1).expand(-1, k)
            rows.append(row_idx[keep].numpy())
            cols.append(top_cols[keep].numpy())
            values.append(top_values[keep].numpy())
        self.similarity = sp.csr_matrix(
            (
                np.concatenate(values) if values else np.zeros(0, np.float32),
                (
                    np.concatenate(rows) if rows else np.zeros(0, np.int64),
                    np.concatenate(cols) if cols else np.zeros(0, np.int64),
                ),
            ),
            shape=(self.num_items, self.num_items),
            dtype=np.float32,
        )
        return TrainReport(epochs=1, seconds=time.perf_counter() - start, history=[])

    def score(self, data: InteractionData, stage: Stage, users: np.ndarray) -> torch.Tensor:
        history = self._history.get(data, stage)[np.asarray(users)]  # (B, I) binary
        return torch.from_numpy((history @ self.similarity).toarray().astype(np.float32))

    def state_dict(self) -> dict[str, Any]:
        sim = self.similarity
        return {
            "indptr": torch.from_numpy(sim.indptr.astype(np.int64)),
            "indices": torch.from_numpy(sim.indices.astype(np.int64)),
            "values": torch.from_numpy(sim.data.astype(np.float32)),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        indptr = np.asarray(state["indptr"], dtype=np.int64)
        if len(indptr) != self.num_items + 1:
            raise ValueError(
                f"itemknn state is for {len(indptr) - 1} items, expected {self.num_items}"
            )
        self.similarity = sp.csr_matrix(
            (
                np.asarray(state["values"], dtype=np.float32),
                np.asarray(state["indices"], dtype=np.int64),
                indptr,
            ),
            shape=(self.num_items, self.num_items),
        )
