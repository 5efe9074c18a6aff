"""MostPop: every user gets the catalogue ranked by how often items were positively interacted with.

The PopRec row of the S3-Rec full-ranking table (anchors §3.2) is the free check that the
evaluation protocol is right, so this model must follow that protocol's information boundary:
popularity counts the positive events a model may see before the evaluated stage
(``data.history(stage)``), i.e. training events, plus the validation events when scoring the
test stage of a leave-one-out split. Test targets are not counted.

The published S3-Rec PopRec row is reproduced to the fourth decimal (all six FULL numbers) only by
counting every interaction of the file, test targets included; ``include_targets = true``
replicates that for the anchor check. It leaks the test set and is never the default.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from trainer.data.interactions import InteractionData, Stage
from trainer.models.base import Recommender, TrainReport, register


@dataclass(frozen=True)
class MostPopConfig:
    # Also count the positive events between the training cut and the evaluated stage (the
    # validation events when scoring test). False ranks by training popularity only.
    stage_history: bool = True
    # Count the validation and test target events too, as S3-Rec's PopRec does. Leaks the
    # evaluated targets: only for replicating that published anchor.
    include_targets: bool = False


@register("mostpop")
class MostPop(Recommender):
    """Most popular items first (count of positive events before the evaluated stage)."""

    config_class = MostPopConfig

    def __init__(self, config: MostPopConfig, num_users: int, num_items: int):
        super().__init__(config, num_users, num_items)
        self.popularity = torch.zeros(num_items, dtype=torch.float32)  # (I,)

    @classmethod
    def test_config(cls) -> MostPopConfig:
        return MostPopConfig()

    def fit(self, data: InteractionData, progress: bool = True) -> TrainReport:
        start = time.perf_counter()
        counts = data.item_popularity()
        if self.config.include_targets:
            targets = np.concatenate([data.valid["item_idx"], data.test["item_idx"]])
            counts = counts + np.bincount(targets, minlength=self.num_items)
        self.popularity = torch.as_tensor(counts, dtype=torch.float32)
        return TrainReport(epochs=1, seconds=time.perf_counter() - start, history=[])

    def _stage_popularity(self, data: InteractionData, stage: Stage) -> torch.Tensor:
        if self.config.include_targets or not self.config.stage_history or stage == "valid":
            return self.popularity
        extra = data.positives(data.valid_history)["item_idx"].to_numpy()
        counts = np.bincount(extra, minlength=self.num_items).astype(np.float32)
        return self.popularity + torch.from_numpy(counts)

    def score(self, data: InteractionData, stage: Stage, users: np.ndarray) -> torch.Tensor:
        popularity = self._stage_popularity(data, stage)  # (I,)
        return popularity.unsqueeze(0).repeat(len(users), 1)  # (B, I)

    def state_dict(self) -> dict[str, Any]:
        return {"popularity": self.popularity.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        popularity = torch.as_tensor(state["popularity"], dtype=torch.float32)
        if popularity.shape != (self.num_items,):
            raise ValueError(
                f"mostpop state has {tuple(popularity.shape)} popularities, expected "
                f"({self.num_items},)"
            )
        self.popularity = popularity
