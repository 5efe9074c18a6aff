"""The storefront's other rows, one Vespa query each (docs/pipeline.md "Rows and sellers"):
similar products, "because you bought X", trending in categories, new arrivals, and sellers to
follow by seller embedding. :class:`~vespa_app.client.pipeline.RecommendationPipeline` exposes
them with its configuration."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from vespa_app.client.queries import (
    eligibility,
    item,
    popularity_inputs,
    positive,
    under_any,
    vector,
)
from vespa_app.client.vespa import VespaClient

SELLER_PRODUCTS = 3  # products shown with each seller to follow


class ProductNotFound(LookupError):
    def __init__(self, product_id: str) -> None:
        self.product_id = product_id
        super().__init__(f"unknown product {product_id!r}")


class CatalogRows:
    """Stateless over a shared client, so thread-safe."""

    def __init__(
        self,
        vespa: VespaClient,
        retrieval_profile: str = "retrieval",
        popularity_profile: str = "context_popularity",
        follow_profile: str = "follow",
        max_hits: int = 500,
    ) -> None:
        self.vespa = vespa
        self.retrieval_profile = retrieval_profile
        self.popularity_profile = popularity_profile
        self.follow_profile = follow_profile
        self.max_hits = max_hits

    def product(self, product_id: str) -> dict[str, Any]:
        doc = self.vespa.get_document("product", product_id)
        if doc is None:
            raise ProductNotFound(product_id)
        return doc

    def nearest(
        self, embedding: list[float], exclude: Iterable[str], hits_wanted: int, what: str
    ) -> list[dict[str, Any]]:
        """In-stock products nearest to ``embedding`` by closeness (the retrieval profile orders
        by closeness + freshness + popularity, so every NN match is fetched and sorted here)."""
        exclude = sorted(set(exclude))
        hits_wanted = min(hits_wanted, self.max_hits)
        nn = f"({{targetHits:{hits_wanted}}}nearestNeighbor(embedding, q_user))"
        where = f"{nn} and in_stock = true"
        body: dict[str, Any] = {
            "input.query(q_user)": embedding,
            "ranking.profile": self.retrieval_profile,
            "hits": hits_wanted,
        }
        if exclude:
            where += " and !(product_id in (@exclude))"
            body["exclude"] = ",".join(exclude)
        body["yql"] = f"select * from product where {where}"
        out = [
            item(hit, "closeness", (hit["fields"].get("matchfeatures") or {}).get("ann"))
            for hit in self.vespa.hits(self.vespa.search(body, what=what))
        ]
        out.sort(key=lambda row: (-(row["closeness"] or 0.0), row["product_id"]))
        return out

    def similar(self, product_id: str, k: int = 20) -> list[dict[str, Any]]:
        """Nearest in-stock products to the product's own embedding, itself excluded."""
        k = min(positive("k", k), self.max_hits)
        embedding = vector(self.product(product_id).get("embedding"))
        if embedding is None:
            return []
        return self.nearest(embedding, {product_id}, max(k, 100), "similar products")[:k]

    def because_you_bought(
        self, anchors: Sequence[str], exclude: Iterable[str], rows: int, k: int
    ) -> list[dict[str, Any]]:
        """One row per anchor (in order, at most ``rows``): ``{anchor: the product, items: the k
        in-stock products nearest to its embedding}``, ``exclude`` and earlier rows' items left
        out. Anchors without an embedding or without neighbours give no row."""
        rows, k = positive("rows", rows), positive("k", k)
        exclude = set(exclude) | set(anchors)
        out: list[dict[str, Any]] = []
        for anchor_id in anchors:
            if len(out) == rows:
                break
            doc = self.vespa.get_document("product", anchor_id)
            embedding = vector((doc or {}).get("embedding"))
            if embedding is None:
                continue
            items = self.nearest(embedding, exclude, max(k * 3, 50), "because you bought")[:k]
            if not items:
                continue
            exclude.update(row["product_id"] for row in items)
            out.append({"anchor": item({"fields": doc}), "items": items})
        return out

    def trending(
        self,
        categories: Sequence[str],
        k: int,
        hour: int | None = None,
        device: str | None = None,
        exclude: Iterable[str] = (),
        excluded_categories: Sequence[str] = (),
    ) -> list[dict[str, Any]]:
        """The most popular in-stock products under any of ``categories`` (all when empty) in
        the context (device, daypart) when given: profile ``context_popularity``."""
        k = min(positive("k", k), self.max_hits)
        filters, params = eligibility(exclude, excluded_categories)
        body = {
            "yql": f"select * from product where {filters}{under_any(categories)}",
            "hits": k,
            **popularity_inputs(self.popularity_profile, hour, device),
            **params,
        }
        return [
            item(hit, "popularity_score", hit.get("relevance"))
            for hit in self.vespa.hits(self.vespa.search(body, what="trending"))
        ]

    def new_arrivals(self, k: int = 20, categories: Sequence[str] = ()) -> list[dict[str, Any]]:
        """The newest in-stock products (``created_at`` descending), under any of
        ``categories`` when given."""
        k = min(positive("k", k), self.max_hits)
        body = {
            "yql": f"select * from product where in_stock = true{under_any(categories)} "
            "order by created_at desc",
            "ranking.profile": "default",
            "hits": k,
        }
        return [
            item(hit, "created_at", hit["fields"].get("created_at"))
            for hit in self.vespa.hits(self.vespa.search(body, what="new arrivals"))
        ]

    def sellers_to_follow(self, embedding: list[float], k: int) -> list[dict[str, Any]]:
        """The ``k`` unblocked sellers whose embedding is closest to ``embedding`` (score =
        closeness), each with its products nearest to it; [] when no seller has an embedding."""
        nn = f"({{targetHits:{k}}}nearestNeighbor(embedding, q_user))"
        body = {
            "yql": f"select * from seller where {nn} and !(is_blocked = true)",
            "input.query(q_user)": embedding,
            "ranking.profile": self.follow_profile,
            "hits": k,
        }
        hits = self.vespa.hits(self.vespa.search(body, what="sellers to follow"))
        if not hits:
            return []
        sellers = [str(h["fields"]["seller_id"]) for h in hits]
        # Each seller's products nearest to the user: one query over all of them.
        wanted = min(SELLER_PRODUCTS * len(sellers) * 4, self.max_hits)
        nn = f"({{targetHits:{wanted}}}nearestNeighbor(embedding, q_user))"
        body = {
            "yql": f"select * from product where {nn} and in_stock = true "
            "and seller_id in (@sellers)",
            "sellers": ",".join(sellers),
            "input.query(q_user)": embedding,
            "ranking.profile": self.retrieval_profile,
            "hits": wanted,
        }
        products: dict[str, list[tuple[float, str]]] = {s: [] for s in sellers}
        for hit in self.vespa.hits(self.vespa.search(body, what="sellers' products")):
            f = hit["fields"]
            ann = float((f.get("matchfeatures") or {}).get("ann", 0.0))
            products.setdefault(str(f.get("seller_id")), []).append((-ann, str(f["product_id"])))
        return [
            {
                "seller_id": seller,
                "score": round(float(hit.get("relevance", 0.0)), 6),
                "rating": hit["fields"].get("rating"),
                "promoted": bool(hit["fields"].get("promoted", False)),
                "products": [p for _, p in sorted(products[seller])[:SELLER_PRODUCTS]],
            }
            for seller, hit in zip(sellers, hits, strict=True)
        ]
