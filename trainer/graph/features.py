"""Product features and graph views shared by the inductive graph models (GraphSAGE, PinSAGE, GAT).

Inductive models never look a product up by its row: a product is described by what the
catalogue says about it (leaf category, the category's parent, seller, price bucket), so a product
added after training gets an embedding from the same encoder. The vocabularies (category and
seller external ids) are frozen at training time and travel in the checkpoint;
:meth:`ProductFeatures.from_graph` maps any later graph onto them by external id, and anything
unknown falls into a learned "unknown" row instead of failing.

Also here: :func:`interaction_view`, the message-passing graph the hetero GNNs train on (only the
edge types they use, interactions optionally merged into one relation), and
:func:`recent_history`, each user's latest positive items as CSR arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from trainer.data.graph import MarketGraph
from trainer.data.interactions import InteractionData, Stage
from trainer.graph import HeteroData

MERGED = "interacted"  # relation name of the merged user->product interaction edges
CATALOGUE_EDGES = (("category", "rev_in_category", "product"), ("seller", "rev_sold_by", "product"))


def _remap(ids: np.ndarray, vocabulary: Sequence[str]) -> np.ndarray:
    """Row of each id in ``vocabulary``, -1 where absent."""
    lookup = {name: row for row, name in enumerate(vocabulary)}
    return np.array([lookup.get(name, -1) for name in ids.tolist()], dtype=np.int64)


@dataclass
class ProductFeatures:
    """Catalogue features of every product, indexed into frozen vocabularies (-1 = unknown)."""

    category: Tensor  # (I,) row in ``categories``
    parent: Tensor  # (I,) row of the category's parent in ``categories``
    seller: Tensor  # (I,) row in ``sellers``
    price: Tensor  # (I,) price bucket
    category_rows: Tensor  # (C_graph,) vocabulary row of each category node of the graph
    seller_rows: Tensor  # (S_graph,) vocabulary row of each seller node of the graph
    categories: list[str]  # vocabulary: category external ids
    sellers: list[str]  # vocabulary: seller external ids
    price_buckets: int

    @classmethod
    def from_graph(
        cls,
        graph: MarketGraph,
        price_buckets: int,
        categories: Sequence[str] | None = None,
        sellers: Sequence[str] | None = None,
    ) -> ProductFeatures:
        """Features of ``graph``'s products; vocabularies default to the graph's own."""
        graph_categories = graph.id_maps["category"].ids
        graph_sellers = graph.id_maps["seller"].ids
        categories = list(graph_categories) if categories is None else list(categories)
        sellers = list(graph_sellers) if sellers is None else list(sellers)
        category_rows = torch.from_numpy(_remap(graph_categories, categories))
        seller_rows = torch.from_numpy(_remap(graph_sellers, sellers))
        product = graph.data["product"]
        parent_of = graph.data["category"].parent_idx

        def through(rows: Tensor, index: Tensor) -> Tensor:
            out = torch.full_like(index, -1)
            known = index >= 0
            out[known] = rows[index[known]]
            return out

        category = product.category_idx
        parent = torch.full_like(category, -1)
        known = category >= 0
        parent[known] = parent_of[category[known]]
        return cls(
            category=through(category_rows, category),
            parent=through(category_rows, parent),
            seller=through(seller_rows, product.seller_idx),
            price=product.price_bucket.clamp(max=price_buckets - 1),
            category_rows=category_rows,
            seller_rows=seller_rows,
            categories=categories,
            sellers=sellers,
            price_buckets=price_buckets,
        )

    def state(self) -> dict:
        return {
            "category": self.category,
            "parent": self.parent,
            "seller": self.seller,
            "price": self.price,
            "category_rows": self.category_rows,
            "seller_rows": self.seller_rows,
            "categories": list(self.categories),
            "sellers": list(self.sellers),
            "price_buckets": self.price_buckets,
        }

    @classmethod
    def from_state(cls, state: dict) -> ProductFeatures:
        return cls(**state)


class FeatureEncoder(nn.Module):
    """Product vector = sum of category, parent category, seller and price-bucket embeddings.

    Each table has one extra last row for "unknown" (-1 or outside the vocabulary), so new
    products, new sellers and missing prices still get a vector.
    """

    def __init__(self, num_categories: int, num_sellers: int, price_buckets: int, dim: int):
        super().__init__()
        self.category = nn.Embedding(num_categories + 1, dim)
        self.parent = nn.Embedding(num_categories + 1, dim)
        self.seller = nn.Embedding(num_sellers + 1, dim)
        self.price = nn.Embedding(price_buckets + 1, dim)
        for table in (self.category, self.parent, self.seller, self.price):
            nn.init.normal_(table.weight, std=0.1)

    @staticmethod
    def _rows(table: nn.Embedding, index: Tensor) -> Tensor:
        unknown = table.num_embeddings - 1
        return torch.where((index < 0) | (index >= unknown), torch.full_like(index, unknown), index)

    def lookup(self, table: nn.Embedding, index: Tensor) -> Tensor:
        return table(self._rows(table, index))

    def forward(self, features: ProductFeatures, products: Tensor) -> Tensor:
        return (
            self.lookup(self.category, features.category[products])
            + self.lookup(self.parent, features.parent[products])
            + self.lookup(self.seller, features.seller[products])
            + self.lookup(self.price, features.price[products])
        )  # (N, D)


def interaction_view(
    graph: MarketGraph, event_types: Sequence[str], merge: bool
) -> tuple[HeteroData, list[tuple[str, str, str]]]:
    """The message-passing graph of the hetero GNNs and its interaction edge types.

    Keeps users, products, categories and sellers; user<->product edges of ``event_types`` (one
    relation per event type, or all merged into :data:`MERGED` with pairs de-duplicated) in both
    directions, and category->product and seller->product. Returns the graph and the
    (user, relation, product) types.
    """
    view = HeteroData()
    for node_type in ("user", "product", "category", "seller"):
        view[node_type].num_nodes = graph.data[node_type].num_nodes
    parts = [graph.data["user", event, "product"].edge_index for event in event_types]
    if merge:
        index = torch.cat(parts, dim=1) if parts else torch.empty(2, 0, dtype=torch.long)
        groups = {MERGED: torch.unique(index, dim=1)}
    else:
        groups = dict(zip(event_types, parts, strict=True))
    relations = []
    for relation, index in groups.items():
        view["user", relation, "product"].edge_index = index
        view["product", f"rev_{relation}", "user"].edge_index = index.flip(0).contiguous()
        relations.append(("user", relation, "product"))
    for edge_type in CATALOGUE_EDGES:
        src, relation, dst = edge_type
        forward = (dst, relation.removeprefix("rev_"), src)  # present with or without reverses
        view[edge_type].edge_index = graph.data[forward].edge_index.flip(0).contiguous()
    return view, relations


def recent_history(
    data: InteractionData, stage: Stage, max_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """(ptr, items): each user's last ``max_len`` distinct positive items, oldest first (CSR)."""
    history = data.positives(data.history(stage))
    frame = history[["user_idx", "item_idx", "timestamp"]]
    # Latest occurrence of each (user, item), then the newest max_len per user.
    frame = frame.drop_duplicates(["user_idx", "item_idx"], keep="last")
    frame = frame.sort_values(["user_idx", "timestamp"], kind="stable")
    users = frame["user_idx"].to_numpy(dtype=np.int64)
    items = frame["item_idx"].to_numpy(dtype=np.int64)
    counts = np.bincount(users, minlength=data.num_users)
    ends = np.cumsum(counts)
    rank_from_end = ends[users] - np.arange(len(users))  # 1 = newest
    keep = rank_from_end <= max_len
    users, items = users[keep], items[keep]
    ptr = np.zeros(data.num_users + 1, dtype=np.int64)
    ptr[1:] = np.cumsum(np.bincount(users, minlength=data.num_users))
    return ptr, items
