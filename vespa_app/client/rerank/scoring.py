"""Filtering, the candidate arrays, and the score rules (boosts, freshness, margin, fairness boost).

Score rules change an item's score; each is applied in turn and the ordering before and after it
is kept, so an explanation can say how far the rule moved the item in the candidate ordering.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

from vespa_app.client.rerank.candidates import Candidate, RerankInputError
from vespa_app.client.rerank.config import RerankRules

SECONDS_PER_DAY = 86_400.0


def filter_candidates(
    candidates: Sequence[Candidate], rules: RerankRules
) -> tuple[list[Candidate], dict[str, int]]:
    """The candidates that may be shown, in input order, and how many each filter removed.

    Also rejects duplicate product ids: stage 1 merges its sources before ranking, so a duplicate
    here is a bug upstream, and silently keeping one copy would hide it.
    """
    business = rules.business
    blocked_products = set(business.blocked_products)
    blocked_sellers = set(business.blocked_sellers)
    blocked_categories = set(business.blocked_categories)
    require_stock = rules.filter.require_in_stock
    removed = {"blocked_product": 0, "blocked_seller": 0, "blocked_category": 0, "out_of_stock": 0}
    kept: list[Candidate] = []
    seen: dict[str, int] = {}
    for index, c in enumerate(candidates):
        if c.product_id in seen:
            raise RerankInputError(
                f"candidate {index}: product_id {c.product_id!r} duplicates candidate "
                f"{seen[c.product_id]}"
            )
        seen[c.product_id] = index
        if c.product_id in blocked_products:
            removed["blocked_product"] += 1
        elif c.seller_id in blocked_sellers:
            removed["blocked_seller"] += 1
        elif blocked_categories and not blocked_categories.isdisjoint(c.category_path):
            removed["blocked_category"] += 1
        elif require_stock and not c.in_stock:
            removed["out_of_stock"] += 1
        else:
            kept.append(c)
    return kept, removed


@dataclasses.dataclass
class CandidateArrays:
    """Column view of the kept candidates (row i = kept[i])."""

    candidates: list[Candidate]
    seller: np.ndarray  # (n,) int seller code
    seller_ids: list[str]  # code -> seller_id
    path_index: np.ndarray  # (n,) row of the candidate's category path in `paths`
    paths: np.ndarray  # (P, L) distinct paths, one int code per level, -1 past the end
    path_len: np.ndarray  # (P,)
    margin: np.ndarray  # (n,)
    created_at: np.ndarray  # (n,) float, NaN when unknown
    retrieval: np.ndarray  # (n,)
    ranker: np.ndarray  # (n,), NaN when the ranker gave no score
    id_rank: np.ndarray  # (n,) rank of product_id in sorted order: the final tie-break
    embedding: np.ndarray | None  # (n, D) L2-normalised, None unless every candidate has one

    @property
    def size(self) -> int:
        return len(self.candidates)


def _seller_codes(kept: list[Candidate]) -> tuple[np.ndarray, list[str]]:
    """(n,) seller codes and code -> seller_id. Candidates without a seller (``""``: a review
    dataset's products without a brand, say) each get a code of their own: an unknown seller is
    not one big seller, so caps and diversity must not lump them together."""
    # A seller-less candidate's key is a fresh object, so it never meets another one.
    codes: dict[object, int] = {}
    seller = np.fromiter(
        (codes.setdefault(c.seller_id or object(), len(codes)) for c in kept), np.int64, len(kept)
    )
    return seller, [key if isinstance(key, str) else "" for key in codes]


def candidate_arrays(kept: list[Candidate]) -> CandidateArrays:
    n = len(kept)
    seller, seller_ids = _seller_codes(kept)
    # Paths repeat a lot (a few hundred leaf categories at most), so code each distinct path once.
    path_codes: dict[tuple[str, ...], int] = {}
    path_index = np.fromiter(
        (path_codes.setdefault(tuple(c.category_path), len(path_codes)) for c in kept), np.int64, n
    )
    width = max(max((len(p) for p in path_codes), default=0), 1)
    level_codes: dict[str, int] = {}
    unique = np.array(
        [
            [level_codes.setdefault(p, len(level_codes)) for p in path] + [-1] * (width - len(path))
            for path in path_codes
        ],
        dtype=np.int64,
    ).reshape(len(path_codes), width)
    nan = math.nan
    columns = np.array(
        [
            (
                c.margin,
                nan if c.created_at is None else c.created_at,
                c.retrieval_score,
                nan if c.ranker_score is None else c.ranker_score,
            )
            for c in kept
        ],
        dtype=np.float64,
    ).reshape(n, 4)
    margin, created, retrieval, ranker = (columns[:, j].copy() for j in range(4))
    for name, values in (("retrieval_score", retrieval), ("margin", margin)):
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            i = int(bad[0])
            raise RerankInputError(
                f"candidate {kept[i].product_id!r}: {name} must be finite, got {values[i]!r}"
            )
    bad = np.flatnonzero(np.isinf(ranker))
    if bad.size:
        i = int(bad[0])
        raise RerankInputError(f"candidate {kept[i].product_id!r}: ranker_score must be finite")
    ids = [c.product_id for c in kept]
    id_rank = np.empty(n, dtype=np.int64)
    id_rank[sorted(range(n), key=ids.__getitem__)] = np.arange(n)
    embedding = None
    if n and all(c.embedding is not None for c in kept):
        try:
            # float32 is enough for similarities and halves the per-slot matrix-vector cost.
            embedding = np.array([c.embedding for c in kept], dtype=np.float32)
        except ValueError as error:
            raise RerankInputError(f"candidate embeddings must share one size ({error})") from None
        if embedding.ndim != 2:
            raise RerankInputError("candidate embeddings must all be 1-d vectors of one size")
        norms = np.linalg.norm(embedding, axis=1, keepdims=True)
        embedding /= np.where(norms > 0, norms, 1.0)
    return CandidateArrays(
        candidates=kept,
        seller=seller,
        seller_ids=seller_ids,
        path_index=path_index,
        paths=unique,
        path_len=(unique >= 0).sum(axis=1),
        margin=margin,
        created_at=created,
        retrieval=retrieval,
        ranker=ranker,
        id_rank=id_rank,
        embedding=embedding,
    )


def base_scores(arrays: CandidateArrays, rules: RerankRules) -> tuple[np.ndarray, str]:
    """Stage score min-max normalised to [0, 1], and which stage it came from.

    Normalising puts rule weights on one scale whatever the ranker's logit range is; a list where
    every score is equal normalises to all ones.
    """
    use_ranker = rules.score.source == "ranker" and not np.isnan(arrays.ranker).any()
    raw = arrays.ranker if use_ranker else arrays.retrieval
    if raw.size == 0:
        return raw.copy(), "ranker" if use_ranker else "retrieval"
    low, high = raw.min(), raw.max()
    scores = (raw - low) / (high - low) if high > low else np.ones_like(raw)
    return scores, "ranker" if use_ranker else "retrieval"


@dataclasses.dataclass
class ScoreStep:
    """One score rule's effect: per-item score change and ranks (1-based) before and after."""

    rule: str
    delta: np.ndarray
    rank_before: np.ndarray
    rank_after: np.ndarray
    detail: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


def ordering(scores: np.ndarray, id_rank: np.ndarray) -> np.ndarray:
    """Indices best first; equal scores fall back to product_id order (deterministic)."""
    return np.lexsort((id_rank, -scores))


def ranks(scores: np.ndarray, id_rank: np.ndarray) -> np.ndarray:
    out = np.empty(scores.size, dtype=np.int64)
    out[ordering(scores, id_rank)] = np.arange(1, scores.size + 1)
    return out


def small_seller_mask(
    arrays: CandidateArrays, rules: RerankRules, seller_exposure: Mapping[str, float] | None
) -> np.ndarray | None:
    """Which candidates belong to small sellers, or None when no exposure data was given."""
    if seller_exposure is None:
        return None
    threshold = rules.fairness.exposure_threshold
    small_code = np.array(
        [seller_exposure.get(s, 0.0) < threshold for s in arrays.seller_ids], dtype=bool
    )
    return small_code[arrays.seller] if arrays.size else np.zeros(0, dtype=bool)


def apply_score_rules(
    arrays: CandidateArrays,
    scores: np.ndarray,
    rules: RerankRules,
    now: int,
    small: np.ndarray | None,
) -> tuple[np.ndarray, list[ScoreStep]]:
    """Final scores after boosts, freshness, margin weight and the small-seller boost, in order."""
    steps: list[ScoreStep] = []
    current = scores.copy()
    rank_now = ranks(current, arrays.id_rank)

    def step(rule: str, new: np.ndarray, detail: dict[str, np.ndarray] | None = None) -> None:
        nonlocal current, rank_now
        delta = new - current
        if not delta.any():
            return
        after = ranks(new, arrays.id_rank)
        steps.append(ScoreStep(rule, delta, rank_now, after, detail or {}))
        current, rank_now = new, after

    boosts = rules.business.boost
    if boosts and arrays.size:
        new = current.copy()
        detail: dict[str, np.ndarray] = {}
        for number, boost in enumerate(boosts):
            mask = _boost_mask(arrays, boost)
            if mask.any():
                new[mask] = new[mask] * boost.multiply + boost.add
                detail[f"{number}:{boost.target}"] = mask
        step("boost", new, detail)

    fresh = rules.freshness
    if fresh.weight and arrays.size:
        age_days = np.maximum(now - arrays.created_at, 0.0) / SECONDS_PER_DAY
        bonus = fresh.weight * np.exp2(-age_days / fresh.half_life_days)
        step("freshness", current + np.nan_to_num(bonus, nan=0.0))

    if rules.margin.weight and arrays.size:
        step("margin", current + rules.margin.weight * arrays.margin)

    if rules.fairness.boost and small is not None and small.any():
        step("fairness", current + rules.fairness.boost * small)
    return current, steps


def _boost_mask(arrays: CandidateArrays, boost) -> np.ndarray:
    if boost.product_id is not None:
        return np.array([c.product_id == boost.product_id for c in arrays.candidates], dtype=bool)
    if boost.seller_id is not None:
        return np.array([c.seller_id == boost.seller_id for c in arrays.candidates], dtype=bool)
    return np.array([boost.category in c.category_path for c in arrays.candidates], dtype=bool)
