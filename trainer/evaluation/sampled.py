"""Sampled protocols, kept only to compare with published sampled anchors (S-uni99, S-pop100).

Each (user, target) pair is one case: the target is ranked among the user's negatives, and its
rank is 1 + the number of negatives scoring at least as high as the target. Ties therefore count
against the target (pessimistic), so a model that scores everything equally gets the worst rank,
not a lucky one. Negatives come from :func:`sample_negatives` (uniform or popularity-weighted,
seeded, drawn from items the user has no positive history with and that are not its targets) or
from a fixed mapping such as lastfm_s3rec's ``LastFM_sample.txt``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from trainer.data.interactions import InteractionData, Stage
from trainer.evaluation.ranking import evaluation_users, score_batch, target_matrix
from trainer.models.base import Recommender

Sampling = Literal["uniform", "popularity"]


@dataclass(frozen=True)
class SampledRanks:
    """One row per (user, target) case."""

    users: np.ndarray  # (C,) user_idx
    items: np.ndarray  # (C,) target item_idx
    ranks: np.ndarray  # (C,) 1-based rank of the target among itself and its negatives
    candidates: np.ndarray  # (C,) 1 + number of negatives the target was ranked against


def sample_negatives(
    data: InteractionData,
    stage: Stage,
    num_negatives: int = 100,
    sampling: Sampling = "uniform",
    seed: int = 0,
    users: np.ndarray | None = None,
) -> dict[int, np.ndarray]:
    """``num_negatives`` distinct items per user with targets, seeded and reproducible.

    Candidates exclude the user's positive history before ``stage`` and its ``stage`` targets.
    ``popularity`` draws item i with probability proportional to its training popularity (items
    never seen in training are never drawn).
    """
    if num_negatives < 1:
        raise ValueError("num_negatives must be at least 1")
    users = evaluation_users(data, stage) if users is None else np.asarray(users, dtype=np.int64)
    if sampling == "uniform":
        weights = np.ones(data.num_items, dtype=np.float64)
    elif sampling == "popularity":
        weights = data.item_popularity().astype(np.float64)
    else:
        raise ValueError(f"unknown sampling {sampling!r} (uniform, popularity)")
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    drawable = weights > 0
    excluded = (data.seen_matrix(stage) + target_matrix(data, stage)).tocsr()
    rng = np.random.default_rng(seed)
    negatives: dict[int, np.ndarray] = {}
    for user in users.tolist():
        forbidden = excluded.indices[excluded.indptr[user] : excluded.indptr[user + 1]]
        available = int(drawable.sum() - drawable[forbidden].sum())
        if available < num_negatives:
            raise ValueError(
                f"user {data.users.ids[user]!r} has only {available} items to draw "
                f"{num_negatives} {sampling} negatives from"
            )
        chosen: list[np.ndarray] = []
        have = 0
        while have < num_negatives:
            # Over-draw, then drop forbidden items and repeats, keeping the draw order.
            size = 2 * (num_negatives - have) + 8
            draw = np.searchsorted(cdf, rng.random(size), side="right")
            draw = np.minimum(draw, data.num_items - 1)
            draw = draw[~np.isin(draw, forbidden)]
            if chosen:
                draw = draw[~np.isin(draw, np.concatenate(chosen))]
            _, first = np.unique(draw, return_index=True)
            draw = draw[np.sort(first)][: num_negatives - have]
            chosen.append(draw)
            have += len(draw)
        negatives[user] = np.concatenate(chosen).astype(np.int64)
    return negatives


def sampled_ranks(
    model: Recommender,
    data: InteractionData,
    stage: Stage,
    negatives: Mapping[int, np.ndarray],
    batch_size: int = 1024,
    progress: bool = False,
) -> SampledRanks:
    """Rank every ``stage`` target among its user's negatives; ties count against the target.

    Negatives equal to one of the user's own targets are dropped (they are positives); a given
    negatives list is otherwise used as it is, repeats included, as published files define the
    protocol.
    """
    targets = data.targets(stage)
    pairs = np.unique(
        targets["user_idx"].to_numpy().astype(np.int64) * data.num_items
        + targets["item_idx"].to_numpy().astype(np.int64)
    )
    case_users = pairs // data.num_items
    case_items = pairs % data.num_items
    users = np.unique(case_users)
    missing = [u for u in users.tolist() if u not in negatives]
    if missing:
        raise KeyError(
            f"no negatives for user {data.users.ids[missing[0]]!r} (user_idx {missing[0]}); "
            f"{len(missing)} of {len(users)} evaluated users lack them"
        )
    ranks = np.empty(len(pairs), dtype=np.int64)
    sizes = np.empty(len(pairs), dtype=np.int64)
    starts = np.searchsorted(case_users, users)
    ends = np.searchsorted(case_users, users, side="right")
    with torch.no_grad():
        for first in tqdm(
            range(0, len(users), batch_size),
            desc=f"sampled ranking ({stage})",
            unit="batch",
            disable=not progress,
        ):
            batch = users[first : first + batch_size]
            scores = score_batch(model, data, stage, batch).detach().to("cpu", torch.float32)
            if torch.isnan(scores).any():
                raise ValueError("the model returned NaN scores")
            scores = scores.numpy()
            for row, user in enumerate(batch.tolist()):
                lo, hi = starts[first + row], ends[first + row]
                own = case_items[lo:hi]
                negs = np.asarray(negatives[user], dtype=np.int64).ravel()
                if len(negs) and (negs.min() < 0 or negs.max() >= data.num_items):
                    raise ValueError(
                        f"negatives of user {data.users.ids[user]!r} hold item rows outside "
                        f"0..{data.num_items - 1}"
                    )
                negs = negs[~np.isin(negs, own)]
                target_scores = scores[row, own]  # (T,)
                negative_scores = scores[row, negs]  # (N,)
                ranks[lo:hi] = 1 + (negative_scores[None, :] >= target_scores[:, None]).sum(axis=1)
                sizes[lo:hi] = 1 + len(negs)
    return SampledRanks(users=case_users, items=case_items, ranks=ranks, candidates=sizes)


def rank_hits(ranks: np.ndarray, k: int) -> np.ndarray:
    """(C, k) bool hit matrix with the single target at position rank - 1 (if within k)."""
    ranks = np.asarray(ranks, dtype=np.int64)
    return np.arange(1, k + 1)[None, :] == ranks[:, None]
