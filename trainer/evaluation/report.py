"""One call from a trained model to every metric: :func:`evaluate`, and :func:`format_table`.

Keys of the result: ``users`` (evaluated users), accuracy metrics ``HR@K``, ``Precision@K``,
``Recall@K``, ``NDCG@K``, ``MRR@K``; for the full protocol also the beyond-accuracy metrics
(``Coverage@K``, ``Entropy@K``, ``Gini@K``, ``Novelty@K``, ``AvgPopularity@K``, ``TailShare@K``,
``Personalization@K``, ``NewItemShare@K``, and where the data or the model has what they need
``ILD-category@K``, ``ILD-seller@K``, ``SellerDiversity@K``, ``SellerMaxShare@K``,
``ILD-embedding@K``). The same metrics on the cold-start slices carry the slice name as a prefix
(``cold_users/HR@10``, ``history_2-4/NDCG@10``, ``new_items/Recall@20``, ...). Definitions:
docs/evaluation.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from trainer.data.interactions import InteractionData, Stage
from trainer.data.splits import cold_users, history_length_buckets, new_items
from trainer.evaluation import metrics as m
from trainer.evaluation.ranking import full_ranking, target_matrix
from trainer.evaluation.sampled import Sampling, rank_hits, sample_negatives, sampled_ranks
from trainer.models.base import Recommender

Protocol = Literal["full", "sampled"]
ACCURACY = ("HR", "Precision", "Recall", "NDCG", "MRR")


@dataclass(frozen=True)
class ItemContext:
    """What the beyond-accuracy metrics know about items; None where the data has nothing."""

    num_items: int
    popularity: np.ndarray  # (N,) positive training events per item
    new_items: np.ndarray  # (N,) bool, no event before the stage
    categories: np.ndarray | None  # (N,) category code, -1 unknown
    sellers: np.ndarray | None  # (N,) seller code, -1 unknown
    num_sellers: int
    embeddings: np.ndarray | None  # (N, D)


def _codes(data: InteractionData, column: str) -> tuple[np.ndarray | None, int]:
    """Integer codes of a products column in item-row order, -1 where null; None if all null."""
    products = data.market.products
    codes, uniques = pd.factorize(products[column], use_na_sentinel=True)
    if len(uniques) == 0:
        return None, 0
    by_item = np.full(data.num_items, -1, dtype=np.int64)
    by_item[data.items.to_idx(products["product_id"].to_numpy(dtype=object))] = codes
    return by_item, len(uniques)


def item_context(model: Recommender, data: InteractionData, stage: Stage) -> ItemContext:
    categories, _ = _codes(data, "category_id")
    sellers, num_sellers = _codes(data, "seller_id")
    embeddings = model.item_embeddings()
    if embeddings is not None:
        embeddings = m.as_numpy(embeddings)
        if embeddings.ndim != 2 or embeddings.shape[0] != data.num_items:
            raise ValueError(
                f"{type(model).__name__}.item_embeddings() has shape {embeddings.shape}, expected "
                f"({data.num_items}, D)"
            )
    fresh = np.zeros(data.num_items, dtype=bool)
    fresh[new_items(data, stage)] = True
    return ItemContext(
        num_items=data.num_items,
        popularity=data.item_popularity(),
        new_items=fresh,
        categories=categories,
        sellers=sellers,
        num_sellers=num_sellers,
        embeddings=embeddings,
    )


def cold_start_slices(
    data: InteractionData, stage: Stage, cold_max_history: int = 3
) -> dict[str, np.ndarray]:
    """Slice name -> user rows: cold users, then the history-length buckets."""
    slices = {"cold_users": cold_users(data, stage, max_history=cold_max_history)}
    for label, users in history_length_buckets(data, stage).items():
        slices[f"history_{label}"] = users
    return slices


def accuracy_metrics(
    hits: np.ndarray, num_targets: np.ndarray, ks: Iterable[int], groups: np.ndarray | None = None
) -> dict[str, float]:
    """Mean accuracy metrics; with ``groups`` rows are first averaged within each group (user)."""
    per_row: dict[str, np.ndarray] = {}
    for k in ks:
        per_row[f"HR@{k}"] = m.hit_rate_at_k(hits, k)
        per_row[f"Precision@{k}"] = m.precision_at_k(hits, k)
        per_row[f"Recall@{k}"] = m.recall_at_k(hits, num_targets, k)
        per_row[f"NDCG@{k}"] = m.ndcg_at_k(hits, num_targets, k)
        per_row[f"MRR@{k}"] = m.mrr_at_k(hits, k)
    if groups is None:
        return {key: float(values.mean()) for key, values in per_row.items()}
    _, group = np.unique(groups, return_inverse=True)
    sizes = np.bincount(group)
    return {
        key: float((np.bincount(group, weights=values) / sizes).mean())
        for key, values in per_row.items()
    }


def list_metrics(recs: np.ndarray, ks: Iterable[int], context: ItemContext) -> dict[str, float]:
    """Beyond-accuracy metrics of top-K lists; undefined values (NaN) are left out."""
    out: dict[str, float] = {}
    for k in ks:
        top = recs[:, :k]
        values = {
            f"Coverage@{k}": m.catalog_coverage(top, context.num_items),
            f"Entropy@{k}": m.distributional_coverage(top, context.num_items),
            f"Gini@{k}": m.gini_index(top, context.num_items),
            f"AvgPopularity@{k}": m.average_popularity(top, context.popularity),
            f"TailShare@{k}": m.tail_share(top, context.popularity),
            f"Personalization@{k}": m.personalization(top),
        }
        if context.popularity.sum() > 0:
            values[f"Novelty@{k}"] = m.novelty(top, context.popularity)
        if context.new_items.any():
            values[f"NewItemShare@{k}"] = m.item_share(top, context.new_items)
        if context.categories is not None:
            values[f"ILD-category@{k}"] = m.intra_list_diversity(top, context.categories)
        if context.sellers is not None:
            values[f"ILD-seller@{k}"] = m.intra_list_diversity(top, context.sellers)
            values[f"SellerDiversity@{k}"] = m.seller_diversity(
                top, context.sellers, context.num_sellers
            )
            values[f"SellerMaxShare@{k}"] = m.max_seller_share(top, context.sellers)
        if context.embeddings is not None:
            values[f"ILD-embedding@{k}"] = m.embedding_ild(top, context.embeddings)
        out.update({key: value for key, value in values.items() if np.isfinite(value)})
    return out


def _prefixed(prefix: str, values: Mapping[str, float]) -> dict[str, float]:
    return {f"{prefix}/{key}": value for key, value in values.items()}


def evaluate(
    model: Recommender,
    data: InteractionData,
    stage: Stage = "test",
    protocol: Protocol = "full",
    ks: Iterable[int] = (5, 10, 20),
    negatives: Mapping[int, np.ndarray] | None = None,
    num_negatives: int = 100,
    sampling: Sampling = "uniform",
    seed: int = 0,
    batch_size: int = 1024,
    cold_max_history: int = 3,
    progress: bool = False,
) -> dict[str, float]:
    """Every metric of ``model`` on ``stage``; see the module docstring for the keys.

    ``protocol="full"`` ranks the whole catalogue (seen items excluded). ``"sampled"`` ranks each
    target among ``negatives`` (a fixed user_idx -> items mapping) or, when none is given, among
    ``num_negatives`` seeded ``sampling`` negatives; only accuracy metrics exist there.
    """
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    if stage not in ("valid", "test"):
        raise ValueError(f"stage must be 'valid' or 'test', got {stage!r}")
    if len(data.targets(stage)) == 0:
        raise ValueError(f"dataset {data.info.name!r} has no {stage} targets to evaluate")
    context = item_context(model, data, stage)
    slices = cold_start_slices(data, stage, cold_max_history)
    if protocol == "full":
        return _evaluate_full(model, data, stage, ks, context, slices, batch_size, progress)
    if protocol == "sampled":
        if negatives is None:
            negatives = sample_negatives(data, stage, num_negatives, sampling, seed)
        return _evaluate_sampled(
            model, data, stage, ks, negatives, context, slices, batch_size, progress
        )
    raise ValueError(f"unknown protocol {protocol!r} (full, sampled)")


def _evaluate_full(model, data, stage, ks, context, slices, batch_size, progress):
    ranking = full_ranking(model, data, stage, ks[-1], batch_size=batch_size, progress=progress)
    targets = target_matrix(data, stage)[ranking.users]
    hits = m.hit_matrix(ranking.items, targets)
    counts = np.diff(targets.indptr)
    results: dict[str, float] = {"users": float(len(ranking.users))}
    results.update(accuracy_metrics(hits, counts, ks))
    results.update(list_metrics(ranking.items, ks, context))
    for name, users in slices.items():
        rows = np.isin(ranking.users, users)
        results[f"{name}/users"] = float(rows.sum())
        if rows.any():
            results.update(_prefixed(name, accuracy_metrics(hits[rows], counts[rows], ks)))
            results.update(_prefixed(name, list_metrics(ranking.items[rows], ks, context)))
    # New items: the same lists, scored only against targets that are new items.
    fresh = (targets @ sp.diags(context.new_items.astype(np.float32))).tocsr()
    fresh.eliminate_zeros()
    fresh_counts = np.diff(fresh.indptr)
    rows = fresh_counts > 0
    results["new_items/users"] = float(rows.sum())
    if rows.any():
        fresh_hits = m.hit_matrix(ranking.items[rows], fresh[rows])
        results.update(_prefixed("new_items", accuracy_metrics(fresh_hits, fresh_counts[rows], ks)))
    return results


def _evaluate_sampled(model, data, stage, ks, negatives, context, slices, batch_size, progress):
    ranked = sampled_ranks(model, data, stage, negatives, batch_size=batch_size, progress=progress)
    hits = rank_hits(ranked.ranks, ks[-1])
    ones = np.ones(len(ranked.ranks), dtype=np.int64)
    results: dict[str, float] = {
        "users": float(len(np.unique(ranked.users))),
        "candidates": float(ranked.candidates.mean()),
    }
    results.update(accuracy_metrics(hits, ones, ks, groups=ranked.users))
    for name, users in slices.items():
        rows = np.isin(ranked.users, users)
        results[f"{name}/users"] = float(len(np.unique(ranked.users[rows])))
        if rows.any():
            values = accuracy_metrics(hits[rows], ones[rows], ks, groups=ranked.users[rows])
            results.update(_prefixed(name, values))
    rows = context.new_items[ranked.items]
    results["new_items/users"] = float(len(np.unique(ranked.users[rows])))
    if rows.any():
        values = accuracy_metrics(hits[rows], ones[rows], ks, groups=ranked.users[rows])
        results.update(_prefixed("new_items", values))
    return results


def format_table(
    results: Mapping[str, Mapping[str, float]],
    models_as_rows: bool = False,
    keys: Iterable[str] | None = None,
) -> str:
    """A plain-text table of several models' results (metrics as rows unless ``models_as_rows``).

    ``keys`` picks and orders the metrics; by default every metric, in the order first met. A
    metric a model lacks shows as '-'.
    """
    models = list(results)
    if keys is None:
        keys = list(dict.fromkeys(key for values in results.values() for key in values))
    else:
        keys = list(keys)

    def cell(model: str, key: str) -> str:
        value = results[model].get(key)
        if value is None:
            return "-"
        if key == "users" or key.endswith("/users"):
            return f"{int(value)}"
        return f"{value:.4f}"

    if models_as_rows:
        header = ["model", *keys]
        rows = [[model, *(cell(model, key) for key in keys)] for model in models]
    else:
        header = ["metric", *models]
        rows = [[key, *(cell(model, key) for model in models)] for key in keys]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])
