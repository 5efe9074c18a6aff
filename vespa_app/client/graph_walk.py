"""Graph-walk candidates (Pixie-like): random walks with restart on the item-user graph.

Pixie (Eksombatchai et al., WWW 2018, https://arxiv.org/abs/1711.07601) answers "what is related
to these items" by walking the bipartite graph from the query items: item -> a random user of it
-> a random item of that user, and back to a query item with probability ``restart`` after each
step; items visited most are the candidates. Here every walker moves at once (numpy over the
walkers), walkers are spread over the seeds with a weight that falls with recency, the run is
seeded (same seeds in, same list out) and stops early when ``budget_ms`` is spent.

The graph is the export's ``graph.npz`` (:mod:`model_export.graph`: CSR arrays, rows = the
export's item_idx / user_idx). numpy only, no torch.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

GRAPH_FILE = "graph.npz"  # model_export.graph.GRAPH_FILE
ARRAYS = ("item_indptr", "item_users", "user_indptr", "user_items")


@dataclasses.dataclass(frozen=True)
class WalkConfig:
    walkers: int = 2_000  # walkers started, spread over the seeds
    steps: int = 8  # item -> user -> item hops per walker (at most)
    restart: float = 0.3  # probability of jumping back to the walker's seed after a hop
    budget_ms: float = 5.0  # stop after the hop that overruns this
    seed: int = 0

    def __post_init__(self) -> None:
        if self.walkers < 1 or self.steps < 1:
            raise ValueError("WalkConfig.walkers and steps must be positive")
        if not 0.0 <= self.restart < 1.0:
            raise ValueError(f"WalkConfig.restart must be in [0, 1), got {self.restart}")


@dataclasses.dataclass(frozen=True)
class WalkResult:
    item_idx: np.ndarray  # (n,) int, most visited first
    visits: np.ndarray  # (n,) int, visit counts
    total_visits: int  # visits over all non-seed items
    steps: int  # hops actually taken (fewer than configured when the budget ran out)


class ItemGraph:
    """The item-user bipartite graph, CSR both ways."""

    def __init__(
        self,
        item_indptr: np.ndarray,
        item_users: np.ndarray,
        user_indptr: np.ndarray,
        user_items: np.ndarray,
        product_ids: Sequence[str] | None = None,
    ) -> None:
        self.item_indptr = np.asarray(item_indptr, dtype=np.int64)
        self.item_users = np.asarray(item_users, dtype=np.int64)
        self.user_indptr = np.asarray(user_indptr, dtype=np.int64)
        self.user_items = np.asarray(user_items, dtype=np.int64)
        self.num_items = self.item_indptr.size - 1
        self.num_users = self.user_indptr.size - 1
        problems = []
        if self.item_users.size != self.user_items.size:
            problems.append(f"{self.item_users.size} item->user edges, {self.user_items.size} back")
        if self.item_indptr[-1] != self.item_users.size:
            problems.append("item_indptr does not end at the edge count")
        if self.user_indptr[-1] != self.user_items.size:
            problems.append("user_indptr does not end at the edge count")
        if self.item_users.size and (
            self.item_users.max() >= self.num_users or self.user_items.max() >= self.num_items
        ):
            problems.append("an edge points past the last row")
        if product_ids is not None and len(product_ids) != self.num_items:
            problems.append(f"{len(product_ids)} product ids for {self.num_items} item rows")
        if problems:
            raise ValueError("inconsistent item-user graph: " + "; ".join(problems))
        self.product_ids = list(product_ids) if product_ids is not None else None
        self.index = (
            {p: i for i, p in enumerate(self.product_ids)} if self.product_ids is not None else {}
        )

    @classmethod
    def load(cls, export_dir: Path | str) -> ItemGraph:
        """``graph.npz`` and ``product_ids.json`` of an export folder."""
        folder = Path(export_dir)
        path = folder / GRAPH_FILE
        with np.load(path) as arrays:
            missing = [name for name in ARRAYS if name not in arrays]
            if missing:
                raise ValueError(f"{path}: missing array {missing[0]!r} (expected {ARRAYS})")
            loaded = {name: arrays[name] for name in ARRAYS}
        ids = json.loads((folder / "product_ids.json").read_text())
        try:
            return cls(**loaded, product_ids=ids)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None

    def walk(
        self,
        seeds: Sequence[int],
        config: WalkConfig | None = None,
        exclude: Sequence[int] = (),
        top_n: int = 200,
    ) -> WalkResult:
        """The ``top_n`` items most visited by walks from ``seeds`` (item_idx, newest first),
        seeds and ``exclude`` left out. Seeds outside the graph or without users are skipped."""
        seeds = np.asarray([s for s in seeds if 0 <= s < self.num_items], dtype=np.int64)
        if seeds.size:
            seeds = seeds[self.item_indptr[seeds + 1] > self.item_indptr[seeds]]
        empty = WalkResult(np.empty(0, np.int64), np.empty(0, np.int64), 0, 0)
        if seeds.size == 0 or top_n < 1:
            return empty
        config = config or WalkConfig()
        rng = np.random.default_rng(config.seed)
        deadline = time.perf_counter() + config.budget_ms / 1000.0
        # Newer seeds get more walkers: weight 1 / (1 + rank), rank 0 = the newest.
        weights = 1.0 / (1.0 + np.arange(seeds.size))
        origin = rng.choice(seeds, size=config.walkers, p=weights / weights.sum())
        position = origin
        landed = []  # the item each walker reached, per hop; counted once at the end
        steps = 0
        for steps in range(1, config.steps + 1):  # noqa: B007 - steps is reported
            start = self.item_indptr[position]
            degree = self.item_indptr[position + 1] - start
            user = self.item_users[start + (rng.random(position.size) * degree).astype(np.int64)]
            start = self.user_indptr[user]
            degree = self.user_indptr[user + 1] - start  # >= 1: the user reached us from an item
            position = self.user_items[start + (rng.random(user.size) * degree).astype(np.int64)]
            landed.append(position)
            back = rng.random(position.size) < config.restart
            position = np.where(back, origin, position)
            if time.perf_counter() > deadline:
                break
        items, visits = np.unique(np.concatenate(landed), return_counts=True)
        keep = ~np.isin(items, seeds)
        if len(exclude):
            keep &= ~np.isin(items, np.asarray(exclude, dtype=np.int64))
        items, visits = items[keep], visits[keep]
        total = int(visits.sum())
        # Most visited first; ties by item_idx so equal runs give equal lists.
        order = np.lexsort((items, -visits))[:top_n]
        return WalkResult(items[order], visits[order].astype(np.int64), total, steps)

    def walk_ids(
        self,
        seed_ids: Sequence[str],
        config: WalkConfig | None = None,
        exclude_ids: Sequence[str] = (),
        top_n: int = 200,
    ) -> dict[str, float]:
        """product_id -> share of the walk's visits, most visited first (needs product ids)."""
        if self.product_ids is None:
            raise ValueError("this graph was built without product ids; use walk()")
        seeds = [self.index[p] for p in seed_ids if p in self.index]
        exclude = [self.index[p] for p in exclude_ids if p in self.index]
        result = self.walk(seeds, config, exclude, top_n)
        total = max(result.total_visits, 1)
        return {
            self.product_ids[int(i)]: float(v) / total
            for i, v in zip(result.item_idx, result.visits, strict=True)
        }


def load_graph(export_dir: Path | str | None) -> ItemGraph | None:
    """The export's graph, or None when the export has none (older exports)."""
    if export_dir is None or not (Path(export_dir) / GRAPH_FILE).is_file():
        return None
    return ItemGraph.load(export_dir)
