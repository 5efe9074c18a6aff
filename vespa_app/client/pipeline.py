"""The three-stage recommendation pipeline over Vespa (or the embedded engine), docs/pipeline.md.

1. candidates: ``nearestNeighbor`` over product embeddings with the user's embedding
   (``targetHits`` up to 10,000), hard eligibility in YQL (in stock, excluded categories,
   ``!(product_id in (@seen))`` with seen = recent history and purchases that are not
   consumable), merged with graph-walk candidates (random walks with restart from the user's
   recent items on the export's item-user graph, :mod:`vespa_app.client.graph_walk`); each
   candidate keeps its source (``ann``, ``walk`` or ``ann+walk``);
2. ranking: the ``ranking`` profile's global-phase (history encoder + ranker ONNX) over the top
   ``rerank_count`` (500) of the ANN candidates in the same Vespa query, and over the walk
   candidates in a second query with the same profile and inputs;
3. re-ranking: :class:`~vespa_app.client.rerank.Reranker` (diversity, freshness, margin,
   fairness, business rules) to the top ``k``, with explanations.

A ranking failure (Vespa error or timeout) degrades to retrieval-profile queries and retrieval
order, reported in ``degraded``; only a Vespa that answers nothing at all raises. Users unknown
to Vespa, without an embedding, or with fewer than ``cold_start_min_interactions`` recent
interactions get the cold-start list: popularity in the request's context (device, daypart;
profile ``context_popularity``) interleaved with the categories the shopper just browsed.

Also: similar products, "because you bought X" rows, trending in categories, new arrivals and
sellers to follow (seller embeddings), and the history update of an event.
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from model_export.query import CONTEXT_FIELDS, HISTORY_LENGTH, history_codes, ranking_inputs
from vespa_app.client.context import context_vector
from vespa_app.client.graph_walk import ItemGraph, WalkConfig, load_graph
from vespa_app.client.list_cache import ListCache
from vespa_app.client.queries import eligibility, popularity_inputs, positive, quote, vector
from vespa_app.client.rerank import Candidate, HistoryItem, RequestContext, Reranker
from vespa_app.client.rerank.candidates import RankedItem
from vespa_app.client.rows import CatalogRows, ProductNotFound
from vespa_app.client.vectors import ProductVectors, load_product_vectors
from vespa_app.client.vespa import VespaClient, VespaError

RECENT = 50  # recent_product_ids / recent_purchases kept (model_export.feed)
# history_product_ids / recent_item_idx / per-event context kept: the longest ranker history
# (the ranking_features profile's query(hist) d1[100]; model_export.feed.HISTORY).
HISTORY = 100
RETRIEVAL_WEIGHT_QUERY = "input.query(retrieval_weight)"
# What a candidate hit needs (``_candidate``): asking for these instead of ``select *`` keeps
# the embedding, title and description out of a 500-hit reply (about 300 KB less to render,
# send and parse per request). Match features come back either way.
CANDIDATE_FIELDS = "product_id, seller_id, category_path, created_at, margin, price, in_stock"
ANN, WALK, BOTH = "ann", "walk", "ann+walk"
# Cold-start candidates kept per cached popularity list, in multiples of cold_start_hits.
COLD_BUILT_LISTS = 2
# Cold-start candidates built from one cached popularity list: (id(hit), source, score) -> it.
_Built = dict[tuple[int, str, float], Candidate]
__all__ = [
    "PipelineConfig",
    "ProductNotFound",
    "RecommendationContext",
    "RecommendationPipeline",
    "RecommendationResult",
    "load_item_index",
    "load_ranker_settings",
    "load_retrieval_weight",
]


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    target_hits: int = 10_000  # stage 1 nearestNeighbor targetHits
    rank_hits: int = 500  # stage 2 hits returned; the package's query profile caps hits at 500
    rerank_count: int = 500  # ranking.globalPhase.rerankCount (the profile's own is 500 too)
    retrieval_profile: str = "retrieval"
    ranking_profile: str = "ranking"
    # Cold start, trending: popularity under the request's context keys (device, daypart).
    popularity_profile: str = "context_popularity"
    follow_profile: str = "follow"  # sellers to follow: closeness of seller embeddings
    cold_start_min_interactions: int = 3
    cold_start_hits: int = 200
    # Context popularity is the same for every cold user in one context: its lists are cached
    # this many seconds (0: a query per request), fetched with `popularity_cache_margin` extra
    # hits so that a user's own exclusions, applied to the cached list, rarely need a live query.
    popularity_cache_s: float = 10.0
    # ...and served up to this many seconds longer while a background query refreshes them, so
    # a cold-start request waits for the popularity query only for a context unseen that long.
    popularity_stale_s: float = 50.0
    popularity_cache_margin: int = 100
    excluded_categories: tuple[str, ...] = ()  # always excluded, on top of the request's
    # Products of the user's recent positive history (the newest 50 clicks, favourites, carts,
    # purchases) are excluded unless consumable; purchases always are unless consumable.
    # False: only purchases and the caller's lists.
    exclude_recent_history: bool = True
    locations: tuple[str, ...] = ()  # the training data's sorted location names (ctx codes)
    explain_history: bool = True  # history items for "supported_by"
    # W of a residual ranker (score = scorer + W * cos(user, candidate)), sent as
    # input.query(retrieval_weight); the export manifest's ranker.retrieval_weight
    # (load_retrieval_weight). 0: a ranker without the residual term.
    retrieval_weight: float = 0.0
    # A ranker with features (profile ranking_features): its history codes, sent as
    # input.query(hist_<name>) from the user document's recent per-event context, and the
    # location hashing of hist_location (the export manifest's ranker section,
    # load_ranker_settings; from_export applies it).
    history_features: tuple[str, ...] = ()
    location_buckets: int = 64
    # Cells of input.query(hist) (and of each hist_<name>): the ranker's history length, the
    # export manifest's ranker.history_length (from_export applies it); must equal the
    # profile's query(hist) d1 size (50 for ranking, 100 for ranking_features).
    history_len: int = HISTORY_LENGTH
    walk_candidates: int = 50  # graph-walk candidates merged into stage 1 (0: no walk)
    walk_seeds: int = 10  # the newest recent items the walks start from
    walk: WalkConfig = dataclasses.field(default_factory=WalkConfig)
    inspect_limit: int = 100  # rows shown per stage by recommend(inspect=True)

    def __post_init__(self) -> None:
        names = ("target_hits", "rank_hits", "rerank_count", "cold_start_hits", "walk_seeds")
        for name in (*names, "history_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"PipelineConfig.{name} must be a positive integer, got {value!r}")
        for name in ("walk_candidates", "inspect_limit"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"PipelineConfig.{name} must be an integer >= 0, got {value!r}")
        if self.popularity_cache_margin < 0:
            raise ValueError("PipelineConfig.popularity_cache_margin must be >= 0")
        if not (isinstance(self.popularity_cache_s, int | float) and self.popularity_cache_s >= 0):
            raise ValueError("PipelineConfig.popularity_cache_s must be a number >= 0")
        if not (isinstance(self.popularity_stale_s, int | float) and self.popularity_stale_s >= 0):
            raise ValueError("PipelineConfig.popularity_stale_s must be a number >= 0")
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
    exclude_product_ids: tuple[str, ...] = ()  # always excluded
    # Purchases the caller knows of (e.g. the event store): excluded unless consumable, as are
    # those in the user document's recent_purchases.
    purchased_product_ids: tuple[str, ...] = ()
    now: int | None = None  # epoch seconds; default: the clock


@dataclasses.dataclass
class RecommendationResult:
    user_id: str
    strategy: str  # "personalized" or "cold_start"
    items: list[dict[str, Any]]
    degraded: str | None
    latency_ms: dict[str, float]
    summary: dict[str, Any]
    # recommend(inspect=True) only: stage -> rows (see _stage_row), and stage -> total count.
    stages: dict[str, list[dict[str, Any]]] | None = None
    stage_counts: dict[str, int] | None = None

    @property
    def product_ids(self) -> list[str]:
        return [item["product_id"] for item in self.items]

    def to_dict(self) -> dict[str, Any]:
        out = {
            "user_id": self.user_id,
            "strategy": self.strategy,
            "degraded": self.degraded,
            "items": self.items,
            "latency_ms": self.latency_ms,
            "summary": self.summary,
        }
        if self.stages is not None:
            out["stages"] = self.stages
            out["stage_counts"] = self.stage_counts
        return out


def load_item_index(export_dir: Path | str) -> dict[str, int]:
    """product_id -> item_idx (row of the export's product_ids.json, as the feeder wrote it)."""
    path = Path(export_dir) / "product_ids.json"
    ids = json.loads(path.read_text())
    if not isinstance(ids, list) or not all(isinstance(p, str) for p in ids):
        raise ValueError(f"{path}: expected a JSON list of product ids")
    return {product_id: idx for idx, product_id in enumerate(ids)}


def load_ranker_settings(export_dir: Path | str) -> dict[str, Any]:
    """The PipelineConfig fields the export's ranker decides (manifest.json ``ranker``): the
    profile that serves it (``ranking_profile``), its ``history_features``,
    ``location_buckets``, the training data's ``locations`` and ``retrieval_weight``. Empty when
    the export has no ranker (or predates these fields: the plain ``ranking`` profile)."""
    path = Path(export_dir) / "manifest.json"
    if not path.is_file():
        return {}
    ranker = json.loads(path.read_text()).get("ranker") or {}
    if not ranker:
        return {}
    settings: dict[str, Any] = {
        "ranking_profile": str(ranker.get("profile", "ranking")),
        "history_features": tuple(ranker.get("history_features") or ()),
        "retrieval_weight": load_retrieval_weight(export_dir),
    }
    if "history_length" in ranker:
        settings["history_len"] = int(ranker["history_length"])
    if "location_buckets" in ranker:
        settings["location_buckets"] = int(ranker["location_buckets"])
    if ranker.get("locations"):
        settings["locations"] = tuple(ranker["locations"])
    return settings


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


@dataclasses.dataclass
class _Stage12:
    """What stages 1 and 2 hand to the re-ranker, and what the inspector shows of them."""

    candidates: list[Candidate]  # ranked order (ranker score, or retrieval when degraded)
    degraded: str | None = None
    timing: dict[str, Any] | None = None
    matched: int = 0  # documents stage 1 matched (Vespa's totalCount, + walk-only hits)
    walk_scores: dict[str, float] = dataclasses.field(default_factory=dict)


class RecommendationPipeline:
    """Thread-safe: the client, the re-ranker and the config are shared, state is per call.

    ``graph`` (the export's item-user graph) turns on walk candidates; ``vectors`` (the export's
    product vectors) gives candidates and history items their embeddings for MMR and for
    ``supported_by`` by cosine. Both come from the export folder (:meth:`from_export`).
    """

    def __init__(
        self,
        vespa: VespaClient,
        reranker: Reranker | None = None,
        config: PipelineConfig | None = None,
        item_index: Mapping[str, int] | None = None,
        graph: ItemGraph | None = None,
        vectors: ProductVectors | None = None,
    ) -> None:
        self.vespa = vespa
        self.reranker = reranker if reranker is not None else Reranker()
        self.config = config if config is not None else PipelineConfig()
        self.item_index = dict(item_index or {})
        self.graph = graph
        self.vectors = vectors
        cfg = self.config
        self.rows = CatalogRows(
            vespa, cfg.retrieval_profile, cfg.popularity_profile, cfg.follow_profile, cfg.rank_hits
        )
        self._user_locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        # The walk query runs beside the ANN query (two Vespa requests in flight, not in turn).
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="pipeline")
        # Cached popularity lists, each with the cold-start candidates built from it.
        self._popular: ListCache[tuple[list[dict[str, Any]], int, _Built]] = ListCache(
            float(cfg.popularity_cache_s), stale_s=float(cfg.popularity_stale_s)
        )

    @classmethod
    def from_export(
        cls,
        vespa: VespaClient,
        export_dir: Path | str,
        reranker: Reranker | None = None,
        config: PipelineConfig | None = None,
    ) -> RecommendationPipeline:
        """A pipeline with the export's item index, item-user graph (walk candidates, when the
        export has ``graph.npz``) and product vectors. ``config.retrieval_weight`` stays the
        caller's: ``load_retrieval_weight(export_dir)`` reads the export's. A ranker with
        features (manifest ``ranker.profile`` = ranking_features) sets the profile, its history
        features and location hashing (and ``locations`` when the caller gave none): only that
        profile loads its models."""
        config = config if config is not None else PipelineConfig()
        settings = load_ranker_settings(export_dir)
        if settings.get("history_features") or settings.get("ranking_profile", "ranking") != (
            "ranking"
        ):
            config = dataclasses.replace(
                config,
                ranking_profile=settings["ranking_profile"],
                history_features=settings["history_features"],
                location_buckets=settings.get("location_buckets", config.location_buckets),
                locations=config.locations or settings.get("locations", ()),
            )
        if "history_len" in settings:
            config = dataclasses.replace(config, history_len=settings["history_len"])
        return cls(
            vespa,
            reranker,
            config,
            item_index=load_item_index(export_dir),
            graph=load_graph(export_dir),
            vectors=load_product_vectors(export_dir),
        )

    # ----- recommendations ---------------------------------------------------------------------

    def recommend(
        self,
        user_id: str,
        k: int = 50,
        context: RecommendationContext | None = None,
        seller_exposure: Mapping[str, float] | None = None,
        inspect: bool = False,
    ) -> RecommendationResult:
        """The page for ``user_id``. ``inspect=True`` adds ``stages`` (candidates, ranked,
        reranked rows; the first two cut at ``config.inspect_limit``) and ``stage_counts``."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        context = context or RecommendationContext()
        now = context.now if context.now is not None else int(time.time())
        timer = _Timer()
        user = self.vespa.get_document("user", user_id) or {}
        timer.lap("user_lookup")
        recent_ids = [str(p) for p in user.get("recent_product_ids") or []]
        recent_idx = [int(i) for i in user.get("recent_item_idx") or []]
        purchased = list(
            dict.fromkeys([*context.purchased_product_ids, *(user.get("recent_purchases") or [])])
        )
        looked_up = self._lookup(list(dict.fromkeys([*recent_ids, *purchased])))
        timer.lap("history")
        seen = set(context.exclude_product_ids)
        repeatable = {p for p, doc in looked_up.items() if doc.get("consumable")}
        seen.update(p for p in purchased if p not in repeatable)
        if self.config.exclude_recent_history:
            seen.update(p for p in recent_ids if p not in repeatable)
        excluded = tuple(
            dict.fromkeys(self.config.excluded_categories + context.excluded_categories)
        )
        embedding = vector(user.get("embedding"))
        cold = embedding is None or len(recent_ids) < self.config.cold_start_min_interactions

        if cold:
            strategy = "cold_start"
            stage = self._cold_start(context, seen, excluded)
            timer.lap("retrieve")
        else:
            strategy = "personalized"
            updated = user.get("updated_at")
            gap = now - int(updated) if isinstance(updated, int) else None
            ctx = context_vector(
                context.hour, context.device, context.location, gap, self.config.locations
            )
            walk = self._walk(recent_ids, seen)
            timer.lap("walk")
            codes = self._history_codes(user, len(recent_idx))
            stage = self._retrieve_and_rank(
                embedding, recent_idx, ctx.tolist(), seen, excluded, walk, codes
            )
            timer.lap("retrieve_and_rank")
            if stage.timing:
                querytime = float(stage.timing.get("querytime", 0))
                timer.ms["vespa_querytime"] = round(querytime * 1000, 3)
        history = self._history_items(recent_ids, looked_up) if self.config.explain_history else ()
        candidates = stage.candidates
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
        items = []
        for ranked in result.items:
            entry = ranked.to_dict()
            entry["category_path"] = list(ranked.candidate.category_path)
            entry["price"] = ranked.candidate.price
            items.append(entry)
        summary = dict(result.summary)
        summary["excluded_products"] = len(seen)
        summary["excluded_categories"] = list(excluded)
        summary["sources"] = _count(c.source for c in candidates)
        out = RecommendationResult(
            user_id, strategy, items, stage.degraded, timer.total(), _jsonable(summary)
        )
        if inspect:
            out.stages, out.stage_counts = self._stages(stage, result.items)
        return out

    def _stages(
        self, stage: _Stage12, reranked: Sequence[RankedItem]
    ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, int]]:
        limit = self.config.inspect_limit
        walk = stage.walk_scores
        by_retrieval = sorted(
            stage.candidates, key=lambda c: (-c.retrieval_score, c.product_id)
        )  # stage 1's own order
        stages = {
            "candidates": [_stage_row(c, walk) for c in by_retrieval[:limit]],
            "ranked": [_stage_row(c, walk) for c in stage.candidates[:limit]],
            "reranked": [
                _stage_row(
                    item.candidate,
                    walk,
                    final=item.final_score,
                    moved_by=list(dict.fromkeys(r["rule"] for r in item.rules)),
                )
                for item in reranked
            ],
        }
        counts = {
            "candidates": max(stage.matched, len(stage.candidates)),
            "ranked": len(stage.candidates),
            "reranked": len(reranked),
        }
        return _jsonable(stages), counts

    def _walk(self, recent_ids: Sequence[str], seen: set[str]) -> dict[str, float]:
        """product_id -> visit share of walks from the newest recent items (empty: no graph)."""
        cfg = self.config
        if self.graph is None or cfg.walk_candidates == 0 or not recent_ids:
            return {}
        seeds = list(dict.fromkeys(recent_ids))[: cfg.walk_seeds]
        return self.graph.walk_ids(seeds, cfg.walk, sorted(seen), cfg.walk_candidates)

    def _history_codes(self, user: Mapping[str, Any], count: int) -> dict[str, Any]:
        """``input.query(hist_<name>)`` of a ranker with history features, from the user
        document's per-event context aligned with recent_item_idx (none for a plain ranker)."""
        cfg = self.config
        if not cfg.history_features:
            return {}
        names = ("event", "hour", "device", "location")
        return history_codes(
            cfg.history_features,
            count,
            *(list(user.get(CONTEXT_FIELDS[n]) or []) for n in names),
            location_vocabulary=cfg.locations,
            location_buckets=cfg.location_buckets,
            length=cfg.history_len,
        )

    def _retrieve_and_rank(
        self,
        embedding: list[float],
        recent_idx: list[int],
        ctx: list[float],
        seen: set[str],
        excluded: Sequence[str],
        walk: Mapping[str, float],
        codes: Mapping[str, Any] | None = None,
    ) -> _Stage12:
        """Stage 1 + 2: the ANN query (NN, then the ranking profile's global-phase over its top
        rerank_count) and, with walk candidates, a second query ranking exactly those with the
        same profile and inputs. ``rank(walk ids, NN)`` matches only the walk ids but gives
        them the ANN closeness the profile needs (``ann`` in the first phase, ``retrieval_cos``
        of a residual ranker)."""
        cfg = self.config
        filters, params = eligibility(seen, excluded)
        nn = f"({{targetHits:{cfg.target_hits}}}nearestNeighbor(embedding, q_user))"
        queries = [
            (ANN, f"select {CANDIDATE_FIELDS} from product where {nn} and {filters}", params)
        ]
        if walk:
            walk_nn = f"({{targetHits:{len(walk)}}}nearestNeighbor(embedding, q_user))"
            where = f"rank(product_id in (@walk), {walk_nn}) and {filters}"
            queries.append(
                (
                    WALK,
                    f"select {CANDIDATE_FIELDS} from product where {where}",
                    {**params, "walk": ",".join(walk)},
                )
            )
        ranking = {
            **ranking_inputs(recent_idx[: cfg.history_len], ctx, cfg.history_len),
            **(codes or {}),
            RETRIEVAL_WEIGHT_QUERY: float(cfg.retrieval_weight),
            "ranking.profile": cfg.ranking_profile,
            "ranking.globalPhase.rerankCount": cfg.rerank_count,
        }
        base = {"input.query(q_user)": embedding, "presentation.timing": True}
        degraded = None
        try:
            results = self._together(
                [
                    lambda s=source, y=yql, e=extra: self._ranked_hits(
                        y, {**base, **ranking, **e}, s, "ranking query"
                    )
                    for source, yql, extra in queries
                ]
            )
            ranked = True
        except VespaError as e:
            # Degrade: same candidates, retrieval profile, no ONNX. If this fails too, raise.
            degraded = f"ranker unavailable: {e}"
            retrieval = {**base, "ranking.profile": cfg.retrieval_profile}
            results = self._together(
                [
                    lambda s=source, y=yql, e=extra: self._ranked_hits(
                        y, {**retrieval, **e}, s, "retrieval query"
                    )
                    for source, yql, extra in queries
                ]
            )
            ranked = False
        merged: dict[str, tuple[str, dict[str, Any]]] = {}
        for source, hits, _ in results:
            for hit in hits:
                pid = hit["fields"]["product_id"]
                if pid in merged:
                    merged[pid] = (BOTH, merged[pid][1])
                else:
                    merged[pid] = (source, hit)
        # One list in the ranking's order: both queries scored with the same profile and
        # inputs, so the scores compare; the walk query's hits are all within its rerank count.
        # The order is the hits' relevance (the candidate's ranker score, or its retrieval score
        # when degraded), so only the kept rank_hits become candidates.
        order = sorted(
            merged.values(),
            key=lambda m: (-float(m[1].get("relevance", 0.0)), str(m[1]["fields"]["product_id"])),
        )
        candidates = [
            self._candidate(hit, source, ranked) for source, hit in order[: cfg.rank_hits]
        ]
        ann_total = results[0][2].get("root", {}).get("fields", {}).get("totalCount", 0)
        walk_only = sum(1 for source, _ in merged.values() if source == WALK)
        return _Stage12(
            candidates,
            degraded,
            results[0][2].get("timing"),
            matched=int(ann_total) + walk_only,
            walk_scores=dict(walk),
        )

    def _together(self, calls: Sequence[Callable[[], Any]]) -> list[Any]:
        """Run the calls concurrently (the first on this thread); results in call order, the
        first error raised after every call has finished."""
        futures = [self._pool.submit(call) for call in calls[1:]]
        try:
            first = calls[0]()
        finally:
            rest = [f.exception() for f in futures]  # wait for all, whatever happened
        for error in rest:
            if error is not None:
                raise error
        return [first, *(f.result() for f in futures)]

    def _ranked_hits(
        self, yql: str, body: dict[str, Any], source: str, what: str
    ) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
        hits = self.config.rank_hits
        if source == WALK:
            hits = min(hits, len(body["walk"].split(",")))
        payload = self.vespa.search({"yql": yql, "hits": hits, **body}, what=what)
        return source, self.vespa.hits(payload), payload

    def _candidate(
        self, hit: dict[str, Any], source: str, ranked: bool, score: float | None = None
    ) -> Candidate:
        """The re-ranker's view of one hit, with the export's vector of the product (MMR,
        ``supported_by``; None for a product fed after the export) looked up here, once."""
        f = hit.get("fields", {})
        relevance = float(hit.get("relevance", 0.0))
        if score is not None:
            retrieval = score
        elif ranked:
            # scores.retrieval = the ANN closeness; the ranking profile's relevance is the ranker's
            retrieval = float((f.get("matchfeatures") or {}).get("ann", 0.0))
        else:
            retrieval = relevance  # the retrieval profile's first-phase: retrieval order
        product_id = str(f["product_id"])
        created = f.get("created_at")
        margin = f.get("margin")
        return Candidate(
            product_id=product_id,
            seller_id=str(f.get("seller_id", "")),
            category_path=tuple(f.get("category_path") or ()),
            retrieval_score=retrieval,
            ranker_score=relevance if ranked else None,
            created_at=int(created) if created is not None else None,
            margin=float(margin) if isinstance(margin, int | float) else 0.0,
            price=float(f.get("price", 0.0)),
            in_stock=bool(f.get("in_stock", True)),
            embedding=self.vectors.get(product_id) if self.vectors is not None else None,
            source=source,
        )

    def _cold_start(
        self, context: RecommendationContext, seen: set[str], excluded: Sequence[str]
    ) -> _Stage12:
        """Popularity in the request's context interleaved with the browsed categories (newest
        first), one from each list in turn; scores fall with the mixed rank so the re-ranker
        starts from that order."""
        cfg = self.config
        weights = popularity_inputs(cfg.popularity_profile, context.hour, context.device)
        hits_wanted = min(cfg.rank_hits, cfg.cold_start_hits)
        lists: list[tuple[str, list[dict[str, Any]], _Built | None]] = []
        browsed = [c for c in dict.fromkeys(context.browsed_categories) if c not in excluded][:5]
        for category in browsed:
            hits, _, built = self._popular_hits(category, weights, hits_wanted, seen, excluded)
            lists.append((f"browsed:{category}", hits, built))
        hits, total, built = self._popular_hits(None, weights, hits_wanted, seen, excluded)
        lists.append(("popularity", hits, built))
        mixed: dict[str, tuple[str, dict[str, Any], _Built | None]] = {}
        for i in range(max((len(h) for _, h, _ in lists), default=0)):
            for source, hits, built in lists:
                if i < len(hits):
                    pid = hits[i]["fields"]["product_id"]
                    mixed.setdefault(pid, (source, hits[i], built))
        n = len(mixed)
        candidates = [
            self._cold_candidate(hit, source, 1.0 - rank / max(n, 1), built)
            for rank, (source, hit, built) in enumerate(mixed.values())
        ]
        return _Stage12(candidates, matched=total)

    def _cold_candidate(
        self, hit: dict[str, Any], source: str, score: float, built: _Built | None
    ) -> Candidate:
        """A cold-start candidate depends only on its hit, source and score, so the cold users
        served from one cached list share them: ``built`` is that list's memo (None for the
        hits of a live query). A user's exclusions move the later hits up a rank each, so the
        memo stops growing at COLD_BUILT_LISTS lists' worth of candidates."""
        if built is None:
            return self._candidate(hit, source, ranked=False, score=score)
        key = (id(hit), source, score)  # the hit lives in the cached list as long as the memo
        candidate = built.get(key)
        if candidate is None:
            candidate = self._candidate(hit, source, ranked=False, score=score)
            if len(built) < COLD_BUILT_LISTS * self.config.cold_start_hits:
                built[key] = candidate
        return candidate

    def _popular_hits(
        self,
        category: str | None,
        weights: Mapping[str, Any],
        wanted: int,
        seen: set[str],
        excluded: Sequence[str],
    ) -> tuple[list[dict[str, Any]], int, _Built | None]:
        """The ``wanted`` most popular eligible products in the request's context (under
        ``category`` if given), how many in-stock products matched, and the candidates memo of
        the cached list they came from (None: a live query). The in-stock list is shared
        through the cache; the user's exclusions are applied to it here, and only when they
        leave too few does a live query with every filter run."""
        cfg = self.config
        under = f" and category_path contains {quote(category)}" if category else ""

        def query(filters: str, params: Mapping[str, str], hits: int):
            body = {
                "yql": f"select {CANDIDATE_FIELDS} from product where {filters}{under}",
                "hits": hits,
                **weights,
                **params,
            }
            payload = self.vespa.search(body, what="popularity")
            total = payload.get("root", {}).get("fields", {}).get("totalCount", 0)
            return self.vespa.hits(payload), int(total)

        fetched = min(cfg.rank_hits, wanted + cfg.popularity_cache_margin)
        key = (category, json.dumps(weights, sort_keys=True, default=str), fetched)
        hits, total, built = self._popular.get(
            key, lambda: (*query("in_stock = true", {}, fetched), {})
        )
        blocked = set(excluded)
        kept = [
            h
            for h in hits
            if h["fields"]["product_id"] not in seen
            and (not blocked or blocked.isdisjoint(h["fields"].get("category_path") or ()))
        ]
        if len(kept) >= wanted or len(hits) >= total:  # enough, or every match was fetched
            return kept[:wanted], total, built
        filters, params = eligibility(seen, excluded)
        return *query(filters, params, wanted), None

    def _lookup(self, product_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """product_id -> fields (category_path, consumable) of these products; {} on a failed
        lookup, which then excludes every purchase (none is known to be consumable)."""
        if not product_ids:
            return {}
        body = {
            "yql": "select product_id, category_path, consumable from product "
            "where product_id in (@ids)",
            "ids": ",".join(product_ids),
            "hits": min(len(product_ids), self.config.rank_hits),
        }
        try:
            hits = self.vespa.hits(self.vespa.search(body, what="history lookup"))
        except VespaError:
            return {}
        return {h["fields"]["product_id"]: h["fields"] for h in hits}

    def _history_items(
        self, recent_ids: Sequence[str], looked_up: Mapping[str, Mapping[str, Any]]
    ) -> tuple[HistoryItem, ...]:
        """The recent products with categories and, where the export has them, vectors (the
        re-ranker's supported_by uses the closest by cosine, else the category)."""
        ids = [p for p in dict.fromkeys(recent_ids) if p in looked_up][:RECENT]
        vectors = self.vectors.many(ids) if self.vectors is not None else {}
        return tuple(
            HistoryItem(p, tuple(looked_up[p].get("category_path") or ()), vectors.get(p))
            for p in ids
        )

    # ----- similar products, rows, sellers -------------------------------------------------------

    def product(self, product_id: str) -> dict[str, Any]:
        """The product document's fields; unknown product: ProductNotFound."""
        return self.rows.product(product_id)

    def similar(self, product_id: str, k: int = 20) -> list[dict[str, Any]]:
        """Nearest in-stock products to the product's own embedding, itself excluded."""
        return self.rows.similar(product_id, k)

    def because_you_bought(
        self,
        user_id: str,
        rows: int = 3,
        k: int = 10,
        context: RecommendationContext | None = None,
    ) -> list[dict[str, Any]]:
        """One row per recent purchase (the user document's ``recent_purchases``, then the
        context's ``purchased_product_ids``; newest first, at most ``rows``): ``{anchor: the
        purchased product, items: the k in-stock products nearest to its embedding}``. Left out
        of every row: the user's recent history, purchases, the context's excluded products and
        earlier rows' items (each row adds something new)."""
        rows, k = positive("rows", rows), positive("k", k)
        context = context or RecommendationContext()
        user = self.vespa.get_document("user", user_id) or {}
        anchors = list(
            dict.fromkeys([*(user.get("recent_purchases") or []), *context.purchased_product_ids])
        )
        exclude = {*(user.get("recent_product_ids") or []), *context.exclude_product_ids}
        return self.rows.because_you_bought(anchors, exclude, rows, k)

    def trending(
        self,
        categories: Sequence[str] = (),
        k: int = 20,
        context: RecommendationContext | None = None,
    ) -> list[dict[str, Any]]:
        """The most popular in-stock products under any of ``categories`` (all when empty), in
        the request's context (device, daypart) when given; the context's excluded products and
        categories apply."""
        context = context or RecommendationContext()
        return self.rows.trending(
            categories,
            k,
            context.hour,
            context.device,
            context.exclude_product_ids,
            context.excluded_categories,
        )

    def new_arrivals(self, k: int = 20, categories: Sequence[str] = ()) -> list[dict[str, Any]]:
        """The newest in-stock products, under any of ``categories`` when given."""
        return self.rows.new_arrivals(k, categories)

    def sellers(
        self,
        user_id: str,
        k: int = 10,
        context: RecommendationContext | None = None,
        seller_exposure: Mapping[str, float] | None = None,
    ) -> dict[str, Any]:
        """Sellers to follow: the sellers whose embedding (the sales-weighted mean of their
        products', model_export.feed) is closest to the user's, blocked ones left out, each
        with its products nearest to the user. A user without an embedding (cold) gets the
        sellers of their cold-start list, by discounted position: sum(1 / log2(position + 1))."""
        k = positive("k", k)
        user = self.vespa.get_document("user", user_id) or {}
        embedding = vector(user.get("embedding"))
        if embedding is not None:
            found = self.rows.sellers_to_follow(embedding, k)
            if found:
                return {
                    "user_id": user_id,
                    "strategy": "personalized",
                    "degraded": None,
                    "method": "seller embedding closeness to the user embedding",
                    "sellers": found,
                }
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
        reason = "no user embedding" if embedding is None else "no seller embeddings"
        return {
            "user_id": user_id,
            "strategy": rec.strategy,
            "degraded": rec.degraded,
            "method": f"position-weighted share of the user's top 50 ({reason})",
            "sellers": out,
        }

    # ----- events -----------------------------------------------------------------------------

    def _lock(self, user_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._user_locks.setdefault(user_id, threading.Lock())

    def add_to_history(
        self,
        user_id: str,
        product_id: str,
        timestamp: int,
        event_type: str | None = None,
        hour: int | None = None,
        device: str | None = None,
        location: str | None = None,
    ) -> dict[str, Any]:
        """Put ``product_id`` first in the user's recent history (partial update, create=true);
        a ``purchase`` also puts it first in ``recent_purchases``. The event's type, hour,
        device and location go first in the per-event context lists aligned with
        ``recent_item_idx`` (the history codes of a ranker with features; None = unknown).

        A product already there moves to the front. ``history_product_ids`` keeps the newest
        ``HISTORY`` (100) products and ``recent_item_idx`` their rows; ``recent_product_ids`` is
        its first ``RECENT`` (50). Products outside the export (no item_idx) enter the id lists
        but not ``recent_item_idx`` (the encoder cannot read them).
        One lock per user in this process keeps the read-modify-write of concurrent events whole.
        """
        with self._lock(user_id):
            user = self.vespa.get_document("user", user_id) or {}
            # Documents written before history_product_ids existed: their recent ids.
            old_ids = list(user.get("history_product_ids") or user.get("recent_product_ids") or [])
            ids = [p for p in old_ids if p != product_id]
            ids = [product_id, *ids][:HISTORY]
            idx = [self.item_index[p] for p in ids if p in self.item_index]
            context = _moved_context(
                user,
                old_ids,
                ids,
                self.item_index,
                product_id,
                (event_type, hour, device, location),
            )
            updated = max(int(user.get("updated_at") or 0), int(timestamp))
            fields: dict[str, Any] = {
                "user_id": user_id,
                "recent_product_ids": ids[:RECENT],
                "history_product_ids": ids,
                "recent_item_idx": idx,
                **context,
                "updated_at": updated,
            }
            if event_type == "purchase":
                bought = [p for p in user.get("recent_purchases") or [] if p != product_id]
                fields["recent_purchases"] = [product_id, *bought][:RECENT]
            self.vespa.update_document("user", user_id, fields, create=True)
            return fields


def _moved_context(
    user: Mapping[str, Any],
    old_ids: list[str],
    ids: list[str],
    item_index: Mapping[str, int],
    product_id: str,
    event: tuple[str | None, int | None, str | None, str | None],
) -> dict[str, list[Any]]:
    """The per-event context lists after ``product_id`` moved to the front, position by
    position as the ids moved: each list is aligned with recent_item_idx (the ids that have an
    item_idx); values a document lacks read as unknown."""
    names = ("event", "hour", "device", "location")
    missing = ("", -1, "", "")
    old_rows = [
        (
            p,
            tuple(
                _at(user.get(CONTEXT_FIELDS[n]), i, m) for n, m in zip(names, missing, strict=True)
            ),
        )
        for i, p in enumerate(p for p in old_ids if p in item_index)
    ]
    rows = [row for p, row in old_rows if p != product_id]
    if product_id in item_index:
        rows.insert(0, tuple(m if v is None else v for v, m in zip(event, missing, strict=True)))
    rows = rows[: sum(p in item_index for p in ids)]
    return {CONTEXT_FIELDS[n]: [row[i] for row in rows] for i, n in enumerate(names)}


def _at(values: Any, position: int, missing: Any) -> Any:
    value = values[position] if isinstance(values, list) and position < len(values) else None
    return missing if value is None else value


def _count(values: Iterable[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values:
        out[str(value)] = out.get(str(value), 0) + 1
    return out


def _stage_row(
    c: Candidate,
    walk: Mapping[str, float],
    final: float | None = None,
    moved_by: list[str] | None = None,
) -> dict[str, Any]:
    """One inspector row: the stage scores of a candidate (final and moved_by: re-ranked only)."""
    return {
        "product_id": c.product_id,
        "seller_id": c.seller_id,
        "source": c.source,
        "retrieval_score": c.retrieval_score,
        "ranker_score": c.ranker_score,
        "walk_score": walk.get(c.product_id),
        "final_score": final,
        "moved_by": moved_by or [],
    }


def _jsonable(value: Any) -> Any:
    """Summaries may hold tuples or numpy scalars; the API returns plain JSON."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        return value.item()
    return value
