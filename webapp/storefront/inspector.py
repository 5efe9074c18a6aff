"""The inspector: for one home-page row, what each stage produced, side by side.

"for you" runs the pipeline with ``inspect=True``: candidates (stage 1, ANN + graph walk or cold
start), ranked (stage 2, the ONNX ranker in the global phase) and re-ranked (stage 3, the rules),
with each stage's latency. The other rows are single queries; the inspector shows what came back
and the scores it was ordered by, and says that there is one stage.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from vespa_app.client.pipeline import RecommendationPipeline
from webapp.events import EventStore
from webapp.storefront import rows as row_builders
from webapp.storefront.queries import StoreQueries
from webapp.storefront.rows import Row, Shopper

STAGES = ("candidates", "ranked", "reranked")
STAGE_TITLES = {
    "candidates": "1. Candidates",
    "ranked": "2. Ranked",
    "reranked": "3. Re-ranked",
    "result": "Result",
}
COLUMNS = ("retrieval_score", "ranker_score", "final_score")


@dataclass
class Inspection:
    row: str
    title: str
    how: str
    strategy: str | None
    degraded: str | None
    stages: dict[str, list[dict[str, Any]]]  # in display order
    stage_counts: dict[str, int]
    latency_ms: dict[str, float]
    summary: dict[str, Any] = field(default_factory=dict)


def inspect_row(
    pipeline: RecommendationPipeline,
    store: EventStore,
    queries: StoreQueries,
    who: Shopper,
    row: str,
    k: int,
    show: int = 30,
) -> Inspection:
    """``show``: rows shown of the candidates and ranked stages (the counts say how many)."""
    if row == "for-you":
        return _pipeline_row(pipeline, store, queries, who, k, show)
    start = time.perf_counter()
    history_cards = queries.cards(who.recent[:20])
    categories = row_builders.user_categories(who, history_cards)
    if row == "because":
        built = row_builders.because_you_bought(pipeline, who, 1, k)
        if not built:
            built = [Row("because", "Because you bought", "You have bought nothing yet.", [])]
        one = built[0]
    elif row == "trending":
        one = row_builders.trending(pipeline, who, categories, k)
    else:
        one = row_builders.new_arrivals(pipeline, who, categories, k)
    row_builders.complete(queries, [one])
    total = round((time.perf_counter() - start) * 1000, 3)
    items = [_stage_item(item, position) for position, item in enumerate(one.items, 1)]
    return Inspection(
        row=row,
        title=one.title,
        how=one.how + " One query: there are no separate ranking and re-ranking stages.",
        strategy=None,
        degraded=None,
        stages={"result": items},
        stage_counts={"result": len(items)},
        latency_ms={"row": one.latency_ms, "total": total},
    )


def _pipeline_row(
    pipeline: RecommendationPipeline,
    store: EventStore,
    queries: StoreQueries,
    who: Shopper,
    k: int,
    show: int,
) -> Inspection:
    result = pipeline.recommend(who.user_id, k, who.context, store.seller_exposure(), inspect=True)
    raw = getattr(result, "stages", None) or {}
    stages = {name: [dict(item) for item in (raw.get(name) or [])[:show]] for name in STAGES}
    shown = [item for items in stages.values() for item in items]
    cards = queries.cards(item["product_id"] for item in shown)
    for name in STAGES:
        stages[name] = [
            _stage_item({**cards.get(item["product_id"], {}), **item}, position)
            for position, item in enumerate(stages[name], 1)
        ]
    counts = dict(getattr(result, "stage_counts", None) or {})
    for name in STAGES:
        counts.setdefault(name, len(stages[name]))
    how = (
        "Cold start: popularity in your context mixed with browsed categories, then the rules."
        if result.strategy == "cold_start"
        else "Stage 1 nearest neighbours of your embedding (and graph-walk candidates), stage 2 "
        "the ONNX ranker in Vespa's global phase, stage 3 the re-ranking rules."
    )
    return Inspection(
        row="for-you",
        title=row_builders.ROW_TITLES["for-you"],
        how=how,
        strategy=result.strategy,
        degraded=result.degraded,
        stages=stages,
        stage_counts=counts,
        latency_ms=dict(result.latency_ms),
        summary=dict(result.summary),
    )


def _stage_item(item: dict[str, Any], position: int) -> dict[str, Any]:
    """One table row: position, ids, title, source, the three scores, the rules that moved it."""
    explanation = item.get("explanation") or {}
    scores = explanation.get("scores") or {}
    moved = item.get("moved_by")
    if moved is None:
        moved = [r.get("rule") for r in explanation.get("rules") or []]
    return {
        "position": item.get("position", position),
        "product_id": item["product_id"],
        "title": item.get("title"),
        "seller_id": item.get("seller_id"),
        "source": item.get("source") or explanation.get("source"),
        "retrieval_score": _first(item, scores, "retrieval_score", "retrieval", "closeness"),
        "walk_score": _first(item, scores, "walk_score", "walk"),
        "ranker_score": _first(item, scores, "ranker_score", "ranker"),
        "final_score": _first(item, scores, "final_score", "final", "relevance"),
        "moved_by": sorted(set(m for m in moved if m)),
    }


def _first(item: dict[str, Any], scores: dict[str, Any], *names: str) -> float | None:
    """The first of ``names`` that the stage row or its explanation scores carry. A name that is
    present but null ends the search: a pipeline stage without that score must not show a
    product card's unrelated ``relevance`` instead."""
    for name in names:
        for source in (item, scores):
            if name not in source:
                continue
            value = source[name]
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
            return None
    return None
