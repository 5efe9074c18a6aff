"""Small sequence marketplaces with a planted next-item rule, for the sequence-model tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

from trainer.data.marketplace import DatasetInfo, Marketplace
from trainer.data.schema import DEVICES

T0 = pd.Timestamp("2024-03-01", tz="UTC")


def cycle_marketplace(
    num_users: int = 120,
    num_items: int = 24,
    min_len: int = 6,
    max_len: int = 14,
    noise: float = 0.0,
    seed: int = 0,
    event_types: tuple[str, ...] = ("purchase",),
    device_step: bool = False,
) -> Marketplace:
    """Each user walks the item cycle i -> i + 1 (mod num_items) from a random start.

    With ``noise`` > 0 a step jumps to a random item instead. Popularity is flat, so a
    most-popular ranking is near chance while a sequence model can learn the rule exactly.
    With ``device_step`` each event's device is drawn at random and sets the step that led to it:
    +1 on mobile, +2 on desktop, so only a model told the request's device can be sure of the next
    item.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(num_users):
        length = int(rng.integers(min_len, max_len + 1))
        item = int(rng.integers(num_items))
        device = "mobile"
        for step in range(length):
            rows.append((f"u{u}", f"p{item}", event_types[step % len(event_types)], device))
            device = DEVICES[int(rng.integers(2))] if device_step else "mobile"
            jump = 2 if device == "desktop" else 1
            item = (
                int(rng.integers(num_items)) if rng.random() < noise else (item + jump) % num_items
            )
    n = len(rows)
    times = [T0 + pd.Timedelta(minutes=7 * i) for i in range(n)]
    events = pd.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "product_id": [r[1] for r in rows],
            "event_type": [r[2] for r in rows],
            "timestamp": times,
            "hour": [t.hour for t in times],
            "device": [
                r[3] if device_step else DEVICES[i % len(DEVICES)] for i, r in enumerate(rows)
            ],
            "location": [("es", "fr", None)[i % 3] for i in range(n)],
            "split": [None] * n,
        }
    )
    products = pd.DataFrame(
        {
            "product_id": [f"p{i}" for i in range(num_items)],
            "title": [f"item {i}" for i in range(num_items)],
            "description": [None] * num_items,
            "category_id": ["c"] * num_items,
            "seller_id": ["s"] * num_items,
            "price": [1.0 + i for i in range(num_items)],
            "margin": [0.1] * num_items,
            "created_at": [T0] * num_items,
            "in_stock": [True] * num_items,
            "consumable": [False] * num_items,
            "attributes": [{}] * num_items,
        }
    )
    info = DatasetInfo(
        name="cycle",
        source="tests",
        split="leave_one_out",
        timestamps="real",
        positive_events=("click", "favorite", "cart", "purchase"),
    )
    return Marketplace.from_frames(
        info,
        categories=pd.DataFrame({"category_id": ["c"], "name": ["C"], "parent_id": [None]}),
        sellers=pd.DataFrame(
            {"seller_id": ["s"], "name": ["S"], "rating": [None], "created_at": [None]}
        ),
        products=products,
        users=pd.DataFrame(
            {
                "user_id": [f"u{u}" for u in range(num_users)],
                "created_at": [T0] * num_users,
                "location": [None] * num_users,
            }
        ),
        events=events,
    )
