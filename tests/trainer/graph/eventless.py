"""The planted marketplace plus one product per cluster that has no events at all."""

from __future__ import annotations

import pandas as pd

from trainer.data.interactions import InteractionData
from trainer.data.marketplace import Marketplace
from trainer.data.splits import split_dataset


def with_eventless_products(planted: InteractionData) -> tuple[InteractionData, int, int]:
    """``planted``'s marketplace with products "p_new_a" (category "a") and "p_new_b" (category
    "b") appended (old rows keep their indices); returns (data, row of p_new_a, row of p_new_b)."""
    market = planted.market
    products = market.products
    extra = pd.concat([products.iloc[[0]], products.iloc[[-1]]], ignore_index=True)
    assert list(extra["category_id"]) == ["a", "b"]
    extra["product_id"] = ["p_new_a", "p_new_b"]
    grown = Marketplace.from_frames(
        market.info,
        categories=market.categories,
        sellers=market.sellers,
        products=pd.concat([products, extra], ignore_index=True),
        users=market.users,
        events=market.events,
    )
    data = split_dataset(grown)
    return data, len(products), len(products) + 1
