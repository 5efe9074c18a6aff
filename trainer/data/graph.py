"""The marketplace as a heterogeneous graph (PyG ``HeteroData``) for the graph models.

Node types: ``user``, ``product``, ``seller``, ``category``; node rows follow the tables of the
dataset (``user``/``product`` rows are the ``user_idx``/``item_idx`` of
:class:`~trainer.data.interactions.InteractionData`, so scores line up with evaluation).

Edge types:

- ``(user, <event>, product)`` for each chosen event type (click, favorite, cart, purchase,
  impression). Only events of ``data.history(stage)`` become edges, so a graph built for the
  validation stage holds training events only and nothing from the future can leak into a model.
  Repeated events of one type between one pair collapse into one edge: ``time`` is the first
  occurrence (when the edge came into existence, which time-respecting samplers need) and
  ``edge_weight`` the number of events.
- ``(product, sold_by, seller)``, ``(product, in_category, category)`` and
  ``(category, child_of, category)`` (child to parent) from the catalogue; they carry no time
  (``time`` = :data:`NO_TIME`, earlier than any event) because the catalogue is known up front,
  and new products reach their seller and category through them (inductive models need that).
- The reverse of every edge type, named ``rev_<relation>`` (PyG's ``ToUndirected`` convention),
  with the same ``time`` and ``edge_weight``.

Node features on ``product``: ``category_idx``, ``seller_idx`` and ``price_bucket`` (price
quantile bucket), each -1 where unknown. ``category`` nodes carry ``parent_idx`` and ``depth``.

The id maps (external id to row) travel with the graph in :class:`MarketGraph` and in the file
written by :func:`save_graph`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from trainer.data.interactions import IdMap, InteractionData, Stage
from trainer.data.schema import EVENT_TYPES
from trainer.graph import HeteroData

NODE_TYPES: tuple[str, ...] = ("user", "product", "seller", "category")
CATALOGUE_RELATIONS: dict[str, tuple[str, str, str]] = {
    "sold_by": ("product", "sold_by", "seller"),
    "in_category": ("product", "in_category", "category"),
    "child_of": ("category", "child_of", "category"),
}
NO_TIME = np.iinfo(np.int64).min
"""``time`` of catalogue edges: before every event, so time-respecting samplers keep them."""

GRAPH_FORMAT = 1


def reverse_type(edge_type: tuple[str, str, str]) -> tuple[str, str, str]:
    src, rel, dst = edge_type
    rel = rel.removeprefix("rev_") if rel.startswith("rev_") else f"rev_{rel}"
    return (dst, rel, src)


@dataclass
class MarketGraph:
    """A ``HeteroData`` graph plus the id maps of its node types and what it was built from."""

    data: HeteroData
    id_maps: dict[str, IdMap]
    stage: str
    event_types: tuple[str, ...]
    meta: dict = field(default_factory=dict)

    def to_idx(self, node_type: str, ids: Sequence[str]) -> np.ndarray:
        return self.id_maps[node_type].to_idx(ids)

    def to_id(self, node_type: str, idx) -> np.ndarray:
        return self.id_maps[node_type].to_id(idx)

    def interaction_edge_types(self) -> list[tuple[str, str, str]]:
        return [("user", event, "product") for event in self.event_types]


def _bucketize_prices(prices: np.ndarray, buckets: int) -> np.ndarray:
    """Quantile bucket of each price in [0, buckets), -1 where the price is missing."""
    out = np.full(len(prices), -1, dtype=np.int64)
    known = ~np.isnan(prices)
    if known.any() and buckets > 0:
        edges = np.quantile(prices[known], np.linspace(0, 1, buckets + 1)[1:-1])
        out[known] = np.searchsorted(edges, prices[known], side="right")
    return out


def _category_depth(parent_idx: np.ndarray) -> np.ndarray:
    """Depth of every category in the taxonomy (roots 0), by repeated parent lookups."""
    depth = np.zeros(len(parent_idx), dtype=np.int64)
    current = parent_idx.copy()
    for _ in range(len(parent_idx) + 1):
        has_parent = current >= 0
        if not has_parent.any():
            return depth
        depth[has_parent] += 1
        current[has_parent] = parent_idx[current[has_parent]]
    raise ValueError("categories.parquet: the parent_id links contain a cycle")


def _lookup(id_map: IdMap, values: pd.Series) -> np.ndarray:
    """Rows of the (possibly null) references in ``values``; -1 where null."""
    out = np.full(len(values), -1, dtype=np.int64)
    present = values.notna().to_numpy()
    if present.any():
        out[present] = id_map.to_idx(values[present].to_numpy(dtype=object))
    return out


def _set_edges(
    graph: HeteroData,
    edge_type: tuple[str, str, str],
    src: np.ndarray,
    dst: np.ndarray,
    time: np.ndarray,
    weight: np.ndarray,
    add_reverse: bool,
) -> None:
    index = torch.from_numpy(np.stack([src, dst]).astype(np.int64))
    time_t = torch.from_numpy(time.astype(np.int64))
    weight_t = torch.from_numpy(weight.astype(np.float32))
    graph[edge_type].edge_index = index
    graph[edge_type].time = time_t
    graph[edge_type].edge_weight = weight_t
    if add_reverse:
        rev = graph[reverse_type(edge_type)]
        rev.edge_index = index.flip(0).contiguous()
        rev.time = time_t.clone()
        rev.edge_weight = weight_t.clone()


def interaction_edges(history: pd.DataFrame, event: str, num_items: int) -> pd.DataFrame:
    """One row per (user, item) pair with ``event``: first time and count, sorted by pair."""
    code = EVENT_TYPES.index(event)
    rows = history[history["event"].to_numpy() == code]
    key = rows["user_idx"].to_numpy(dtype=np.int64) * np.int64(num_items) + rows[
        "item_idx"
    ].to_numpy(dtype=np.int64)
    grouped = (
        pd.DataFrame({"key": key, "timestamp": rows["timestamp"].to_numpy(dtype=np.int64)})
        .groupby("key", sort=True)["timestamp"]
        .agg(["min", "size"])
    )
    keys = grouped.index.to_numpy(dtype=np.int64)
    return pd.DataFrame(
        {
            "user_idx": keys // num_items,
            "item_idx": keys % num_items,
            "time": grouped["min"].to_numpy(dtype=np.int64),
            "count": grouped["size"].to_numpy(dtype=np.int64),
        }
    )


def build_graph(
    data: InteractionData,
    stage: Stage = "valid",
    event_types: Sequence[str] | None = None,
    add_reverse: bool = True,
    price_buckets: int = 10,
) -> MarketGraph:
    """The graph a model may use to predict ``stage`` targets (``valid``: training events only).

    ``event_types`` picks the user->product relations (default: every event type present in the
    history); an event type with no events still gets an (empty) edge type so that models see the
    same metadata on every split.
    """
    if stage not in ("valid", "test"):
        raise ValueError(f"stage must be 'valid' or 'test', got {stage!r}")
    chosen = tuple(EVENT_TYPES if event_types is None else event_types)
    unknown = [e for e in chosen if e not in EVENT_TYPES]
    if unknown:
        raise ValueError(f"unknown event type {unknown[0]!r} (known: {', '.join(EVENT_TYPES)})")
    market = data.market
    id_maps = {
        "user": data.users,
        "product": data.items,
        "seller": IdMap(market.sellers["seller_id"].to_numpy(dtype=object)),
        "category": IdMap(market.categories["category_id"].to_numpy(dtype=object)),
    }
    graph = HeteroData()
    for node_type in NODE_TYPES:
        graph[node_type].num_nodes = len(id_maps[node_type])

    products = market.products
    category_idx = _lookup(id_maps["category"], products["category_id"])
    seller_idx = _lookup(id_maps["seller"], products["seller_id"])
    prices = products["price"].to_numpy(dtype=np.float64, na_value=np.nan)
    graph["product"].category_idx = torch.from_numpy(category_idx)
    graph["product"].seller_idx = torch.from_numpy(seller_idx)
    graph["product"].price_bucket = torch.from_numpy(_bucketize_prices(prices, price_buckets))
    parent_idx = _lookup(id_maps["category"], market.categories["parent_id"])
    graph["category"].parent_idx = torch.from_numpy(parent_idx)
    graph["category"].depth = torch.from_numpy(_category_depth(parent_idx))

    history = data.history(stage)
    for event in chosen:
        edges = interaction_edges(history, event, data.num_items)
        _set_edges(
            graph,
            ("user", event, "product"),
            edges["user_idx"].to_numpy(),
            edges["item_idx"].to_numpy(),
            edges["time"].to_numpy(),
            edges["count"].to_numpy(),
            add_reverse,
        )

    item_rows = np.arange(len(products), dtype=np.int64)
    catalogue = {
        "sold_by": (item_rows[seller_idx >= 0], seller_idx[seller_idx >= 0]),
        "in_category": (item_rows[category_idx >= 0], category_idx[category_idx >= 0]),
        "child_of": (np.flatnonzero(parent_idx >= 0), parent_idx[parent_idx >= 0]),
    }
    for relation, (src, dst) in catalogue.items():
        _set_edges(
            graph,
            CATALOGUE_RELATIONS[relation],
            src,
            dst,
            np.full(len(src), NO_TIME, dtype=np.int64),
            np.ones(len(src), dtype=np.float32),
            add_reverse,
        )
    return MarketGraph(
        data=graph,
        id_maps=id_maps,
        stage=stage,
        event_types=chosen,
        meta={"dataset": data.info.name, "protocol": data.protocol, "reverse": add_reverse},
    )


def save_graph(graph: MarketGraph, path: Path) -> Path:
    """Write the graph with its id maps to one file (``torch.save``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "format": GRAPH_FORMAT,
            "graph": graph.data.to_dict(),
            "edge_types": graph.data.edge_types,
            "node_types": graph.data.node_types,
            "id_maps": {name: m.ids.tolist() for name, m in graph.id_maps.items()},
            "stage": graph.stage,
            "event_types": list(graph.event_types),
            "meta": graph.meta,
        },
        path,
    )
    return path


def load_graph(path: Path) -> MarketGraph:
    """Read a file written by :func:`save_graph`."""
    raw = torch.load(Path(path), map_location="cpu", weights_only=False)
    if not isinstance(raw, dict) or raw.get("format") != GRAPH_FORMAT:
        raise ValueError(f"{path}: not a graph file of format {GRAPH_FORMAT}")
    data = HeteroData.from_dict(raw["graph"])
    return MarketGraph(
        data=data,
        id_maps={
            name: IdMap(np.asarray(ids, dtype=object)) for name, ids in raw["id_maps"].items()
        },
        stage=raw["stage"],
        event_types=tuple(raw["event_types"]),
        meta=raw["meta"],
    )
