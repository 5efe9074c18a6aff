"""A hand-made leave-one-out dataset and a recommender whose scores the test fixes.

Items p0..p7 (categories c1 for p0-p3, c2 for p4-p7; sellers s1 for even rows, s2 for odd rows).
Purchases in time order (LOO: last = test, second to last = valid, earlier = train):

- u0: p0 p1 p2 p3 p4        -> test p4; history before test p0..p3 (4 positives)
- u1: p5 p6 p7, plus an impression of p0 -> test p7; history p5 p6 (2 positives)
- u2: p1 p2                 -> fewer than 3 positives: training only, never evaluated
- u3: p2 p3 p0 p1 p6 p5 p2  -> test p2, a repeat of an item already seen; history 6 positives

New items for the test stage (no event of any type before it): p4 and p7.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from trainer.data.interactions import InteractionData
from trainer.data.marketplace import DatasetInfo, Marketplace
from trainer.data.splits import split_dataset
from trainer.models.base import Recommender, TrainReport

T0 = pd.Timestamp("2024-03-01", tz="UTC")
ITEMS = [f"p{i}" for i in range(8)]
USERS = ["u0", "u1", "u2", "u3"]
SEQUENCES = {
    "u0": ["p0", "p1", "p2", "p3", "p4"],
    "u1": ["p5", "p6", "p7"],
    "u2": ["p1", "p2"],
    "u3": ["p2", "p3", "p0", "p1", "p6", "p5", "p2"],
}

# Scores per user over p0..p7; seen items of each user are noted under the row.
SCORES = torch.tensor(
    [
        [9.0, 8.0, 7.0, 6.0, 5.0, 7.5, 4.0, 3.0],  # u0 seen p0-p3: list p5 p4 p6 p7
        [6.0, 1.0, 2.0, 3.0, 4.0, 9.0, 8.0, 0.5],  # u1 seen p5 p6: list p0 p4 p3 p2 p1 p7
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # u2 (not evaluated)
        [9.0, 8.0, 7.0, 1.0, 7.0, 6.0, 5.0, 3.0],  # u3 seen p0 p1 p2 p3 p5 p6, target p2 kept:
        # list p2 p4 (tie at 7.0, lower row first) p7
    ]
)


def hand_market(with_categories: bool = True, with_sellers: bool = True) -> Marketplace:
    """The dataset above; without categories or sellers the products leave those fields null."""
    rows = []
    for user, items in SEQUENCES.items():
        rows += [(user, item, "purchase") for item in items]
        if user == "u1":
            rows.insert(len(rows) - 3, ("u1", "p0", "impression"))
    n = len(rows)
    events = pd.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "product_id": [r[1] for r in rows],
            "event_type": [r[2] for r in rows],
            "timestamp": [T0 + pd.Timedelta(hours=i) for i in range(n)],
            "hour": [(T0 + pd.Timedelta(hours=i)).hour for i in range(n)],
            "device": ["mobile"] * n,
            "location": ["es"] * n,
            "split": [None] * n,
        }
    )
    frames = {
        "categories": pd.DataFrame(
            {"category_id": ["c1", "c2"], "name": ["One", "Two"], "parent_id": [None, None]}
        ),
        "sellers": pd.DataFrame(
            {
                "seller_id": ["s1", "s2"],
                "name": ["A", "B"],
                "rating": [4.0, 3.0],
                "created_at": [T0, T0],
            }
        ),
        "products": pd.DataFrame(
            {
                "product_id": ITEMS,
                "title": ITEMS,
                "description": [None] * 8,
                "category_id": ["c1"] * 4 + ["c2"] * 4 if with_categories else [None] * 8,
                "seller_id": ["s1", "s2"] * 4 if with_sellers else [None] * 8,
                "price": [10.0] * 8,
                "margin": [0.2] * 8,
                "created_at": [T0] * 8,
                "in_stock": [True] * 8,
                "consumable": [False] * 8,
                "attributes": [{"brand": "x"}] * 8,
            }
        ),
        "users": pd.DataFrame({"user_id": USERS, "created_at": [T0] * 4, "location": ["es"] * 4}),
        "events": events,
    }
    info = DatasetInfo(
        name="hand-eval", source="tests", timestamps="ordinal", split="leave_one_out"
    )
    return Marketplace.from_frames(info, **frames)


def hand_data(with_categories: bool = True, with_sellers: bool = True) -> InteractionData:
    return split_dataset(hand_market(with_categories, with_sellers))


class FixedScores(Recommender):
    """Returns rows of a fixed (num_users, num_items) score matrix; optional item embeddings."""

    name = "fixed-scores"

    def __init__(self, scores: torch.Tensor, embeddings: torch.Tensor | None = None):
        super().__init__(None, scores.shape[0], scores.shape[1])
        self.scores = scores
        self.embeddings = embeddings
        self.calls: list[int] = []

    def fit(self, data, progress=True) -> TrainReport:
        return TrainReport(epochs=0, seconds=0.0, history=[])

    def score(self, data, stage, users) -> torch.Tensor:
        self.calls.append(len(users))
        return self.scores[torch.as_tensor(np.asarray(users))]

    def item_embeddings(self) -> torch.Tensor | None:
        return self.embeddings

    def state_dict(self) -> dict:
        return {"scores": self.scores}

    def load_state_dict(self, state: dict) -> None:
        self.scores = state["scores"]
