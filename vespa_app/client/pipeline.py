"""The three-stage recommendation pipeline over Vespa (or the embedded engine), docs/pipeline.md.

1. candidates: ``nearestNeighbor`` over product embeddings with the user's embedding
   (``targetHits`` up to 10,000), hard eligibility in YQL (in stock, excluded categories,
   ``!(product_id in (@seen))``);
2. ranking: the ``ranking`` profile's global-phase (history encoder + ranker ONNX) over the top
   ``rerank_count`` of them, in the same Vespa query (``query(q_user)``, ``query(hist)``,
   ``query(ctx)``, ``query(retrieval_weight)``: W of a residual ranker, docs/ranker.md), returning
   ``rank_hits`` (the package's maxHits, 400);
3. re-ranking: :class:`~vespa_app.client.rerank.Reranker` (diversity, freshness, fairness,
   business rules) to the top ``k``, with explanations.

A ranking failure (Vespa error or timeout) degrades to a retrieval-profile query and retrieval
order, reported in ``degraded``; only a Vespa that answers nothing at all raises. Users unknown
to Vespa, without an embedding, or with fewer than ``cold_start_min_interactions`` recent
interactions get the cold-start list: popularity (profile ``default``) interleaved with the
categories the shopper just browsed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from model_export.query import HISTORY_LENGTH, ranking_inputs
from vespa_app.client.context import context_vector
from vespa_app.client.rerank import Candidate, HistoryItem, RequestContext, Reranker
from vespa_app.client.vespa import VespaClient, VespaError

RECENT = 50  # recent_product_ids / recent_item_idx kept in the user document (model_export.feed)
RETRIEVAL_WEIGHT_QUERY = "input.query(retrieval_weight)"


class ProductNotFound(LookupError):
    def __init__(self, product_id: str) -> None:
        self.product_id = product_id
        super().__init__(f"unknown product {product_id!r}")


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    target_hits: int = 10_000  # stage 1 nearestNeighbor targetHits
    rank_hits: int = 400  # stage 2 hits returned; the package's query profile caps hits at 400
    rerank_count: int = 400  # ranking.globalPhase.rerankCount (profile default 200)
    retrieval_profile: str = "retrieval"
    ranking_profile: str = "ranking"
    popularity_profile: str = "default"
    cold_start_min_interactions: int = 3
    cold_start_hits: int = 200
    excluded_categories: tuple[str, ...] = ()  # always excluded, on top of the request's
    # The product schema has no consumable flag, so every product in the user's recent
    # positive history (clicks, favourites, carts, purchases: the newest 50) is excluded, which
    # covers every recent purchase, consumables included. False: only the caller's list.
    exclude_recent_history: bool = True
    locations: tuple[str, ...] = ()  # the training data's sorted location names (ctx codes)
    explain_history: bool = True  # fetch history items' categories for "supported_by"
    # W of a residual ranker (score = scorer + W * cos(user, candidate)), sent as
    # input.query(retrieval_weight); the export manifest's ranker.retrieval_weight
    # (load_retrieval_weight). 0: a ranker without the residual term.
    retrieval_weight: float = 0.0

    def __post_init__(self) -> None:
        for name in ("target_hits", "rank_hits", "rerank_count", "cold_start_hits"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"PipelineConfig.{name} must be a positive integer, got {value!r}")
        w = self.retrieval_weight
        if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w):
            raise ValueError(f"PipelineConfig.retrieval_weight must be a finite number, got {w!r}")


@dataclasses.dataclass(frozen=True)
class RecommendationContext:
    """What the request knows besides the user: context features, browsing, extra filters."""

    hour: int | None = None
    device: str | None = None
    location: str | None = None
    browsed_categories: tuple[str, ...] = ()  # newest first; feeds the cold-start mix
    excluded_categories: tuple[str, ...] = ()
    exclude_product_ids: tuple[str, ...] = ()  # e.g. purchases from the event store
    now: int | None = None  # epoch seconds; default: the clock


@dataclasses.dataclass
class RecommendationResult:
    user_id: str
    strategy: str  # "personalized" or "cold_start"
    items: list[dict[str, Any]]
    degraded: str | None
    latency_ms: dict[str, float]
    summary: dict[str, Any]

    @property
    def product_ids(self) -> list[str]:
        return [item["product_id"] for item in self.items]

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "strategy": self.strategy,
            "degraded": self.degraded,
            "items": self.items,
            "latency_ms": self.latency_ms,
            "summary": self.summary,
        }


def load_item_index(export_dir: Path | str) -> dict[str, int]:
    """product_id -> item_idx (row of the export's product_ids.json, as the feeder wrote it)."""
    path = Path(export_dir) / "product_ids.json"
    ids = json.loads(path.read_text())
    if not isinstance(ids, list) or not all(isinstance(p, str) for p in ids):
        raise ValueError(f"{path}: expected a JSON list of product ids")
    return {product_id: idx for idx, product_id in enumerate(ids)}


def load_retrieval_weight(export_dir: Path | str) -> float:
    """W of the export's residual ranker (manifest.json ``ranker.retrieval_weight``); 0.0 when
    the export has no ranker or a ranker without the residual term."""
    path = Path(export_dir) / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{error.lineno}: invalid JSON: {error.msg}") from None
    ranker = manifest.get("ranker") or {}
    value = ranker.get("retrieval_weight", 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{path}: ranker.retrieval_weight must be a finite number, got {value!r}")
    return float(value)


def _quote(value: str) -> str:
    return json.dumps(value)  # a YQL string literal: double quotes, escaped


def _vector(value: Any) -> list[float] | None:
    """A stored tensor as the document API returns it ({"values": [...]} or a plain list)."""
    if isinstance(value, dict):
        value = value.get("values")
    if isinstance(value, list) and value and all(isinstance(x, int | float) for x in value):
        return [float(x) for x in value]
    return None


class _Timer:
    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.last = self.start
        self.ms: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.ms[name] = round((now - self.last) * 1000, 3)
        self.last = now

    def total(self) -> dict[str, float]:
        self.ms["total"] = round((time.perf_counter() - self.start) * 1000, 3)
        return self.ms


class RecommendationPipeline:
    """Thread-safe: the client, the re-ranker and the config are shared, state is per call."""

    def __init__(
        self,
        vespa: VespaClient,
        reranker: Reranker | None = None,
        config: PipelineConfig | None = None,
        item_index: Mapping[str, int] | None = None,
    ) -> None:
        self.vespa = vespa
        self.reranker = reranker if reranker is not None else Reranker()
        self.config = config if config is not None else PipelineConfig()
        self.item_index = dict(item_index or {})
        self._user_locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # ----- recommendations ---------------------------------------------------------------------

    def recommend(
        self,
        user_id: str,
        k: int = 50,
        context: RecommendationContext | None = None,
        seller_exposure: Mapping[str, float] | None = None,
    ) -> RecommendationResult:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        context = context or RecommendationContext()
        now = context.now if context.now is not None else int(time.time())
        timer = _Timer()
        user = self.vespa.get_document("user", user_id) or {}
        timer.lap("user_lookup")
        recent_ids = [str(p) for p in user.get("recent_product_ids") or []]
        recent_idx = [int(i) for i in user.get("recent_item_idx") or []]
        seen = set(context.exclude_product_ids)
        if self.config.exclude_recent_history:
            seen.update(recent_ids)
        excluded = tuple(
            dict.fromkeys(self.config.excluded_categories + context.excluded_categories)
        )
        embedding = _vector(user.get("embedding"))
        cold = embedding is None or len(recent_ids) < self.config.cold_start_min_interactions

        degraded = None
        if cold:
            strategy = "cold_start"
            candidates = self._cold_start(context.browsed_categories, seen, excluded)
            timer.lap("retrieve")
        else:
            strategy = "personalized"
            updated = user.get("updated_at")
            gap = now - int(updated) if isinstance(updated, int) else None
            ctx = context_vector(
                context.hour, context.device, context.location, gap, self.config.locations
            )
            candidates, degraded, timing = self._retrieve_and_rank(
                embedding, recent_idx, ctx.tolist(), seen, excluded
            )
            timer.lap("retrieve_and_rank")
            if timing:
                timer.ms["vespa_querytime"] = round(float(timing.get("querytime", 0)) * 1000, 3)
        history = self._history(recent_ids) if self.config.explain_history else ()
        timer.lap("history")
        request = RequestContext(
            user_id=user_id,
            now=now,
            k=k,
            history=history,
            device=context.device,
            hour=context.hour,
            location=context.location,
        )
        result = self.reranker.rerank(candidates, request, seller_exposure)
        timer.lap("rerank")
        details = {c.product_id: c for c in candidates}
        items = []
        for entry in result.to_dict()["items"]:
            c = details[entry["product_id"]]
            entry["category_path"] = list(c.category_path)
            entry["price"] = c.price
            items.append(entry)
        summary = dict(result.summary)
        summary["excluded_products"] = len(seen)
        summary["excluded_categories"] = list(excluded)
        return RecommendationResult(
            user_id, strategy, items, degraded, timer.total(), _jsonable(summary)
        )

    def _filters(self, seen: Iterable[str], excluded: Sequence[str]) -> tuple[str, dict[str, str]]:
        clauses = ["in_stock = true"]
        params: dict[str, str] = {}
        seen = sorted(seen)
        if seen:
            clauses.append("!(product_id in (@seen))")
            params["seen"] = ",".join(seen)
        clauses += [f"!(category_path contains {_quote(c)})" for c in excluded]
        return " and ".join(clauses), params

    def _retrieve_and_rank(
        self,
        embedding: list[float],
        recent_idx: list[int],
        ctx: list[float],
        seen: set[str],
        excluded: Sequence[str],
    ) -> tuple[list[Candidate], str | None, dict[str, Any] | None]:
        cfg = self.config
        filters, params = self._filters(seen, excluded)
        nn = f"({{targetHits:{cfg.target_hits}}}nearestNeighbor(embedding, q_user))"
        base = {
            "yql": f"select * from product where {nn} and {filters}",
            "input.query(q_user)": embedding,
            "hits": cfg.rank_hits,
            "presentation.timing": True,
            **params,
        }
        ranked = {
            **base,
            **ranking_inputs(recent_idx[:HISTORY_LENGTH], ctx),
            RETRIEVAL_WEIGHT_QUERY: float(cfg.retrieval_weight),
            "ranking.profile": cfg.ranking_profile,
            "ranking.globalPhase.rerankCount": cfg.rerank_count,
        }
        try:
            payload = self.vespa.search(ranked, what="ranking query")
            hits = self.vespa.hits(payload)
            return (
                [self._candidate(h, "ann", ranked=True) for h in hits],
                None,
                payload.get("timing"),
            )
        except VespaError as e:
            # Degrade: same candidates, retrieval profile, no ONNX. If this fails too, raise.
            degraded = f"ranker unavailable: {e}"
        payload = self.vespa.search(
            {**base, "ranking.profile": cfg.retrieval_profile}, what="retrieval query"
        )
        hits = self.vespa.hits(payload)
        return (
            [self._candidate(h, "ann", ranked=False) for h in hits],
            degraded,
            payload.get("timing"),
        )

    @staticmethod
    def _candidate(
        hit: dict[str, Any], source: str, ranked: bool, score: float | None = None
    ) -> Candidate:
        f = hit.get("fields", {})
        features = f.get("matchfeatures") or {}
        relevance = float(hit.get("relevance", 0.0))
        if score is not None:
            retrieval = score
        elif ranked:
            # scores.retrieval = the ANN closeness; the ranking profile's relevance is the ranker's
            retrieval = float(features.get("ann", 0.0))
        else:
            retrieval = relevance  # the retrieval profile's first-phase: retrieval order
        created = f.get("created_at")
        return Candidate(
            product_id=str(f["product_id"]),
            seller_id=str(f.get("seller_id", "")),
            category_path=tuple(f.get("category_path") or ()),
            retrieval_score=retrieval,
            ranker_score=relevance if ranked else None,
            created_at=int(created) if created is not None else None,
            price=float(f.get("price", 0.0)),
            in_stock=bool(f.get("in_stock", True)),
            source=source,
        )

    def _cold_start(
        self, browsed: Sequence[str], seen: set[str], excluded: Sequence[str]
    ) -> list[Candidate]:
        """Popularity interleaved with the browsed categories (newest first), one from each list
        in turn; scores fall with the mixed rank so the re-ranker starts from that order."""
        cfg = self.config
        filters, params = self._filters(seen, excluded)
        lists: list[tuple[str, list[dict[str, Any]]]] = []
        browsed = [c for c in dict.fromkeys(browsed) if c not in excluded][:5]
        for category in browsed:
            body = {
                "yql": f"select * from product where {filters} "
                f"and category_path contains {_quote(category)}",
                "ranking.profile": cfg.popularity_profile,
                "hits": min(cfg.rank_hits, cfg.cold_start_hits),
                **params,
            }
            lists.append((f"browsed:{category}", self.vespa.hits(self.vespa.search(body))))
        body = {
            "yql": f"select * from product where {filters}",
            "ranking.profile": cfg.popularity_profile,
            "hits": min(cfg.rank_hits, cfg.cold_start_hits),
            **params,
        }
        lists.append(("popularity", self.vespa.hits(self.vespa.search(body, what="popularity"))))
        mixed: dict[str, tuple[str, dict[str, Any]]] = {}
        for i in range(max((len(h) for _, h in lists), default=0)):
            for source, hits in lists:
                if i < len(hits):
                    pid = hits[i]["fields"]["product_id"]
                    mixed.setdefault(pid, (source, hits[i]))
        n = len(mixed)
        return [
            self._candidate(hit, source, ranked=False, score=1.0 - rank / max(n, 1))
            for rank, (source, hit) in enumerate(mixed.values())
        ]

    def _history(self, recent_ids: Sequence[str]) -> tuple[HistoryItem, ...]:
        """The user's recent products with their categories (for the re-ranker's supported_by)."""
        ids = list(dict.fromkeys(recent_ids))[:RECENT]
        if not ids:
            return ()
        body = {
            "yql": "select * from product where product_id in (@hist)",
            "hist": ",".join(ids),
            "hits": len(ids),
        }
        try:
            hits = self.vespa.hits(self.vespa.search(body, what="history lookup"))
        except VespaError:
            return ()  # explanations lose supported_by; the list itself is unaffected
        paths = {
            h["fields"]["product_id"]: tuple(h["fields"].get("category_path") or ()) for h in hits
        }
        return tuple(HistoryItem(p, paths[p]) for p in ids if p in paths)

    # ----- similar products and sellers ---------------------------------------------------------

    def product(self, product_id: str) -> dict[str, Any]:
        doc = self.vespa.get_document("product", product_id)
        if doc is None:
            raise ProductNotFound(product_id)
        return doc

    def similar(self, product_id: str, k: int = 20) -> list[dict[str, Any]]:
        """Nearest in-stock products to the product's own embedding, itself excluded."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        doc = self.product(product_id)
        embedding = _vector(doc.get("embedding"))
        if embedding is None:
            return []
        # The retrieval profile orders by closeness + freshness + popularity; similarity is
        # closeness alone, so fetch every NN match and sort by it here.
        k = min(k, self.config.rank_hits)
        hits_wanted = min(max(k, 100), self.config.rank_hits)
        nn = f"({{targetHits:{hits_wanted}}}nearestNeighbor(embedding, q_user))"
        body = {
            "yql": f"select * from product where {nn} and in_stock = true "
            "and !(product_id in (@self))",
            "self": product_id,
            "input.query(q_user)": embedding,
            "ranking.profile": self.config.retrieval_profile,
            "hits": hits_wanted,
        }
        out = []
        for hit in self.vespa.hits(self.vespa.search(body, what="similar products")):
            f = hit["fields"]
            out.append(
                {
                    "product_id": f["product_id"],
                    "title": f.get("title"),
                    "seller_id": f.get("seller_id"),
                    "category_path": f.get("category_path") or [],
                    "price": f.get("price"),
                    "closeness": (f.get("matchfeatures") or {}).get("ann"),
                }
            )
        out.sort(key=lambda item: (-(item["closeness"] or 0.0), item["product_id"]))
        return out[:k]

    def sellers(
        self,
        user_id: str,
        k: int = 10,
        context: RecommendationContext | None = None,
        seller_exposure: Mapping[str, float] | None = None,
    ) -> dict[str, Any]:
        """Sellers of the user's top 50 recommendations, by discounted position weight.

        There are no seller embeddings yet: a seller's score is sum(1 / log2(position + 1)) over
        its products in the re-ranked list. Sellers flagged ``is_blocked`` are left out.
        """
        rec = self.recommend(user_id, 50, context, seller_exposure)
        scores: dict[str, float] = {}
        products: dict[str, list[str]] = {}
        for item in rec.items:
            seller = item["seller_id"]
            scores[seller] = scores.get(seller, 0.0) + 1.0 / math.log2(item["position"] + 1)
            products.setdefault(seller, []).append(item["product_id"])
        out = []
        for seller in sorted(scores, key=lambda s: (-scores[s], s)):
            doc = self.vespa.get_document("seller", seller) or {}
            if doc.get("is_blocked"):
                continue
            out.append(
                {
                    "seller_id": seller,
                    "score": round(scores[seller], 6),
                    "rating": doc.get("rating"),
                    "promoted": bool(doc.get("promoted", False)),
                    "products": products[seller],
                }
            )
            if len(out) == k:
                break
        return {
            "user_id": user_id,
            "strategy": rec.strategy,
            "degraded": rec.degraded,
            "method": "position-weighted share of the user's top 50 (no seller embeddings yet)",
            "sellers": out,
        }

    # ----- events -----------------------------------------------------------------------------

    def _lock(self, user_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._user_locks.setdefault(user_id, threading.Lock())

    def add_to_history(self, user_id: str, product_id: str, timestamp: int) -> dict[str, Any]:
        """Put ``product_id`` first in the user's recent history (partial update, create=true).

        A product already there moves to the front. Products outside the export (no item_idx)
        enter ``recent_product_ids`` but not ``recent_item_idx`` (the encoder cannot read them).
        One lock per user in this process keeps the read-modify-write of concurrent events whole.
        """
        with self._lock(user_id):
            user = self.vespa.get_document("user", user_id) or {}
            ids = [p for p in user.get("recent_product_ids") or [] if p != product_id]
            ids = [product_id, *ids][:RECENT]
            idx = [self.item_index[p] for p in ids if p in self.item_index]
            updated = max(int(user.get("updated_at") or 0), int(timestamp))
            fields = {
                "user_id": user_id,
                "recent_product_ids": ids,
                "recent_item_idx": idx,
                "updated_at": updated,
            }
            self.vespa.update_document("user", user_id, fields, create=True)
            return fields


def _jsonable(value: Any) -> Any:
    """Summaries may hold tuples or numpy scalars; the API returns plain JSON."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        return value.item()
    return value
