"""The home page's rows and the inspector's stages, built from the pipeline (docs/pipeline.md).

Rows: "for you" (the three-stage pipeline, or cold start), "because you bought X" (neighbours of
the newest purchases), "trending in your categories" (popularity in the shopper's categories,
in the request's context) and "new arrivals". Items from every row get their titles and prices
from one batched card query, so a home page costs a fixed number of Vespa requests.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vespa_app.client.pipeline import RecommendationContext, RecommendationPipeline
from webapp.events import EventStore
from webapp.storefront.queries import StoreQueries, vector

ROWS = ("for-you", "because", "trending", "new")
ROW_TITLES = {
    "for-you": "Recommended for you",
    "because": "Because you bought",
    "trending": "Trending in your categories",
    "new": "New arrivals",
}
USER_CATEGORIES = 3  # categories of the shopper's history that "trending" looks in


@dataclass
class Row:
    key: str  # one of ROWS
    title: str
    how: str  # one sentence: where the row comes from (shown under the title)
    items: list[dict[str, Any]]
    anchor: dict[str, Any] | None = None  # "because you bought": the purchased product
    latency_ms: float = 0.0
    categories: list[str] = field(default_factory=list)  # where trending / new arrivals looked


@dataclass
class Shopper:
    """What the storefront knows about the current shopper for one request."""

    user_id: str
    context: RecommendationContext
    document: dict[str, Any] = field(default_factory=dict)  # the Vespa user document

    @property
    def embedding(self) -> list[float] | None:
        return vector(self.document.get("embedding"))

    @property
    def recent(self) -> list[str]:
        return [str(p) for p in self.document.get("recent_product_ids") or []]


def shopper(
    pipeline: RecommendationPipeline,
    store: EventStore,
    user_id: str,
    context: RecommendationContext,
) -> Shopper:
    document = pipeline.vespa.get_document("user", user_id) or {}
    # Purchases in the event log, newest first, as the JSON API passes them (excluded unless
    # consumable; the first ones anchor the "because you bought" rows).
    purchased = tuple(store.purchased(user_id))
    return Shopper(user_id, dataclasses.replace(context, purchased_product_ids=purchased), document)


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


def for_you(
    pipeline: RecommendationPipeline, store: EventStore, who: Shopper, k: int
) -> tuple[Row, Any]:
    start = time.perf_counter()
    result = pipeline.recommend(who.user_id, k, who.context, store.seller_exposure())
    cold = result.strategy == "cold_start"
    how = (
        "Cold start: popular products in your context, mixed with the categories you browsed."
        if cold
        else "Retrieved by your embedding, ranked by the ONNX ranker, re-ranked for diversity."
    )
    if result.degraded:
        how += f" Degraded: {result.degraded}."
    title = "Popular right now" if cold else ROW_TITLES["for-you"]
    return Row("for-you", title, how, list(result.items), latency_ms=_ms(start)), result


def because_you_bought(
    pipeline: RecommendationPipeline, who: Shopper, rows: int, k: int
) -> list[Row]:
    start = time.perf_counter()
    groups = pipeline.because_you_bought(who.user_id, rows=rows, k=k, context=who.context)
    out = []
    for group in groups:
        anchor = group["anchor"]
        name = anchor.get("title") or anchor["product_id"]
        out.append(
            Row(
                "because",
                f"Because you bought {name}",
                "Nearest products to what you bought (its embedding), purchases left out.",
                list(group["items"]),
                anchor=anchor,
            )
        )
    for row in out:
        row.latency_ms = _ms(start)
    return out


def user_categories(
    who: Shopper, cards: dict[str, dict[str, Any]], limit: int = USER_CATEGORIES
) -> list[str]:
    """The shopper's categories, most frequent first: the second level of the category path
    (root when the path is short) of their recent products, then what they just browsed."""
    counts: Counter[str] = Counter()
    for product_id in who.recent[:20]:
        path = (cards.get(product_id) or {}).get("category_path") or []
        if path:
            counts[path[min(1, len(path) - 1)]] += 1
    ordered = [c for c, _ in sorted(counts.items(), key=lambda t: (-t[1], t[0]))]
    for category in who.context.browsed_categories:
        if category not in ordered:
            ordered.append(category)
    return ordered[:limit]


def trending(
    pipeline: RecommendationPipeline, who: Shopper, categories: Sequence[str], k: int
) -> Row:
    start = time.perf_counter()
    items = pipeline.trending(list(categories), k, who.context)
    return Row(
        "trending",
        ROW_TITLES["trending"] if categories else "Trending now",
        "Most popular at your time of day and on your device"
        + ("." if categories else ", across the whole shop."),
        _not_bought(items, who),
        latency_ms=_ms(start),
        categories=list(categories),
    )


def new_arrivals(
    pipeline: RecommendationPipeline, who: Shopper, categories: Sequence[str], k: int
) -> Row:
    start = time.perf_counter()
    items = pipeline.new_arrivals(k, categories=tuple(categories))
    return Row(
        "new",
        ROW_TITLES["new"],
        "The newest in-stock listings.",
        _not_bought(items, who),
        latency_ms=_ms(start),
        categories=list(categories),
    )


def _not_bought(items: Sequence[dict[str, Any]], who: Shopper) -> list[dict[str, Any]]:
    """Rows outside the pipeline leave out what the shopper bought, unless it is consumable."""
    bought = set(who.context.purchased_product_ids) | set(
        who.document.get("recent_purchases") or []
    )
    return [dict(i) for i in items if i["product_id"] not in bought or i.get("consumable")]


def home(
    pipeline: RecommendationPipeline,
    store: EventStore,
    queries: StoreQueries,
    who: Shopper,
    k: int,
    because_rows: int = 1,
) -> tuple[list[Row], dict[str, dict[str, Any]]]:
    """The four rows (more when several purchases anchor "because you bought") and the cards
    of every product they show or explain with (recent history), keyed by product_id."""
    history_cards = queries.cards(who.recent[:20])
    categories = user_categories(who, history_cards)
    rows = [for_you(pipeline, store, who, k)[0]]
    rows += because_you_bought(pipeline, who, because_rows, k)
    rows.append(trending(pipeline, who, categories, k))
    rows.append(new_arrivals(pipeline, who, categories, k))
    return rows, {**history_cards, **complete(queries, rows)}


def complete(queries: StoreQueries, rows: Sequence[Row]) -> dict[str, dict[str, Any]]:
    """Cards (title, price, stock...) for every item of the rows, one Vespa query; the row's own
    fields (explanation, scores) win where both have a value."""
    ids = [item["product_id"] for row in rows for item in row.items]
    ids += [row.anchor["product_id"] for row in rows if row.anchor]
    cards = queries.cards(ids)
    for row in rows:
        for item in row.items:
            base = cards.get(item["product_id"], {})
            for name, value in base.items():
                if item.get(name) is None:
                    item[name] = value
    return cards


def why(item: dict[str, Any], titles: dict[str, str]) -> list[str]:
    """The "why this?" sentences for one card, from the pipeline's explanation."""
    explanation = item.get("explanation")
    if not explanation:
        return []
    out = []
    source = explanation.get("source")
    sources = {
        "ann": "close to your taste (embedding retrieval)",
        "walk": "often bought by shoppers with your history (graph walk)",
        "popularity": "popular right now",
    }
    if isinstance(source, str):
        parts = [
            sources.get(s, f"popular in {s.split(':', 1)[1]}, which you browsed")
            if s.startswith("browsed:")
            else sources.get(s, s)
            for s in source.replace("+", ",").split(",")
            if s
        ]
        out.append("Found because it is " + " and ".join(parts) + ".")
    scores = explanation.get("scores") or {}
    shown = ", ".join(
        f"{name} {value:.3f}" for name, value in scores.items() if isinstance(value, int | float)
    )
    if shown:
        out.append(f"Scores: {shown}.")
    support = explanation.get("supported_by")
    if support:
        name = titles.get(support["product_id"], support["product_id"])
        reason = (
            "similar to"
            if support.get("reason") == "embedding_similarity"
            else "in the same category as"
        )
        out.append(f"It is {reason} {name}, which you interacted with.")
    for rule in explanation.get("rules") or []:
        text = f"Rule {rule.get('rule')}: {rule.get('effect', 'moved')}"
        if "from" in rule and "to" in rule:
            text += f" from {rule['from']} to {rule['to']}"
        out.append(text + ".")
    return out
