"""A small hand-built marketplace with planted structure, for the graph tests.

Users belong to one of ``clusters`` taste groups and interact mostly with products of their
group's categories, so a graph model can learn something real within a few epochs. A few products
have no seller, no category or no price, to exercise the missing-reference paths.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from trainer.data.marketplace import DatasetInfo, Marketplace

DAY = 86_400


def toy_market(
    num_users: int = 40,
    num_products: int = 60,
    clusters: int = 2,
    events_per_user: int = 12,
    seed: int = 0,
) -> Marketplace:
    rng = np.random.default_rng(seed)
    roots = [f"root{c}" for c in range(clusters)]
    leaves = [f"root{c}/leaf{j}" for c in range(clusters) for j in range(2)]
    categories = pd.DataFrame(
        {
            "category_id": roots + leaves,
            "name": roots + leaves,
            "parent_id": [None] * clusters + [leaf.split("/")[0] for leaf in leaves],
        }
    )
    sellers = pd.DataFrame(
        {
            "seller_id": [f"s{j}" for j in range(3)],
            "name": [f"Seller {j}" for j in range(3)],
            "rating": [4.5, 3.0, None],
            "created_at": pd.to_datetime([1_600_000_000] * 3, unit="s", utc=True),
        }
    )
    cluster_of_product = np.arange(num_products) % clusters
    leaf = [leaves[2 * c + (p // clusters) % 2] for p, c in enumerate(cluster_of_product)]
    seller = [f"s{p % 3}" for p in range(num_products)]
    price = rng.uniform(1, 100, num_products).round(2).astype(object)
    # Missing references on purpose: product 0 has no seller, 1 no category, 2 no price.
    seller[0] = None
    leaf[1] = None
    price[2] = None
    products = pd.DataFrame(
        {
            "product_id": [f"p{p}" for p in range(num_products)],
            "title": [f"Product {p}" for p in range(num_products)],
            "description": [None] * num_products,
            "category_id": leaf,
            "seller_id": seller,
            "price": pd.array(price, dtype="Float64"),
            "margin": [0.2] * num_products,
            "created_at": pd.to_datetime(np.full(num_products, 1_600_000_000), unit="s", utc=True),
            "in_stock": [True] * num_products,
            "consumable": [False] * num_products,
            "attributes": [None] * num_products,
        }
    )
    users = pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in range(num_users)],
            "created_at": pd.to_datetime([1_600_000_000] * num_users, unit="s", utc=True),
            "location": [None] * num_users,
        }
    )
    rows = []
    start = 1_700_000_000
    for u in range(num_users):
        group = u % clusters
        own = np.flatnonzero(cluster_of_product == group)
        other = np.flatnonzero(cluster_of_product != group)
        for _ in range(events_per_user):
            pool = own if rng.random() < 0.9 else other
            product = int(rng.choice(pool))
            event = rng.choice(
                ["impression", "click", "favorite", "cart", "purchase"], p=[0.2, 0.4, 0.1, 0.1, 0.2]
            )
            when = start + int(rng.integers(0, 100 * DAY))
            rows.append((f"u{u}", f"p{product}", str(event), when))
    frame = pd.DataFrame(rows, columns=["user_id", "product_id", "event_type", "t"])
    events = pd.DataFrame(
        {
            "user_id": frame["user_id"],
            "product_id": frame["product_id"],
            "event_type": frame["event_type"],
            "timestamp": pd.to_datetime(frame["t"], unit="s", utc=True),
            "hour": [None] * len(frame),
            "device": [None] * len(frame),
            "location": [None] * len(frame),
            "split": [None] * len(frame),
        }
    )
    info = DatasetInfo(name="toy", source="tests/trainer/graph_toy.py", split="temporal")
    return Marketplace.from_frames(
        info,
        categories=categories,
        sellers=sellers,
        products=products,
        users=users,
        events=events,
    )
