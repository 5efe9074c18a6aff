"""Score priors of the inductive graph models: popularity for short histories, and new products.

A graph model's cosine says how well a product *fits* a user; it says nothing about how much
traffic the product gets. Two priors add that, each with one weight chosen on validation:

- **Popularity**, fading with history length: ``w / (1 + n_u) * pop(i)``, with ``pop(i)`` =
  log(1 + positive events of ``i`` in the stage's history) scaled to [0, 1] and ``n_u`` the
  user's distinct recent history items. A mean of one or two item vectors says little about a
  user, and then popularity is the best evidence there is.
- **Cold items** (products with no event at all before the stage): their popularity is 0, so the
  popularity prior alone ranks every new listing below every product that was ever clicked. A
  new product's traffic comes from its category and its novelty, so it gets
  ``beta * affinity(u, category(i)) * fresh(i)``: ``affinity`` is the user's share of recent
  positive history in the product's category, smoothed towards the global category share
  (``(n_uc + alpha * g_c) / (n_u + alpha)``, so a user with no history gets the global share),
  and ``fresh`` halves every ``half_life_days`` of listing age (``created_at`` against the last
  event of the stage's history; listings dated after it count as age 0; 1 where the age is
  unknown or timestamps are ordinal). On the medium marketplace's validation stage, eventless
  products listed after the cut or within a week of it became targets at 0.11 per product,
  those listed 7-30 days before at 0.04 and older ones never (80 products): an old product
  nobody ever touched is a dud, a fresh one is not.

:func:`select_weights` picks both weights on validation, one after the other, from grids that
contain 0 (no prior): ``w`` by NDCG, ``beta`` by cold-item recall within a relative NDCG
tolerance (see there why).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch import Tensor

from trainer.data.interactions import InteractionData, Stage
from trainer.graph.features import recent_history
from trainer.models.baselines.common import is_better

log = logging.getLogger(__name__)
DAY = 86400


@dataclass(frozen=True)
class PriorWeights:
    popularity: float = 0.0  # w
    cold: float = 0.0  # beta

    @property
    def active(self) -> bool:
        return self.popularity > 0 or self.cold > 0

    def state(self) -> dict[str, float]:
        """The checkpoint entries of the weights."""
        return {"prior_weight": self.popularity, "cold_weight": self.cold}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> PriorWeights:
        """The weights of a checkpoint; older checkpoints have none (both 0)."""
        return cls(float(state.get("prior_weight", 0.0)), float(state.get("cold_weight", 0.0)))


def category_codes(data: InteractionData) -> tuple[np.ndarray, int]:
    """(num_items,) code of each product's category in item-row order (-1 unknown), and count."""
    products = data.market.products
    codes, uniques = pd.factorize(products["category_id"], use_na_sentinel=True)
    by_item = np.full(data.num_items, -1, dtype=np.int64)
    by_item[data.items.to_idx(products["product_id"].to_numpy(dtype=object))] = codes
    return by_item, len(uniques)


def freshness(data: InteractionData, stage: Stage, half_life_days: float) -> np.ndarray:
    """(num_items,) 0.5 ** (listing age in days / half life); 1 where the age is unknown."""
    fresh = np.ones(data.num_items, dtype=np.float32)
    products = data.market.products
    history = data.history(stage)
    if half_life_days <= 0 or data.info.timestamps != "real" or len(history) == 0:
        return fresh
    created = pd.to_datetime(products["created_at"], utc=True)
    known = created.notna().to_numpy()
    if not known.any():
        return fresh
    seconds = created[known].astype("datetime64[ms, UTC]").astype("int64").to_numpy() // 1000
    now = int(history["timestamp"].max())
    age_days = np.maximum(now - seconds, 0) / DAY
    rows = data.items.to_idx(products["product_id"].to_numpy(dtype=object)[known])
    fresh[rows] = np.power(0.5, age_days / half_life_days).astype(np.float32)
    return fresh


@dataclass
class StagePriors:
    """What the priors need about one stage of one dataset (computed once, then cached)."""

    popularity: Tensor  # (I,) scaled log popularity in [0, 1]
    shrink: Tensor  # (U,) 1 / (1 + n_u)
    cold_items: Tensor  # (N,) rows of products with no event of any type before the stage
    cold_category: Tensor  # (N,) their category codes (-1 unknown)
    cold_fresh: Tensor  # (N,) their freshness in (0, 1]
    category_counts: sp.csr_matrix  # (U, C) distinct recent history items per category
    global_share: np.ndarray  # (C,) share of positive history events per category
    history_counts: np.ndarray  # (U,) n_u (recent distinct history items)
    smoothing: float  # alpha

    @classmethod
    def build(
        cls,
        data: InteractionData,
        stage: Stage,
        history_len: int = 20,
        half_life_days: float = 14.0,
        smoothing: float = 1.0,
    ) -> StagePriors:
        positives = data.positives(data.history(stage))
        events = positives["item_idx"].to_numpy()
        pop = np.log1p(np.bincount(events, minlength=data.num_items)).astype(np.float32)
        pop /= max(float(pop.max()), 1e-12)
        ptr, items = recent_history(data, stage, history_len)
        counts = np.diff(ptr)
        categories, num_categories = category_codes(data)
        owner = np.repeat(np.arange(data.num_users), counts)
        item_category = categories[items]
        known = item_category >= 0
        category_counts = sp.csr_matrix(
            (np.ones(int(known.sum()), dtype=np.float32), (owner[known], item_category[known])),
            shape=(data.num_users, max(num_categories, 1)),
        )
        category_counts.sum_duplicates()
        event_category = categories[events]
        totals = np.bincount(
            event_category[event_category >= 0], minlength=max(num_categories, 1)
        ).astype(np.float64)
        global_share = totals / max(totals.sum(), 1.0)
        seen = np.zeros(data.num_items, dtype=bool)
        seen[data.history(stage)["item_idx"].to_numpy()] = True
        cold = np.flatnonzero(~seen)
        fresh = freshness(data, stage, half_life_days)
        return cls(
            popularity=torch.from_numpy(pop),
            shrink=torch.from_numpy((1.0 / (1.0 + counts)).astype(np.float32)),
            cold_items=torch.from_numpy(cold),
            cold_category=torch.from_numpy(categories[cold]),
            cold_fresh=torch.from_numpy(fresh[cold]),
            category_counts=category_counts,
            global_share=global_share,
            history_counts=counts.astype(np.float64),
            smoothing=smoothing,
        )

    def affinity(self, users: np.ndarray) -> Tensor:
        """(B, N) smoothed share of each user's recent history in each cold item's category."""
        alpha = self.smoothing
        counts = self.category_counts[users].toarray()  # (B, C)
        share = (counts + alpha * self.global_share[None, :]) / (
            self.history_counts[users] + alpha
        )[:, None]
        share = torch.from_numpy(share.astype(np.float32))
        category = self.cold_category
        out = share[:, category.clamp(min=0)]
        return out.masked_fill((category < 0)[None, :], 0.0)

    def add_to(self, scores: Tensor, users: np.ndarray, weights: PriorWeights) -> Tensor:
        """``scores`` (B, I) plus both priors (a new tensor; ``scores`` is left as it was)."""
        if not weights.active:
            return scores
        scores = scores.clone()
        rows = torch.as_tensor(users, dtype=torch.long)
        if weights.popularity > 0:
            scores += (weights.popularity * self.shrink[rows])[:, None] * self.popularity[None, :]
        if weights.cold > 0 and len(self.cold_items):
            bonus = weights.cold * self.affinity(np.asarray(users)) * self.cold_fresh[None, :]
            scores[:, self.cold_items] += bonus
        return scores


def validation_slices(
    score_fn: Callable[[np.ndarray], Tensor],
    data: InteractionData,
    k: int = 20,
    max_users: int = 5000,
    seed: int = 0,
    batch_size: int = 1024,
) -> dict[str, float] | None:
    """Validation NDCG@k over all targets and Recall@k over targets that are cold items.

    Full ranking with seen items masked, users subsampled to ``max_users`` with a fixed seed (as
    :func:`~trainer.models.baselines.common.validation_metrics`). ``new_Recall@k`` averages over
    the users with at least one cold-item target (``new_users``; the key is absent without any).
    """
    valid = data.valid
    if len(valid) == 0:
        return None
    users = np.unique(valid["user_idx"].to_numpy())
    if len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    seen_any = np.zeros(data.num_items, dtype=bool)
    seen_any[data.history("valid")["item_idx"].to_numpy()] = True
    num_items = np.int64(data.num_items)
    keys = np.unique(valid["user_idx"].to_numpy().astype(np.int64) * num_items + valid["item_idx"])
    fresh_keys = keys[~seen_any[keys % num_items]]
    counts_all = np.bincount(keys // num_items, minlength=data.num_users)
    fresh_all = np.bincount(fresh_keys // num_items, minlength=data.num_users)
    seen = data.seen_matrix("valid").tocsr()
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ndcg_sum = fresh_recall = 0.0
    fresh_users = 0
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        scores = score_fn(batch).detach().float().clone()  # (B, I)
        rows, cols = seen[batch].nonzero()
        scores[torch.as_tensor(rows), torch.as_tensor(cols)] = -torch.inf
        top = torch.topk(scores, k=min(k, data.num_items), dim=1).indices.numpy()  # (B, k)
        listed = batch[:, None].astype(np.int64) * num_items + top
        hits = np.isin(listed, keys).astype(np.float64)  # (B, k) 0/1
        ideal = np.array([discounts[: int(min(c, k))].sum() for c in counts_all[batch]])
        ndcg_sum += float((hits @ discounts[: hits.shape[1]] / ideal).sum())
        has = fresh_all[batch] > 0
        if has.any():
            fresh_hits = np.isin(listed[has], fresh_keys).sum(axis=1)
            fresh_recall += float((fresh_hits / fresh_all[batch][has]).sum())
            fresh_users += int(has.sum())
    out = {f"NDCG@{k}": ndcg_sum / len(users), "new_users": float(fresh_users)}
    if fresh_users:
        out[f"new_Recall@{k}"] = fresh_recall / fresh_users
    return out


def select_weights(
    score_with: Callable[[PriorWeights], Callable[[np.ndarray], Tensor]],
    data: InteractionData,
    popularity_grid: Sequence[float],
    cold_grid: Sequence[float],
    k: int,
    max_users: int,
    seed: int,
    name: str,
    cold_tolerance: float = 0.0,
    refine: int = 2,
) -> PriorWeights:
    """Prior weights chosen on validation (``score_with(weights)`` returns a ``users -> (B, I)``
    scorer); without validation targets, or with grids of zeros only, no prior is used.

    ``w``: the best validation NDCG@k over ``popularity_grid`` (no cold prior). ``beta``: with
    ``cold_tolerance`` 0 the best NDCG over ``cold_grid``; otherwise the value with the best
    validation Recall@k on cold-item targets among those whose NDCG is within ``cold_tolerance``
    (relative) of the best NDCG seen (ties: higher NDCG, then smaller beta), refined by
    ``refine`` bisection steps between the largest such grid value and the next one.

    Why a tolerance: new listings take list slots from known products, so overall NDCG alone
    gives them almost none (on the medium marketplace it was flat up to a weight that still left
    new products out of nearly every top 20). The tolerance is the overall quality traded for
    their exposure, and it is spent on validation only.
    """
    tried: dict[PriorWeights, dict[str, float]] = {}

    def measure(weights: PriorWeights) -> dict[str, float] | None:
        if weights not in tried:
            with torch.no_grad():
                metrics = validation_slices(
                    score_with(weights), data, k=k, max_users=max_users, seed=seed
                )
            if metrics is None:
                return None
            tried[weights] = metrics
        return tried[weights]

    if not any(v > 0 for v in (*popularity_grid, *cold_grid)) or measure(PriorWeights()) is None:
        return PriorWeights()
    ndcg, recall = f"NDCG@{k}", f"new_Recall@{k}"
    best = PriorWeights()
    for w in popularity_grid:
        if is_better(measure(PriorWeights(w, 0.0))[ndcg], tried[best][ndcg]):
            best = PriorWeights(w, 0.0)
    w = best.popularity
    for beta in sorted(cold_grid):
        measure(PriorWeights(w, beta))
    candidates = {c: m for c, m in tried.items() if c.popularity == w}
    top = max(m[ndcg] for m in candidates.values())
    use_recall = cold_tolerance > 0 and any(recall in m for m in candidates.values())

    def feasible(metrics: dict[str, float]) -> bool:
        return metrics[ndcg] >= (1.0 - cold_tolerance) * top

    def key(item: tuple[PriorWeights, dict[str, float]]) -> tuple[float, ...]:
        weights, metrics = item
        if not use_recall:
            return (metrics[ndcg], -weights.cold)
        return (feasible(metrics), metrics.get(recall, 0.0), metrics[ndcg], -weights.cold)

    best = max(candidates.items(), key=key)[0]
    if use_recall:
        # Recall grows with beta while NDCG falls: search between the largest feasible grid
        # value and the next one for a larger feasible beta with more recall.
        grid = sorted(candidates, key=lambda c: c.cold)
        fits = [c.cold for c in grid if feasible(candidates[c])]
        low = max(fits)
        above = [c.cold for c in grid if c.cold > low]
        high = above[0] if above else None
        for _ in range(refine if high is not None else 0):
            middle = PriorWeights(w, (low + high) / 2)
            metrics = measure(middle)
            if not feasible(metrics):
                high = middle.cold
                continue
            low = middle.cold
            if key((middle, metrics)) > key((best, tried[best])):
                best = middle
    log.info(
        "%s: prior weights popularity %.3g, cold %.3g (valid NDCG@%d %.4f, cold-item Recall@%d "
        "%.4f; tried w/beta=NDCG/recall %s)",
        name,
        best.popularity,
        best.cold,
        k,
        tried[best][ndcg],
        k,
        tried[best].get(recall, float("nan")),
        ", ".join(
            f"{c.popularity:g}/{c.cold:g}={m[ndcg]:.4f}/{m.get(recall, float('nan')):.4f}"
            for c, m in tried.items()
        ),
    )
    return best


def select_config_weights(
    score_with: Callable[[PriorWeights], Callable[[np.ndarray], Tensor]],
    data: InteractionData,
    config: Any,
    name: str,
) -> PriorWeights:
    """:func:`select_weights` with the grids and validation settings of a model config (its
    ``prior_grid``, ``cold_grid``, ``valid_k``, ``valid_users``, ``seed``, ``cold_tolerance``)."""
    return select_weights(
        score_with,
        data,
        config.prior_grid,
        config.cold_grid,
        k=config.valid_k,
        max_users=config.valid_users,
        seed=config.seed,
        name=name,
        cold_tolerance=config.cold_tolerance,
    )
