"""Small hand-made marketplaces for tests, so expected values can be computed by hand."""

from __future__ import annotations

import pandas as pd

from trainer.data.marketplace import DatasetInfo, Marketplace

T0 = pd.Timestamp("2024-03-01", tz="UTC")


def frames(num_products: int = 5) -> dict[str, pd.DataFrame]:
    """Valid tables: 2 categories, 2 sellers, ``num_products`` products, 3 users, 8 events."""
    products = [f"p{i}" for i in range(num_products)]
    return {
        "categories": pd.DataFrame(
            {
                "category_id": ["home", "home/kitchen"],
                "name": ["Home", "Kitchen"],
                "parent_id": [None, "home"],
            }
        ),
        "sellers": pd.DataFrame(
            {
                "seller_id": ["s1", "s2"],
                "name": ["Acme", "Bolt"],
                "rating": [4.5, None],
                "created_at": [T0, None],
            }
        ),
        "products": pd.DataFrame(
            {
                "product_id": products,
                "title": [f"item {i}" for i in range(num_products)],
                "description": [None] * num_products,
                "category_id": ["home/kitchen"] * num_products,
                "seller_id": ["s1", "s2"] * (num_products // 2) + ["s1"] * (num_products % 2),
                "price": [10.0 + i for i in range(num_products)],
                "margin": [0.2] * num_products,
                "created_at": [T0] * num_products,
                "in_stock": [True] * num_products,
                "consumable": [False] * num_products,
                "attributes": [{"brand": "x"}] * num_products,
            }
        ),
        "users": pd.DataFrame(
            {"user_id": ["u1", "u2", "u3"], "created_at": [T0] * 3, "location": ["es", "fr", None]}
        ),
        "events": events(
            [
                ("u1", "p0", "impression"),
                ("u1", "p0", "click"),
                ("u1", "p1", "purchase"),
                ("u1", "p2", "cart"),
                ("u1", "p3", "click"),
                ("u2", "p0", "click"),
                ("u2", "p4", "favorite"),
                ("u3", "p1", "click"),
            ]
        ),
    }


def events(rows: list[tuple[str, str, str]], start: pd.Timestamp = T0) -> pd.DataFrame:
    """Events one hour apart, in the given order."""
    n = len(rows)
    return pd.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "product_id": [r[1] for r in rows],
            "event_type": [r[2] for r in rows],
            "timestamp": [start + pd.Timedelta(hours=i) for i in range(n)],
            "hour": [(start + pd.Timedelta(hours=i)).hour for i in range(n)],
            "device": ["mobile", "desktop"] * (n // 2) + ["mobile"] * (n % 2),
            "location": ["es"] * n,
            "split": [None] * n,
        }
    )


def marketplace(split: str = "leave_one_out", timestamps: str = "real", **overrides) -> Marketplace:
    tables = frames()
    tables.update(overrides)
    info = DatasetInfo(name="hand", source="tests", split=split, timestamps=timestamps)
    return Marketplace.from_frames(info, **tables)
