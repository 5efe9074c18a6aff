"""A small marketplace with planted structure, built by hand so models have something to learn.

Items fall into two clusters (two categories); even users only interact with the first cluster,
odd users only with the second. Within a cluster popularity is skewed, so MostPop is a real but
beatable baseline: a personalised model that learns the clusters must do better.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from trainer.data.marketplace import DatasetInfo, Marketplace

T0 = pd.Timestamp("2024-03-01", tz="UTC")


def planted_marketplace(
    num_users: int = 80,
    num_items: int = 40,
    events_per_user: int = 8,
    seed: int = 0,
    split: str = "leave_one_out",
) -> Marketplace:
    rng = np.random.default_rng(seed)
    half = num_items // 2
    clusters = [np.arange(half), np.arange(half, num_items)]
    weights = 1.0 / np.arange(1, half + 1)  # Zipf-like popularity inside each cluster
    rows = []
    for u in range(num_users):
        items = rng.choice(
            clusters[u % 2], size=events_per_user, replace=False, p=weights / weights.sum()
        )
        for position, item in enumerate(items):
            kind = "purchase" if position % 3 == 0 else "click"
            rows.append((f"u{u}", f"p{item}", kind))
    # Interleave users in time so a temporal split also has targets for most users.
    order = sorted(range(len(rows)), key=lambda r: (r % events_per_user, r))
    rows = [rows[r] for r in order]
    n = len(rows)
    times = [T0 + pd.Timedelta(minutes=i) for i in range(n)]
    products = [f"p{i}" for i in range(num_items)]
    frames = {
        "categories": pd.DataFrame(
            {"category_id": ["a", "b"], "name": ["A", "B"], "parent_id": [None, None]}
        ),
        "sellers": pd.DataFrame(
            {"seller_id": ["s1"], "name": ["Acme"], "rating": [4.0], "created_at": [T0]}
        ),
        "products": pd.DataFrame(
            {
                "product_id": products,
                "title": [f"item {i}" for i in range(num_items)],
                "description": [None] * num_items,
                "category_id": ["a" if i < half else "b" for i in range(num_items)],
                "seller_id": ["s1"] * num_items,
                "price": [10.0] * num_items,
                "margin": [0.2] * num_items,
                "created_at": [T0] * num_items,
                "in_stock": [True] * num_items,
                "consumable": [False] * num_items,
                "attributes": [{"brand": "x"}] * num_items,
            }
        ),
        "users": pd.DataFrame(
            {
                "user_id": [f"u{u}" for u in range(num_users)],
                "created_at": [T0] * num_users,
                "location": ["es"] * num_users,
            }
        ),
        "events": pd.DataFrame(
            {
                "user_id": [r[0] for r in rows],
                "product_id": [r[1] for r in rows],
                "event_type": [r[2] for r in rows],
                "timestamp": times,
                "hour": [t.hour for t in times],
                "device": ["mobile"] * n,
                "location": ["es"] * n,
                "split": [None] * n,
            }
        ),
    }
    info = DatasetInfo(name="planted", source="tests", split=split, timestamps="real")
    return Marketplace.from_frames(info, **frames)


def cluster_hit_rate(recommended: np.ndarray, users: np.ndarray, num_items: int) -> float:
    """Share of recommended items that fall in the user's own cluster."""
    half = num_items // 2
    own = (recommended < half) == (users[:, None] % 2 == 0)
    return float(own.mean())
