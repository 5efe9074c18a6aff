"""Offline evaluation of the whole recommendation pipeline, not just a model.

For each evaluated user a *system* produces the page the shopper would see: stage 1 candidates,
stage 2 ranking, stage 3 re-ranking with the serving layer's own :class:`Reranker` and rules file
(``vespa_app/client/rerank/rules.toml``), on ``Candidate`` objects built from the dataset's
products table the way ``vespa_app.client.pipeline`` builds them from Vespa hits. The top
``k`` (10) of the served ``served_k`` (50) items are scored against the stage's targets.

Two kinds of system:

- :class:`BaselineSystem` ("traditional"): a baseline recommender (MostPop, ItemKNN) scores the
  catalogue; its top ``rank_count`` items go to the re-ranker with the baseline score as the
  retrieval score and no ranker score (the re-ranker orders by retrieval score).
- :class:`GraphRankerSystem` ("GNN+Transformer"): the graph model's user and item vectors,
  L2-normalised as fed to Vespa, give the ``target_hits`` (10k) nearest items by cosine; the
  package's first phase (``closeness + 0.1 * freshness + 0.05 * log10(1 + popularity)``) keeps
  the best ``rank_count`` (500); the residual transformer ranker scores them and the global phase
  adds ``0.05 * freshness`` (vespa_app/package/schemas/product.sd).

Both systems see the same eligibility as serving: items the user has positive history with before
the stage are excluded (the stage's own targets stay eligible, as in
:func:`trainer.evaluation.ranking.full_ranking`), and out-of-stock items are excluded (the YQL
``in_stock = true``). Every stage is timed per request, in process. Metric definitions:
docs/pipeline-report.md.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import torch

from trainer.data.interactions import InteractionData, Stage
from trainer.data.splits import cold_users
from trainer.evaluation.metrics import hit_matrix, ndcg_at_k, target_counts
from trainer.evaluation.ranking import evaluation_users, target_matrix, top_k
from trainer.models.base import Recommender
from vespa_app.client.rerank import Candidate, RequestContext, Reranker

TARGET_HITS = 10_000  # stage 1 nearestNeighbor targetHits (issue 7)
RANK_COUNT = 500  # stage 2 re-scores this many (issue 7; the package serves 400)
SERVED_K = 50  # stage 3 page size
K = 10  # metrics cut-off
FRESHNESS_MAX_AGE = 30 * 24 * 3600  # freshness(created_at).maxAge in the package's profiles
FIRST_PHASE_FRESH, FIRST_PHASE_POP, GLOBAL_FRESH = 0.1, 0.05, 0.05
STAGES = ("retrieve", "rank", "rerank")


# ----- the catalogue as the re-ranker sees it ----------------------------------------------------
@dataclass(frozen=True)
class Catalogue:
    """Per item row: what a Vespa product hit carries into the re-ranker, plus metric codes.

    Missing values follow the feeder and the pipeline: a missing seller is ``""`` (the pipeline's
    ``str(f.get("seller_id", ""))``), a missing category an empty path, a missing price or
    margin 0, a missing listing date ``None``.
    """

    product_ids: np.ndarray  # (N,) object
    seller_ids: np.ndarray  # (N,) object, "" when unknown
    paths: tuple[tuple[str, ...], ...]  # (N,) ancestors first
    created_at: np.ndarray  # (N,) int64 epoch seconds, -1 when unknown
    price: np.ndarray  # (N,) float64
    margin: np.ndarray  # (N,) float64
    in_stock: np.ndarray  # (N,) bool
    path_codes: np.ndarray  # (N, D) int64 category code per depth, -1 past the path's end
    leaf_codes: np.ndarray  # (N,) int64 code of the deepest category, -1 when unknown
    seller_codes: np.ndarray  # (N,) int64, -1 when unknown
    # (N, D) L2-normalised product vectors given to every candidate (the serving pipeline
    # attaches the export's product vectors, so MMR uses embedding cosine); None: attributes.
    embeddings: np.ndarray | None = None

    def with_embeddings(self, vectors: np.ndarray | None) -> Catalogue:
        """The same catalogue with these product vectors (normalised) on its candidates."""
        if vectors is None:
            return replace(self, embeddings=None)
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape[0] != self.num_items:
            raise ValueError(f"{vectors.shape[0]} product vectors for {self.num_items} items")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
        return replace(self, embeddings=unit)

    @property
    def num_items(self) -> int:
        return len(self.product_ids)

    @classmethod
    def from_data(cls, data: InteractionData) -> Catalogue:
        products = data.market.products.set_index("product_id").reindex(data.items.ids)
        parent = dict(
            zip(
                data.market.categories["category_id"],
                data.market.categories["parent_id"],
                strict=True,
            )
        )
        path_of: dict[str, tuple[str, ...]] = {}
        for category in parent:
            path, node = [], category
            while isinstance(node, str) and node not in path and len(path) <= len(parent):
                path.append(node)
                node = parent.get(node)
            path_of[category] = tuple(path[::-1])
        categories = products["category_id"].to_numpy(dtype=object)
        paths = tuple(path_of.get(c, ()) if isinstance(c, str) else () for c in categories)
        depth = max((len(p) for p in paths), default=0)
        codes = {name: i for i, name in enumerate(sorted(parent))}
        path_codes = np.full((len(paths), max(depth, 1)), -1, dtype=np.int64)
        for row, path in enumerate(paths):
            path_codes[row, : len(path)] = [codes[c] for c in path]
        leaf = np.array([codes[p[-1]] if p else -1 for p in paths], dtype=np.int64)
        sellers = products["seller_id"].to_numpy(dtype=object)
        known = np.array([isinstance(s, str) for s in sellers])
        seller_names = np.where(known, sellers, "").astype(object)
        seller_index = {s: i for i, s in enumerate(sorted(set(seller_names[known])))}
        seller_codes = np.array(
            [seller_index[s] if k else -1 for s, k in zip(seller_names, known, strict=True)],
            dtype=np.int64,
        )
        created = products["created_at"]
        created_s = np.where(
            created.isna().to_numpy(),
            -1,
            pd.to_datetime(created, utc=True).astype("datetime64[ns, UTC]").astype("int64")
            // 1_000_000_000,
        ).astype(np.int64)
        return cls(
            product_ids=data.items.ids.astype(object),
            seller_ids=seller_names,
            paths=paths,
            created_at=created_s,
            price=products["price"].fillna(0.0).to_numpy(dtype=np.float64),
            margin=products["margin"].fillna(0.0).to_numpy(dtype=np.float64),
            in_stock=products["in_stock"].fillna(True).to_numpy(dtype=bool),
            path_codes=path_codes,
            leaf_codes=leaf,
            seller_codes=seller_codes,
        )

    def freshness(self, items: np.ndarray, now: int) -> np.ndarray:
        """Vespa's ``freshness(created_at)`` with maxAge 30 days: max(0, 1 - age / maxAge);
        0 for undated items (Vespa reads a missing long attribute as a very old date)."""
        created = self.created_at[items]
        age = np.maximum(now - created, 0)
        fresh = np.clip(1.0 - age / FRESHNESS_MAX_AGE, 0.0, 1.0)
        return np.where(created >= 0, fresh, 0.0)

    def candidates(
        self,
        items: np.ndarray,
        retrieval: np.ndarray,
        ranker: np.ndarray | None,
        source: str,
    ) -> list[Candidate]:
        """The re-ranker's input for these item rows, in stage-2 order."""
        out = []
        vectors = self.embeddings
        for j, item in enumerate(items.tolist()):
            created = int(self.created_at[item])
            out.append(
                Candidate(
                    product_id=self.product_ids[item],
                    seller_id=self.seller_ids[item],
                    category_path=self.paths[item],
                    retrieval_score=float(retrieval[j]),
                    ranker_score=None if ranker is None else float(ranker[j]),
                    created_at=created if created >= 0 else None,
                    margin=float(self.margin[item]),
                    price=float(self.price[item]),
                    in_stock=bool(self.in_stock[item]),
                    embedding=None if vectors is None else vectors[item],
                    source=source,
                )
            )
        return out


def stage_now(data: InteractionData, stage: Stage) -> int:
    """The request time of the stage: just after the last event of its history (epoch s)."""
    return int(data.history(stage)["timestamp"].max()) + 1


def seller_exposure(
    data: InteractionData, stage: Stage, catalogue: Catalogue, window_days: float = 7.0
) -> dict[str, float] | None:
    """seller_id -> share of the impressions in the last ``window_days`` of the stage's history
    (the webapp's ``EventStore.seller_exposure`` over the dataset); None without impressions."""
    history = data.history(stage)
    shown = history[history["event"].to_numpy() == 0]  # EVENT_TYPES[0] = impression
    if not len(shown):
        return None
    recent = shown[shown["timestamp"].to_numpy() >= stage_now(data, stage) - window_days * 86400]
    sellers = catalogue.seller_ids[recent["item_idx"].to_numpy()]
    sellers = sellers[sellers != ""]
    if not len(sellers):
        return None
    names, counts = np.unique(sellers.astype(str), return_counts=True)
    return {str(n): float(c / counts.sum()) for n, c in zip(names, counts, strict=True)}


def positive_popularity(data: InteractionData, stage: Stage) -> np.ndarray:
    """(N,) positive events per item in the stage's history (the product's ``popularity``)."""
    history = data.positives(data.history(stage))
    return np.bincount(history["item_idx"].to_numpy(), minlength=data.num_items)


# ----- systems -----------------------------------------------------------------------------------
@dataclass
class Request:
    """One user's request: its row in the prepared batch and the items it may not get."""

    position: int  # row in the users array given to prepare()
    user: int  # user_idx
    blocked: np.ndarray  # item rows excluded for this user (seen, not a target)


class PipelineSystem(ABC):
    """Stages 1 and 2 of one system; stage 3 is the shared :class:`Reranker`."""

    name: str
    source: str  # Candidate.source of its hits

    def __init__(self, catalogue: Catalogue, rank_count: int = RANK_COUNT):
        self.catalogue = catalogue
        self.rank_count = rank_count
        self.now = 0

    @abstractmethod
    def prepare(self, data: InteractionData, stage: Stage, users: np.ndarray) -> None:
        """Per-stage state that serving keeps in documents (user vectors, recent history)."""

    @abstractmethod
    def retrieve(self, request: Request) -> tuple[np.ndarray, np.ndarray]:
        """Stage 1: (item rows, retrieval scores) of the at most ``rank_count`` hits that go to
        stage 2, in the order stage 2 receives them."""

    def rank(self, request: Request, items: np.ndarray) -> np.ndarray | None:
        """Stage 2: a score per hit, or None (the re-ranker then uses retrieval scores)."""
        return None

    def _eligible_top(self, scores: np.ndarray, blocked: np.ndarray, k: int):
        """Best k (values, rows) among eligible items, ties to the lower row; -inf dropped."""
        work = torch.from_numpy(np.asarray(scores, dtype=np.float32).copy())
        work[torch.from_numpy(~self.catalogue.in_stock)] = -torch.inf
        if len(blocked):
            work[torch.from_numpy(blocked)] = -torch.inf
        values, rows = top_k(work[None], min(k, len(work)))
        values, rows = values[0].numpy(), rows[0].numpy()
        keep = np.isfinite(values)
        return values[keep], rows[keep]


class BaselineSystem(PipelineSystem):
    """A baseline recommender's top ``rank_count`` by its own score; no learned ranker."""

    source = "baseline"

    def __init__(self, model: Recommender, catalogue: Catalogue, rank_count: int = RANK_COUNT):
        super().__init__(catalogue, rank_count)
        self.model = model
        self.name = model.name
        self._data: InteractionData | None = None
        self._stage: Stage = "test"

    def prepare(self, data: InteractionData, stage: Stage, users: np.ndarray) -> None:
        self._data, self._stage = data, stage
        self.now = stage_now(data, stage)
        self.model.score(data, stage, np.asarray(users[:1]))  # builds the model's stage caches

    def retrieve(self, request: Request) -> tuple[np.ndarray, np.ndarray]:
        assert self._data is not None, "prepare() first"
        with torch.no_grad():
            scores = self.model.score(self._data, self._stage, np.array([request.user]))[0]
        values, rows = self._eligible_top(scores.numpy(), request.blocked, self.rank_count)
        return rows, values


class GraphRankerSystem(PipelineSystem):
    """Graph-model vectors for stage 1 (+ the package's first phase), the ranker for stage 2."""

    source = "ann"

    def __init__(
        self,
        model: Recommender,
        ranker: Any,  # trainer.models.ranker.Ranker, with the stage's user vectors if residual
        catalogue: Catalogue,
        target_hits: int = TARGET_HITS,
        rank_count: int = RANK_COUNT,
        name: str | None = None,
    ):
        super().__init__(catalogue, rank_count)
        self.model = model
        self.ranker = ranker
        self.target_hits = target_hits
        self.name = name or f"{model.name}+ranker"
        items = model.item_embeddings()
        if items is None:
            raise ValueError(f"{model.name} has no item embeddings: it cannot feed stage 1")
        self.items = torch.nn.functional.normalize(items.detach().float(), dim=1).numpy()
        self.user_vectors: np.ndarray | None = None
        self.samples: Any = None
        self.popularity = np.zeros(catalogue.num_items)

    def prepare(self, data: InteractionData, stage: Stage, users: np.ndarray) -> None:
        users = np.asarray(users, dtype=np.int64)
        self.now = stage_now(data, stage)
        vectors = self.model.user_embeddings(data, stage)
        if vectors is None:
            raise ValueError(f"{self.model.name} has no user embeddings: it cannot feed stage 1")
        self.user_vectors = torch.nn.functional.normalize(vectors.detach().float(), dim=1).numpy()
        # The user document: recent history and the request context, as the ranker reads them.
        self.samples = self.ranker.request(data, stage, users, np.zeros((len(users), 1), np.int64))
        self.popularity = np.log10(1.0 + positive_popularity(data, stage))
        self.ranker.train_mode(False)

    def retrieve(self, request: Request) -> tuple[np.ndarray, np.ndarray]:
        assert self.user_vectors is not None, "prepare() first"
        cosine = self.items @ self.user_vectors[request.user]  # (N,)
        cosine[~self.catalogue.in_stock] = -np.inf
        cosine[request.blocked] = -np.inf
        # The target_hits nearest eligible items (exact: no HNSW error in the quality numbers);
        # a partition, not a sort: the first phase re-orders them anyway.
        rows = _top_rows(cosine, self.target_hits)
        cos = cosine[rows].astype(np.float64)
        # prenormalized-angular closeness = 1 / (1 + angular distance) = 1 / (2 - cos)
        closeness = 1.0 / (2.0 - cos)
        first = (
            closeness
            + FIRST_PHASE_FRESH * self.catalogue.freshness(rows, self.now)
            + FIRST_PHASE_POP * self.popularity[rows]
        )
        keep = _top_rows(first, self.rank_count)
        order = keep[np.lexsort((rows[keep], -first[keep]))]  # score, then the lower item row
        return rows[order], closeness[order]

    @torch.no_grad()
    def rank(self, request: Request, items: np.ndarray) -> np.ndarray:
        ranker, samples, i = self.ranker, self.samples, request.position
        hist = samples.hist[i : i + 1]
        width = max(int((hist > 0).sum()), 1)  # right-padded: past the last item is padding
        codes = [
            torch.from_numpy(np.ascontiguousarray(samples.features[n][i : i + 1, :width]))
            for n in ranker.config.history_features
        ]
        state = ranker.encoder(
            torch.from_numpy(np.ascontiguousarray(hist[:, :width])),
            torch.from_numpy(samples.ctx[i : i + 1]),
            *codes,
        )  # (1, S)
        now = np.full(len(items), samples.now[i])
        cand = ranker.cand_vectors(items, now)  # (C, E)
        score = ranker.scorer(state.expand(len(items), -1), cand)[:, 0]
        if ranker.residual:
            score = (
                score
                + ranker.weight * ranker.retrieval_cosine(np.array([request.user]), items[None])[0]
            )
        return score.numpy().astype(np.float64) + GLOBAL_FRESH * self.catalogue.freshness(
            items, self.now
        )


def _top_rows(values: np.ndarray, k: int) -> np.ndarray:
    """Positions of the (at most) k largest finite values, unordered (a linear partition)."""
    finite = np.flatnonzero(np.isfinite(values))
    if len(finite) <= k:
        return finite
    part = np.argpartition(-values[finite], k - 1)[:k]
    return finite[part]


# ----- running the pipeline ----------------------------------------------------------------------
@dataclass
class PipelineRun:
    """The final top-k lists of one system and the time each stage took per request."""

    system: str
    users: np.ndarray  # (U,) user_idx
    lists: np.ndarray  # (U, k) item rows, -1 where the page ended short
    latency_ms: dict[str, np.ndarray]  # stage name (and "total") -> (U,)
    rules_moved: dict[str, int] = field(default_factory=dict)  # rule -> items moved, all users
    score_source: dict[str, int] = field(default_factory=dict)  # re-ranker score source counts


def blocked_items(data: InteractionData, stage: Stage) -> Any:
    """CSR (num_users, N): positive history before the stage, minus the user's stage targets."""
    seen = data.seen_matrix(stage).tocsr()
    targets = target_matrix(data, stage)
    blocked = seen - seen.multiply(targets)
    blocked.eliminate_zeros()
    return blocked.tocsr()


def run_pipeline(
    system: PipelineSystem,
    data: InteractionData,
    stage: Stage,
    users: np.ndarray,
    reranker: Reranker,
    exposure: Mapping[str, float] | None = None,
    k: int = K,
    served_k: int = SERVED_K,
    progress: bool = False,
) -> PipelineRun:
    """Every user through the three stages, one request at a time."""
    from tqdm.auto import tqdm

    users = np.asarray(users, dtype=np.int64)
    system.prepare(data, stage, users)
    blocked = blocked_items(data, stage)
    lists = np.full((len(users), k), -1, dtype=np.int64)
    times = {name: np.zeros(len(users)) for name in (*STAGES, "total")}
    row_of = {p: i for i, p in enumerate(system.catalogue.product_ids)}
    moved: dict[str, int] = {}
    sources: dict[str, int] = {}
    for i, user in enumerate(tqdm(users, desc=system.name, unit="user", disable=not progress)):
        request = Request(
            i, int(user), blocked.indices[blocked.indptr[user] : blocked.indptr[user + 1]]
        )
        t0 = time.perf_counter()
        items, retrieval = system.retrieve(request)
        t1 = time.perf_counter()
        ranked = system.rank(request, items)
        t2 = time.perf_counter()
        candidates = system.catalogue.candidates(items, retrieval, ranked, system.source)
        result = reranker.rerank(
            candidates,
            RequestContext(user_id=str(data.users.ids[user]), now=system.now, k=served_k),
            exposure,
        )
        t3 = time.perf_counter()
        page = [row_of[p] for p in result.product_ids[:k]]
        lists[i, : len(page)] = page
        for rule, count in result.summary["items_moved"].items():
            moved[rule] = moved.get(rule, 0) + count
        source = result.summary["score_source"]
        sources[source] = sources.get(source, 0) + 1
        times["retrieve"][i], times["rank"][i], times["rerank"][i] = t1 - t0, t2 - t1, t3 - t2
        times["total"][i] = t3 - t0
    return PipelineRun(
        system=system.name,
        users=users,
        lists=lists,
        latency_ms={name: values * 1000.0 for name, values in times.items()},
        rules_moved=moved,
        score_source=sources,
    )


# ----- metrics -----------------------------------------------------------------------------------
def padded_hits(lists: np.ndarray, targets) -> np.ndarray:
    """(U, k) bool hits of lists padded with -1 (a padded slot is never a hit)."""
    lists = np.asarray(lists, dtype=np.int64)
    sentinel = max(int(lists.max(initial=0)) + 1, targets.shape[1])
    return hit_matrix(np.where(lists >= 0, lists, sentinel), targets) & (lists >= 0)


def catalog_coverage(lists: np.ndarray, num_items: int) -> float:
    """|union of the lists' items| / num_items (the whole catalogue); padding ignored."""
    items = np.unique(lists[lists >= 0])
    return float(len(items) / num_items)


def _pair_mean(similarity: np.ndarray, valid: np.ndarray) -> float:
    """Mean over lists of 1 - mean similarity over valid pairs a < b; lists without one skipped.

    ``similarity`` (U, k, k), ``valid`` (U, k, k) bool (both items present and comparable)."""
    upper = np.triu(np.ones(similarity.shape[1:], dtype=bool), 1)
    valid = valid & upper
    n = valid.sum(axis=(1, 2))
    keep = n > 0
    if not keep.any():
        return float("nan")
    total = np.where(valid, similarity, 0.0).sum(axis=(1, 2))
    return float((1.0 - total[keep] / n[keep]).mean())


def ild_path(lists: np.ndarray, path_codes: np.ndarray) -> float:
    """ILD with the re-ranker's category similarity: shared path depth / the deeper path's depth.

    Pairs where either item is padding or has no category are left out."""
    codes = path_codes[np.maximum(lists, 0)]  # (U, k, D)
    depth = (codes >= 0).sum(axis=2)  # (U, k)
    present = (lists >= 0) & (depth > 0)
    same = (codes[:, :, None, :] == codes[:, None, :, :]) & (codes[:, :, None, :] >= 0)
    shared = same.sum(axis=3)  # (U, k, k); ids are full paths, so equal levels are a prefix
    deeper = np.maximum(depth[:, :, None], depth[:, None, :])
    similarity = shared / np.maximum(deeper, 1)
    return _pair_mean(similarity, present[:, :, None] & present[:, None, :])


def ild_labels(lists: np.ndarray, labels: np.ndarray) -> float:
    """ILD with equality similarity on ``labels`` (leaf category or seller code, -1 unknown)."""
    codes = np.where(lists >= 0, labels[np.maximum(lists, 0)], -1)
    present = codes >= 0
    similarity = (codes[:, :, None] == codes[:, None, :]).astype(np.float64)
    return _pair_mean(similarity, present[:, :, None] & present[:, None, :])


def ild_embedding(lists: np.ndarray, embeddings: np.ndarray) -> float:
    """ILD with cosine similarity of ``embeddings`` (one reference table for every system)."""
    vectors = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    block = unit[np.maximum(lists, 0)]  # (U, k, E)
    similarity = block @ block.transpose(0, 2, 1)
    present = lists >= 0
    return _pair_mean(similarity, present[:, :, None] & present[:, None, :])


def latency_summary(latency_ms: Mapping[str, np.ndarray]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, values in latency_ms.items():
        out[f"latency/{name}/p50_ms"] = float(np.percentile(values, 50))
        out[f"latency/{name}/p99_ms"] = float(np.percentile(values, 99))
        out[f"latency/{name}/mean_ms"] = float(np.mean(values))
    return out


def pipeline_metrics(
    run: PipelineRun,
    data: InteractionData,
    stage: Stage,
    catalogue: Catalogue,
    embeddings: np.ndarray | None = None,
    k: int = K,
    cold_max_history: int = 3,
    slices: Sequence[tuple[str, int]] = (("history_le_5", 5),),
) -> dict[str, float]:
    """Accuracy (Precision/HR/Recall/NDCG@k), coverage, ILD, the cold-start slice and latency."""
    lists = run.lists[:, :k]
    targets = target_matrix(data, stage)[run.users]
    hits = padded_hits(lists, targets)
    counts = target_counts(targets)
    precision = hits.sum(axis=1) / k
    hr = hits.any(axis=1).astype(np.float64)
    recall = hits.sum(axis=1) / counts
    ndcg = ndcg_at_k(hits, counts, k)
    out: dict[str, float] = {
        "users": float(len(run.users)),
        f"Precision@{k}": float(precision.mean()),
        f"HR@{k}": float(hr.mean()),
        f"Recall@{k}": float(recall.mean()),
        f"NDCG@{k}": float(ndcg.mean()),
        f"Coverage@{k}": catalog_coverage(lists, catalogue.num_items),
        f"ShortLists@{k}": float((lists < 0).any(axis=1).mean()),
        f"ILD-path@{k}": ild_path(lists, catalogue.path_codes),
        f"ILD-category@{k}": ild_labels(lists, catalogue.leaf_codes),
        f"ILD-seller@{k}": ild_labels(lists, catalogue.seller_codes),
    }
    if embeddings is not None:
        out[f"ILD-embedding@{k}"] = ild_embedding(lists, embeddings)
    groups = [("cold_users", cold_max_history), *slices]
    for prefix, limit in groups:
        members = np.isin(run.users, cold_users(data, stage, limit))
        out[f"{prefix}/users"] = float(members.sum())
        if members.any():
            out[f"{prefix}/Precision@{k}"] = float(precision[members].mean())
            out[f"{prefix}/HR@{k}"] = float(hr[members].mean())
            out[f"{prefix}/NDCG@{k}"] = float(ndcg[members].mean())
    out.update(latency_summary(run.latency_ms))
    return {key: value for key, value in out.items() if not np.isnan(value)}


def sample_users(data: InteractionData, stage: Stage, limit: int | None, seed: int = 0):
    """Evaluated users (at least one target in the stage), a seeded sample when ``limit``."""
    users = evaluation_users(data, stage)
    if limit and len(users) > limit:
        users = np.sort(np.random.default_rng(seed).choice(users, limit, replace=False))
    return users


def validation_ndcg(model: Recommender, data: InteractionData, users: np.ndarray, k: int = K):
    """Full-ranking NDCG@k on the validation stage (model selection; never test)."""
    from trainer.evaluation.ranking import full_ranking

    ranking = full_ranking(model, data, "valid", k, users=users)
    targets = target_matrix(data, "valid")[users]
    return float(ndcg_at_k(hit_matrix(ranking.items, targets), target_counts(targets), k).mean())
