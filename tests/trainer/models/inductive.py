"""Helpers for the inductive graph-model tests: recall on the planted marketplace, and the same
marketplace grown after training by one new product and one new user."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from tests.trainer.models.planted import planted_marketplace
from trainer.data.interactions import InteractionData
from trainer.data.marketplace import Marketplace
from trainer.data.splits import split_dataset

NEW_PRODUCT = "p_new"  # category "a" (cluster of items 0..half-1), no events at all
NEW_USER = "u_new"  # appears after training with three cluster-"b" purchases


def recall_at(model, data: InteractionData, k: int = 5) -> float:
    targets = data.test
    users = np.unique(targets["user_idx"].to_numpy())
    top = model.recommend(data, "test", users, k=k).numpy()
    wanted = targets.groupby("user_idx")["item_idx"].apply(set)
    return float(
        np.mean([len(wanted[u] & set(top[r])) / len(wanted[u]) for r, u in enumerate(users)])
    )


def grown_marketplace(num_users: int = 80, num_items: int = 40, events_per_user: int = 8):
    """The planted marketplace plus NEW_PRODUCT and NEW_USER (appended, so old rows keep their
    indices); returns (market, row of the new product, row of the new user)."""
    market = planted_marketplace(num_users, num_items, events_per_user)
    products = market.products.copy()
    extra = products.iloc[[0]].copy()
    extra["product_id"] = NEW_PRODUCT
    extra["title"] = "a new item"
    products = pd.concat([products, extra], ignore_index=True)
    users = market.users.copy()
    new_user = users.iloc[[0]].copy()
    new_user["user_id"] = NEW_USER
    users = pd.concat([users, new_user], ignore_index=True)
    events = market.events.copy()
    last = events["timestamp"].max()
    bought = [f"p{num_items // 2 + j}" for j in range(4)]  # cluster "b"
    rows = events.iloc[[0] * len(bought)].copy()
    rows["user_id"] = NEW_USER
    rows["product_id"] = bought
    rows["event_type"] = "purchase"
    rows["timestamp"] = [last + pd.Timedelta(minutes=j + 1) for j in range(len(bought))]
    rows["hour"] = [t.hour for t in rows["timestamp"]]
    events = pd.concat([events, rows], ignore_index=True)
    grown = Marketplace.from_frames(
        market.info,
        categories=market.categories,
        sellers=market.sellers,
        products=products,
        users=users,
        events=events,
    )
    return split_dataset(grown), num_items, num_users


def nearest(items: torch.Tensor, row: int, k: int = 5) -> np.ndarray:
    """Rows of the k items most cosine-similar to ``row`` (itself excluded)."""
    table = torch.nn.functional.normalize(torch.as_tensor(items), dim=1)
    scores = table @ table[row]
    scores[row] = -torch.inf
    return torch.topk(scores, k).indices.numpy()
