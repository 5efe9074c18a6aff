"""The planted marketplace plus one product per cluster that has no events at all."""

from __future__ import annotations

import numpy as np
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


def assert_each_cluster_prefers_its_new_product(scores, new_a: int, new_b: int) -> None:
    """Users of cluster "a" (even rows of ``scores``) rank p_new_a above p_new_b, users of
    cluster "b" (odd rows) the other way round."""
    scores = np.asarray(scores)
    even, odd = scores[0::2], scores[1::2]
    assert bool((even[:, new_a] > even[:, new_b]).all())
    assert bool((odd[:, new_b] > odd[:, new_a]).all())
