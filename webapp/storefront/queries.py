"""The storefront's own Vespa queries: product cards by id, text and hybrid search, category and
seller listings. Recommendation rows come from the pipeline (vespa_app/client/pipeline.py).

Every query is a dict serialised by the client (never YQL built from unchecked text): user text
goes in the ``query`` parameter read by ``userQuery()``, ids are checked by the views
(:func:`webapp.storefront.params.identifier`) and quoted as JSON string literals here.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from vespa_app.client.vespa import VespaClient

SEARCH_MODES = ("text", "hybrid")
HYBRID_TARGET_HITS = 100  # nearestNeighbor targetHits in hybrid search
HYBRID_SEEDS = 3  # top text hits whose embeddings make the hybrid query vector
MAX_HITS = 400  # at most the package's maxHits
WORD = re.compile(r"[^\W_]+")  # runs of letters and digits (Unicode)


def quote(value: str) -> str:
    return json.dumps(value)  # a YQL string literal: double quotes, escaped


@dataclass(frozen=True)
class Listing:
    """One page of products and how many matched in all."""

    items: list[dict[str, Any]]
    total: int
    query: dict[str, Any]  # what was sent (shown by the inspector, minus vectors)


def card(hit: dict[str, Any]) -> dict[str, Any]:
    """A product card from a search hit: the summary fields plus relevance and match-features."""
    f = hit.get("fields", {})
    return {
        "product_id": str(f.get("product_id", "")),
        "title": f.get("title"),
        "description": f.get("description"),
        "seller_id": f.get("seller_id"),
        "category_path": list(f.get("category_path") or []),
        "price": f.get("price"),
        "in_stock": bool(f.get("in_stock", True)),
        "created_at": f.get("created_at"),
        "popularity": f.get("popularity"),
        "relevance": hit.get("relevance"),
        "features": f.get("matchfeatures") or {},
    }


def _total(payload: dict[str, Any]) -> int:
    return int((payload.get("root", {}).get("fields") or {}).get("totalCount", 0))


def _shown(body: dict[str, Any]) -> dict[str, Any]:
    """The query as the inspector shows it: vectors abbreviated."""
    return {
        k: (f"[{len(v)} floats]" if isinstance(v, list) and len(v) > 8 else v)
        for k, v in body.items()
    }


def normalized_mean(vectors: Sequence[Sequence[float]]) -> list[float] | None:
    vectors = [v for v in vectors if v]
    if not vectors:
        return None
    width = len(vectors[0])
    total = [sum(v[i] for v in vectors if len(v) == width) for i in range(width)]
    norm = math.sqrt(sum(x * x for x in total))
    return [x / norm for x in total] if norm > 0 else None


def vector(value: Any) -> list[float] | None:
    """A stored tensor as the document API returns it ({"values": [...]} or a plain list)."""
    if isinstance(value, dict):
        value = value.get("values")
    if isinstance(value, list) and value and all(isinstance(x, int | float) for x in value):
        return [float(x) for x in value]
    return None


class StoreQueries:
    def __init__(self, vespa: VespaClient) -> None:
        self.vespa = vespa

    def cards(self, product_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """product_id -> card for every id Vespa has (one query, at most ``MAX_HITS`` ids)."""
        ids = list(dict.fromkeys(p for p in product_ids if p))[:MAX_HITS]
        if not ids:
            return {}
        body = {
            "yql": "select * from product where product_id in (@ids)",
            "ids": ",".join(ids),
            "hits": len(ids),
        }
        hits = self.vespa.hits(self.vespa.search(body, what="product cards"))
        return {c["product_id"]: c for c in map(card, hits)}

    def search(
        self,
        text: str,
        mode: str = "text",
        hits: int = 24,
        offset: int = 0,
        user_embedding: list[float] | None = None,
    ) -> Listing:
        """``text``: BM25 over title and description (profile ``text``, ``userQuery()`` over the
        ``default`` fieldset). ``hybrid``: the same text matches OR the nearest neighbours of a
        query vector, ranked by profile ``hybrid`` (closeness + BM25). No text encoder is served,
        so the vector is the normalised mean of the top text hits' embeddings (pseudo-relevance
        feedback) plus the shopper's own embedding when there is one."""
        if mode not in SEARCH_MODES:
            raise ValueError(f"mode must be one of {', '.join(SEARCH_MODES)}, got {mode!r}")
        # The index splits text at every character that is not a letter or digit, so only the
        # words matter; sending just them keeps Vespa's query syntax (+, -, quotes) out of it.
        words = " ".join(WORD.findall(text))
        if not words:
            return Listing([], 0, {"query": text, "note": "no letters or digits to search for"})
        body: dict[str, Any] = {
            "yql": "select * from product where userQuery()",
            "query": words,
            "ranking.profile": "text",
            "hits": hits,
            "offset": offset,
        }
        payload = self.vespa.search(body, what="text search")
        if mode == "text":
            items = [card(h) for h in self.vespa.hits(payload)]
            return Listing(items, _total(payload), _shown(body))
        seeds = [card(h)["product_id"] for h in self.vespa.hits(payload)[:HYBRID_SEEDS]]
        vectors = []
        for product_id in seeds:
            doc = self.vespa.get_document("product", product_id) or {}
            vectors.append(vector(doc.get("embedding")))
        query_vector = normalized_mean([v for v in vectors if v])
        if query_vector is not None and user_embedding:
            query_vector = normalized_mean([query_vector, user_embedding])
        elif query_vector is None:
            query_vector = user_embedding
        if query_vector is None:  # no text match and no shopper vector: text results stand
            items = [card(h) for h in self.vespa.hits(payload)]
            return Listing(items, _total(payload), _shown(body))
        nn = f"({{targetHits:{HYBRID_TARGET_HITS}}}nearestNeighbor(embedding, q_user))"
        hybrid = {
            "yql": f"select * from product where userQuery() or {nn}",
            "query": words,
            "input.query(q_user)": query_vector,
            "ranking.profile": "hybrid",
            "hits": hits,
            "offset": offset,
        }
        payload = self.vespa.search(hybrid, what="hybrid search")
        items = [card(h) for h in self.vespa.hits(payload)]
        return Listing(items, _total(payload), _shown(hybrid))

    def in_category(self, category_id: str, hits: int = 24, offset: int = 0) -> Listing:
        """Products under a category (``category_path`` holds every ancestor), most popular
        first."""
        body = {
            "yql": f"select * from product where category_path contains {quote(category_id)}",
            "ranking.profile": "default",
            "hits": hits,
            "offset": offset,
        }
        payload = self.vespa.search(body, what="category listing")
        return Listing([card(h) for h in self.vespa.hits(payload)], _total(payload), body)

    def by_seller(self, seller_id: str, hits: int = 24, offset: int = 0) -> Listing:
        body = {
            "yql": f"select * from product where seller_id contains {quote(seller_id)}",
            "ranking.profile": "default",
            "hits": hits,
            "offset": offset,
        }
        payload = self.vespa.search(body, what="seller listing")
        return Listing([card(h) for h in self.vespa.hits(payload)], _total(payload), body)
