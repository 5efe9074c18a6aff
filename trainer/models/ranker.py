"""The transformer ranker of the middle stage, split the way Vespa runs it.

- :class:`HistoryEncoder` reads only per-query data: the user's most recent events (``hist``,
  ``item_idx + 1`` newest first, 0-padded; optionally per-event codes ``hist_<feature>``) and the
  request context vector ``ctx`` (:mod:`trainer.ranking.features`), and returns ``user_state``
  (B, 64). A query token carrying the context attends over the history (bidirectional
  transformer, the blocks of :mod:`trainer.models.sequence_encoder`), so history and context
  interact. History items are represented by the retrieval model's item embeddings (a frozen
  table inside the encoder) through a learned projection: the ranker never retrains them.
- :class:`CandidateScorer` is a light per-candidate network over ``user_state`` and ``cand`` (the
  candidate's L2-normalised retrieval embedding, optionally followed by extra feature columns
  and by seller / category code columns, each looked up in a learned table): a bilinear term plus
  a small MLP over [u, c, u * c]. It returns ``score`` (B, 1).

The ONNX interface equals the ``ranking`` profile of vespa-subset.md §9: history_encoder
(``hist``, ``ctx`` -> ``user_state``) and ranker (``user_state``, ``cand`` -> ``score``). With
``history_features`` or ``cand_features`` set it grows as docs/ranker.md describes.

Training (:meth:`Ranker.fit`): impression outcomes where the data has impressions (binary
cross-entropy: clicked/favourited/carted/bought versus shown and ignored) plus next-item targets
with sampled negatives (softmax over the target and its negatives, half of them drawn from the
retrieval model's own top candidates: the re-ranking task). The epoch is selected on the
validation re-ranking NDCG@10, never on test. The model scores given candidates, not the
catalogue, so it is not a :class:`~trainer.models.base.Recommender` and stays out of the registry.

Design reference: the two-stage "user tower once per query, light scorer per candidate" split of
Vespa's phased ranking (docs.vespa.ai/en/ranking/phased-ranking.html); encoder blocks as in
BERT4Rec (https://arxiv.org/abs/1904.06690).
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainer.data.interactions import InteractionData, Stage
from trainer.evaluation.metrics import hit_matrix, ndcg_at_k, precision_at_k
from trainer.evaluation.ranking import evaluation_users, target_matrix
from trainer.models.sequence_encoder import Block, _init_weights
from trainer.models.training import epoch_summary
from trainer.ranking.features import (
    CAND_CODES,
    CAND_FEATURES,
    CONTEXT_DIM,
    CandidateFeatures,
)
from trainer.ranking.samples import (
    HISTORY_FEATURES,
    HistoryIndex,
    Samples,
    draw_negatives,
    history_events,
    impression_samples,
    next_item_samples,
    request_samples,
    stage_target_samples,
)

STATE_DIM = 64  # user_state float[1][64] of §9
HISTORY_INPUT, CONTEXT_INPUT, STATE_OUTPUT = "hist", "ctx", "user_state"
STATE_INPUT, CAND_INPUT, SCORE_OUTPUT = "user_state", "cand", "score"
MAX_BATCH = 4096


@dataclass(frozen=True)
class RankerConfig:
    history_len: int = 50  # query(hist) d1[50]
    dim: int = 64  # transformer width
    state_dim: int = STATE_DIM
    blocks: int = 2
    heads: int = 2
    dropout: float = 0.1
    hidden: int = 128  # scorer MLP width
    # Event types forming the history; None: every type except impressions.
    history_events: tuple[str, ...] | None = None
    # Per-event codes beside the item (any of event, hour, device, location): each adds an
    # ONNX input hist_<name>. Empty keeps the §9 interface exactly.
    history_features: tuple[str, ...] = ()
    location_buckets: int = 64
    # Extra cand columns after the embedding (any of price, margin, popularity, freshness).
    cand_features: tuple[str, ...] = ()
    # Candidate codes after those columns (any of seller, category): the product's index in the
    # training id map as a float cell, looked up in a learned table of the scorer (index + 1;
    # 0 = unknown). The Ranker needs the maps (``vocabularies=``, features.code_vocabularies).
    cand_codes: tuple[str, ...] = ()
    negatives: int = 64  # per next-item target
    hard_share: float = 0.5  # of them from the retrieval candidates (when given)
    impression_window: int = 3600  # seconds from impression to engagement that count
    max_impressions: int = 200_000  # training impressions per epoch pool (sampled once)
    max_targets: int = 200_000  # next-item targets (sampled once)
    impression_weight: float = 1.0
    epochs: int = 30
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 3  # validation rounds without improvement; 0 = never stop early
    valid_users: int = 2000  # fixed validation sample for epoch selection; 0 = all
    valid_candidates: int = 100  # re-rank this many retrieval candidates in validation
    time_budget: float = 0.0  # seconds of training; 0 = no limit
    seed: int = 0
    # Residual on retrieval (used when the Ranker is given the retrieval user embeddings): the
    # score is scorer(user_state, cand) + w * cos(retrieval user, candidate), w learned from
    # this start value (or fixed). The scorer starts at zero, so an untrained ranker keeps the
    # retrieval (cosine) order; serving adds w * cos in the global phase (docs/ranker.md).
    retrieval_weight: float = 10.0
    learn_retrieval_weight: bool = True
    # Where next-item targets come from: "train" (training events, history before each) or
    # "valid" (the validation targets, which retrieval never saw: the re-ranking task itself;
    # the valid_users that select the epoch are left out of training).
    target_stage: str = "train"

    def __post_init__(self) -> None:
        bad = [n for n in self.history_features if n not in HISTORY_FEATURES]
        if bad:
            raise ValueError(f"ranker: unknown history feature {bad[0]!r} ({HISTORY_FEATURES})")
        bad = [n for n in self.cand_features if n not in CAND_FEATURES]
        if bad:
            raise ValueError(f"ranker: unknown cand feature {bad[0]!r} ({CAND_FEATURES})")
        bad = [n for n in self.cand_codes if n not in CAND_CODES]
        if bad:
            raise ValueError(f"ranker: unknown cand code {bad[0]!r} ({CAND_CODES})")
        if self.history_len < 1 or self.negatives < 1 or self.location_buckets < 3:
            raise ValueError("ranker: history_len, negatives >= 1 and location_buckets >= 3")
        if self.target_stage not in ("train", "valid"):
            raise ValueError(f"ranker: target_stage {self.target_stage!r} (train or valid)")
        if self.dim % self.heads:
            raise ValueError(f"ranker: dim {self.dim} not divisible by heads {self.heads}")


def feature_sizes(config: RankerConfig) -> dict[str, int]:
    from trainer.data.schema import DEVICES, EVENT_TYPES

    sizes = {
        "event": len(EVENT_TYPES) + 2,
        "hour": 26,
        "device": len(DEVICES) + 2,
        "location": config.location_buckets,
    }
    return {name: sizes[name] for name in config.history_features}


class HistoryEncoder(nn.Module):
    """(hist (B, L) int64, ctx (B, 16) float32, *codes (B, L) int64) -> user_state (B, S)."""

    def __init__(self, config: RankerConfig, item_vectors: torch.Tensor):
        super().__init__()
        self.feature_names = tuple(config.history_features)
        width = item_vectors.shape[1]
        # Row 0 is padding; rows 1.. are the retrieval model's (normalised) item vectors.
        table = torch.cat([torch.zeros(1, width), item_vectors.float()])
        self.register_buffer("item_table", table, persistent=True)
        self.item_proj = nn.Linear(width, config.dim)
        self.position = nn.Embedding(config.history_len, config.dim)
        self.features = nn.ModuleDict(
            {
                n: nn.Embedding(s, config.dim, padding_idx=0)
                for n, s in feature_sizes(config).items()
            }
        )
        self.ctx_proj = nn.Linear(CONTEXT_DIM, config.dim)
        self.query = nn.Parameter(torch.zeros(config.dim))
        self.norm = nn.LayerNorm(config.dim, eps=1e-12)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            Block(config.dim, config.heads, config.dropout, config.dropout, "full", 64)
            for _ in range(config.blocks)
        )
        self.out = nn.Linear(config.dim, config.state_dim)
        for module in (self.item_proj, self.position, self.features, self.ctx_proj, self.blocks):
            module.apply(_init_weights)

    def forward(self, hist: torch.Tensor, ctx: torch.Tensor, *codes: torch.Tensor) -> torch.Tensor:
        length = hist.shape[1]
        valid = hist > 0  # (B, L)
        x = self.item_proj(self.item_table[hist]) + self.position.weight[:length][None]  # (B,L,D)
        for table, code in zip(self.features.values(), codes, strict=True):
            x = x + table(code)
        query = (self.query + self.ctx_proj(ctx))[:, None]  # (B, 1, D)
        x = torch.cat([query, x], dim=1)  # (B, 1 + L, D)
        valid = torch.cat([torch.ones_like(valid[:, :1]), valid], dim=1)
        x = self.dropout(self.norm(x))
        keep = valid[..., None].to(x.dtype)
        for block in self.blocks:
            x = block(x, valid, False) * keep
        return self.out(x[:, 0])  # (B, S)


class CandidateScorer(nn.Module):
    """(user_state (..., S), cand (..., C)) -> score (..., 1).

    With ``code_sizes`` the last ``len(code_sizes)`` columns of ``cand`` are codes (a training
    map index as a float, -1 unknown): each is rounded, shifted to index + 1 (0 for anything
    outside [0, size - 1), the reserved unknown row) and its learned vector added to the
    projected candidate."""

    def __init__(
        self,
        config: RankerConfig,
        cand_dim: int,
        start_at_zero: bool = False,
        code_sizes: tuple[int, ...] = (),
    ):
        super().__init__()
        self.dense = cand_dim - len(code_sizes)
        self.code_sizes = tuple(int(n) for n in code_sizes)
        self.cand_proj = nn.Linear(self.dense, config.state_dim)
        self.codes = nn.ModuleList(nn.Embedding(n, config.state_dim) for n in self.code_sizes)
        self.mlp = nn.Sequential(
            nn.Linear(3 * config.state_dim, config.hidden),
            nn.GELU(),
            nn.Linear(config.hidden, 1),
        )
        self.apply(_init_weights)
        if start_at_zero:
            # cand_proj = 0 and the last layer = 0: the score is 0 for every candidate, so a
            # residual ranker starts exactly at retrieval order; gradients still reach both.
            for layer in (self.cand_proj, self.mlp[-1]):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
            for table in self.codes:
                nn.init.zeros_(table.weight)

    def forward(self, user_state: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        c = self.cand_proj(cand[..., : self.dense])  # (..., S)
        for k, (table, size) in enumerate(zip(self.codes, self.code_sizes, strict=True)):
            code = torch.round(cand[..., self.dense + k]).to(torch.int64)
            known = (code >= 0) & (code < size - 1)
            c = c + table(torch.where(known, code + 1, torch.zeros_like(code)))
        both = user_state * c
        return self.mlp(torch.cat([user_state, c, both], dim=-1)) + both.sum(-1, keepdim=True)


def normalise(vectors: torch.Tensor) -> torch.Tensor:
    """L2-normalised rows: the product embeddings are fed to Vespa normalised (§9)."""
    return F.normalize(vectors.detach().float(), dim=1)


class Ranker:
    """History encoder + candidate scorer over frozen retrieval item embeddings.

    With ``user_embeddings`` (the retrieval model's, frozen) the ranker is a residual on
    retrieval: score = scorer output + w * cos(user, candidate), the cosine Vespa's
    prenormalized-angular ``closeness`` is built from (cos = 2 - 1 / closeness)."""

    def __init__(
        self,
        config: RankerConfig,
        item_embeddings: torch.Tensor,
        normalised: bool = False,
        user_embeddings: torch.Tensor | None = None,
        vocabularies: dict[str, tuple[str, ...]] | None = None,
    ):
        """``vocabularies``: the training id map of each ``config.cand_codes`` entry
        (:func:`trainer.ranking.features.code_vocabularies`); required when codes are set."""
        self.config = config
        vocabularies = dict(vocabularies or {})
        missing = [n for n in config.cand_codes if n not in vocabularies]
        if missing:
            raise ValueError(f"ranker: cand code {missing[0]!r} needs its id map (vocabularies=)")
        self.vocabularies = {n: tuple(vocabularies[n]) for n in config.cand_codes}
        # (N, E); a checkpoint stores them normalised already (normalising again moves bits).
        self.item_vectors = item_embeddings.float() if normalised else normalise(item_embeddings)
        self.num_items = self.item_vectors.shape[0]
        self.user_vectors: torch.Tensor | None = None
        if user_embeddings is not None:
            if user_embeddings.shape[1] != self.item_vectors.shape[1]:
                raise ValueError(
                    f"ranker: user embeddings are {user_embeddings.shape[1]}-d, "
                    f"item embeddings {self.item_vectors.shape[1]}-d"
                )
            users = user_embeddings.float()
            self.user_vectors = users if normalised else normalise(users)
        self.retrieval_weight = nn.Parameter(
            torch.tensor(float(config.retrieval_weight)),
            requires_grad=config.learn_retrieval_weight,
        )
        self.encoder = HistoryEncoder(config, self.item_vectors)
        code_sizes = tuple(len(self.vocabularies[n]) + 1 for n in config.cand_codes)
        self.scorer = CandidateScorer(config, self.cand_dim, self.residual, code_sizes)
        self.cand_table: CandidateFeatures | None = None

    @property
    def weight(self) -> float:
        """w of the residual term (the global phase's constant)."""
        return float(self.retrieval_weight.detach())

    @property
    def residual(self) -> bool:
        """True when the score adds w * cos(retrieval user, candidate)."""
        return self.user_vectors is not None

    def retrieval_cosine(self, users: np.ndarray, items: np.ndarray) -> torch.Tensor:
        """(*items.shape) cosine of each user's retrieval vector and its candidates' vectors."""
        if self.user_vectors is None:
            raise RuntimeError("ranker: no retrieval user embeddings (not a residual ranker)")
        users = torch.as_tensor(np.asarray(users, dtype=np.int64))
        u = self.user_vectors[users].reshape(len(users), *(1,) * (np.ndim(items) - 1), -1)
        return (u * self.item_vectors[torch.as_tensor(items)]).sum(-1)

    @property
    def embedding_dim(self) -> int:
        return self.item_vectors.shape[1]

    @property
    def cand_dim(self) -> int:
        return self.embedding_dim + len(self.config.cand_features) + len(self.config.cand_codes)

    def parameters(self):
        weight = (
            [self.retrieval_weight] if self.residual and self.config.learn_retrieval_weight else []
        )
        return [*self.encoder.parameters(), *self.scorer.parameters(), *weight]

    def train_mode(self, on: bool) -> None:
        self.encoder.train(on)
        self.scorer.train(on)

    # ----- inputs -----------------------------------------------------------------------------
    def cand_vectors(self, items: np.ndarray, now: np.ndarray) -> torch.Tensor:
        """(*items.shape, C) cand rows: embedding, then the extra feature columns."""
        emb = self.item_vectors[torch.as_tensor(items)]
        if not self.config.cand_features and not self.config.cand_codes:
            return emb
        if self.cand_table is None:
            raise RuntimeError("cand_features need bind(data) before scoring")
        extra = torch.from_numpy(self.cand_table(items, now))
        return torch.cat([emb, extra], dim=-1)

    def bind(self, data: InteractionData, popularity: np.ndarray | None = None) -> None:
        """Attach the candidate feature table of ``data`` (needed when cand_features is set).
        ``popularity``: per-item positive-event counts replacing the training events' (what a
        serving system holds, e.g. the fed ``attribute(popularity)``)."""
        if data.num_items != self.num_items:
            raise ValueError(
                f"ranker: data has {data.num_items} items, the embeddings {self.num_items}"
            )
        self.cand_table = CandidateFeatures(
            data, tuple(self.config.cand_features), popularity, self.vocabularies
        )

    def _encode(self, samples: Samples) -> torch.Tensor:
        # Histories are right-padded, so columns past the longest one are all padding: cutting
        # them changes nothing (positions count from the newest) and saves most of the work.
        width = max(int((samples.hist > 0).sum(axis=1).max(initial=0)), 1)
        hist = torch.from_numpy(np.ascontiguousarray(samples.hist[:, :width]))
        codes = [
            torch.from_numpy(np.ascontiguousarray(samples.features[n][:, :width]))
            for n in self.config.history_features
        ]
        return self.encoder(hist, torch.from_numpy(samples.ctx), *codes)

    def _scores(self, samples: Samples) -> torch.Tensor:
        """(N, G) scores of each sample's candidate group."""
        state = self._encode(samples)  # (N, S)
        cand = self.cand_vectors(samples.items, samples.now)  # (N, G, C)
        groups = samples.items.shape[1]
        scores = self.scorer(state[:, None].expand(-1, groups, -1), cand).squeeze(-1)
        if self.residual:
            scores = scores + self.retrieval_weight * self.retrieval_cosine(
                samples.users, samples.items
            )
        return scores

    # ----- scoring ----------------------------------------------------------------------------
    @torch.no_grad()
    def score_candidates(
        self,
        data: InteractionData,
        stage: Stage,
        users: np.ndarray,
        items: np.ndarray,
        batch_size: int = 256,
    ) -> np.ndarray:
        """(U, C) float32 scores of ``items`` (U, C) for ``users``, from their ``stage`` history
        (for a residual ranker: scorer output + w * retrieval cosine, as the global phase)."""
        self.train_mode(False)
        if (self.config.cand_features or self.config.cand_codes) and self.cand_table is None:
            self.bind(data)
        samples = self.request(data, stage, users, items)
        out = np.empty(np.shape(items), dtype=np.float32)
        for start in range(0, len(samples), batch_size):
            rows = np.arange(start, min(start + batch_size, len(samples)))
            out[rows] = self._scores(samples.take(rows)).numpy()
        return out

    def request(
        self, data: InteractionData, stage: Stage, users: np.ndarray, items: np.ndarray
    ) -> Samples:
        """The model inputs for ``users`` at ``stage`` (also what the ONNX files are fed)."""
        c = self.config
        return request_samples(
            data,
            stage,
            users,
            items,
            c.history_len,
            c.history_features,
            c.history_events,
            c.location_buckets,
        )

    # ----- training ---------------------------------------------------------------------------
    def fit(
        self,
        data: InteractionData,
        candidates: np.ndarray | None = None,
        progress: bool = True,
    ) -> dict[str, Any]:
        """Train on ``data.train``. ``candidates`` (num_users, H): the retrieval model's top
        items per user from training history (seen excluded), used for hard negatives and for the
        validation re-ranking that selects the epoch. Returns a report (epochs, history)."""
        c = self.config
        if data.num_items != self.num_items:
            raise ValueError(
                f"ranker: data has {data.num_items} items, the embeddings {self.num_items}"
            )
        if candidates is not None and candidates.shape[0] != data.num_users:
            raise ValueError(
                f"ranker: candidates has {candidates.shape[0]} rows, data {data.num_users} users"
            )
        self.bind(data)
        torch.manual_seed(c.seed)
        rng = np.random.default_rng(c.seed)
        index = HistoryIndex(history_events(data, data.train, c.history_events), c.location_buckets)
        feats = c.history_features
        shown = None
        if c.impression_weight > 0:
            shown = impression_samples(
                data, index, c.history_len, feats, c.impression_window, c.max_impressions, rng
            )
        valid = self._validation_set(data, candidates, rng)
        if c.target_stage == "valid":
            held_out = valid[0] if valid is not None else np.zeros(0, dtype=np.int64)
            nexts = stage_target_samples(
                data, "valid", index, c.history_len, feats, held_out, c.max_targets, rng
            )
        else:
            nexts = next_item_samples(data, index, c.history_len, feats, c.max_targets, rng)
        if shown is None and nexts is None:
            raise ValueError("ranker: no training samples (no impressions and no next items)")
        optimizer = torch.optim.AdamW(self.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        n_next = len(nexts) if nexts is not None else 0
        n_shown = len(shown) if shown is not None else 0
        steps = max(math.ceil(max(n_next, n_shown) / c.batch_size), 1)
        shown_batch = max(1, math.ceil(n_shown / steps)) if n_shown else 0
        next_batch = max(1, math.ceil(n_next / steps)) if n_next else 0
        history: list[dict[str, float]] = []
        best, best_epoch, best_state, stale = -1.0, 0, None, 0
        started = time.perf_counter()
        for epoch in range(1, c.epochs + 1):
            self.train_mode(True)
            order_s = rng.permutation(n_shown)
            order_n = rng.permutation(n_next)
            total = 0.0
            for step in range(steps):
                loss = torch.zeros(())
                if n_shown:
                    rows = order_s[step * shown_batch : (step + 1) * shown_batch]
                    if len(rows):
                        batch = shown.take(rows)
                        logits = self._scores(batch)
                        target = torch.from_numpy(batch.labels)
                        loss = loss + c.impression_weight * F.binary_cross_entropy_with_logits(
                            logits, target
                        )
                if n_next:
                    rows = order_n[step * next_batch : (step + 1) * next_batch]
                    if len(rows):
                        batch = nexts.take(rows)
                        negs = draw_negatives(
                            batch.items[:, 0],
                            batch.users,
                            c.negatives,
                            self.num_items,
                            rng,
                            candidates,
                            c.hard_share,
                        )
                        batch = dataclasses.replace(
                            batch, items=np.concatenate([batch.items, negs], axis=1)
                        )
                        logits = self._scores(batch)  # (N, 1 + K), target first
                        zeros = torch.zeros(len(rows), dtype=torch.long)
                        loss = loss + F.cross_entropy(logits, zeros)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach())
                if c.time_budget and time.perf_counter() - started > c.time_budget:
                    break
            line = {"epoch": epoch, "loss": total / steps, "seconds": time.perf_counter() - started}
            if valid is not None:
                line["valid_ndcg@10"] = self._validate(data, valid)
                if line["valid_ndcg@10"] > best:
                    best, best_epoch, stale = line["valid_ndcg@10"], epoch, 0
                    best_state = self.state_dict()
                else:
                    stale += 1
            history.append(line)
            if progress:
                print(epoch_summary(line), flush=True)
            if c.patience and stale >= c.patience:
                break
            if c.time_budget and time.perf_counter() - started > c.time_budget:
                break
        if best_state is not None:
            self.load_state_dict(best_state)
        self.train_mode(False)
        return {
            "epochs": len(history),
            "best_epoch": best_epoch or None,
            "seconds": time.perf_counter() - started,
            "impression_samples": n_shown,
            "next_item_samples": n_next,
            "history": history,
        }

    def _validation_set(self, data, candidates, rng) -> tuple[np.ndarray, np.ndarray] | None:
        if candidates is None or not len(data.valid):
            return None
        users = evaluation_users(data, "valid")
        if self.config.valid_users and len(users) > self.config.valid_users:
            users = np.sort(rng.choice(users, self.config.valid_users, replace=False))
        return users, candidates[users, : self.config.valid_candidates]

    def _validate(self, data: InteractionData, valid: tuple[np.ndarray, np.ndarray]) -> float:
        users, items = valid
        scores = self.score_candidates(data, "valid", users, items)
        reranked = np.take_along_axis(items, np.argsort(-scores, axis=1, kind="stable"), axis=1)
        hits = hit_matrix(reranked[:, :10], target_matrix(data, "valid")[users])
        counts = np.asarray(target_matrix(data, "valid")[users].sum(axis=1)).ravel()
        return float(ndcg_at_k(hits, counts, 10).mean())

    # ----- persistence ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "encoder": {k: v.clone() for k, v in self.encoder.state_dict().items()},
            "scorer": {k: v.clone() for k, v in self.scorer.state_dict().items()},
            "retrieval_weight": float(self.retrieval_weight.detach()),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.encoder.load_state_dict(state["encoder"])
        self.scorer.load_state_dict(state["scorer"])
        with torch.no_grad():
            self.retrieval_weight.fill_(state.get("retrieval_weight", self.config.retrieval_weight))


def save_ranker(ranker: Ranker, path: Path, **extra: Any) -> Path:
    """Config, item vectors and weights in one file; :func:`load_ranker` rebuilds from it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "model": "ranker",
            "config": dataclasses.asdict(ranker.config),
            "item_vectors": ranker.item_vectors,
            "user_vectors": ranker.user_vectors,
            "vocabularies": {k: list(v) for k, v in ranker.vocabularies.items()},
            "state": ranker.state_dict(),
            "extra": extra,
        },
        path,
    )
    return path


def load_ranker(path: Path) -> Ranker:
    raw = torch.load(Path(path), map_location="cpu", weights_only=False)
    if raw.get("model") != "ranker":
        raise ValueError(f"{path}: not a ranker checkpoint (model={raw.get('model')!r})")
    config = dict(raw["config"])
    for key in ("history_features", "cand_features", "cand_codes", "history_events"):
        if config.get(key) is not None:
            config[key] = tuple(config[key])
    ranker = Ranker(
        RankerConfig(**config),
        raw["item_vectors"],
        normalised=True,
        user_embeddings=raw.get("user_vectors"),
        vocabularies={k: tuple(v) for k, v in (raw.get("vocabularies") or {}).items()},
    )
    ranker.load_state_dict(raw["state"])
    ranker.train_mode(False)
    return ranker


# ----- offline evaluation as a re-ranker --------------------------------------------------------
def rerank_evaluation(
    ranker: Ranker,
    data: InteractionData,
    stage: Stage,
    users: np.ndarray,
    candidates: np.ndarray,
    k: int = 10,
) -> dict[str, float]:
    """NDCG@k and Precision@k of retrieval order vs the ranker's order on the same lists.

    ``candidates`` (U, C): the retrieval model's top C items per user, best first, seen items
    excluded. Targets outside the lists count as misses for both orders.
    """
    targets = target_matrix(data, stage)[users]
    counts = np.asarray(targets.sum(axis=1)).ravel()
    scores = ranker.score_candidates(data, stage, users, candidates)
    reranked = np.take_along_axis(candidates, np.argsort(-scores, axis=1, kind="stable"), axis=1)
    out: dict[str, float] = {"users": float(len(users)), "candidates": float(candidates.shape[1])}
    for name, lists in (("retrieval", candidates), ("ranker", reranked)):
        hits = hit_matrix(lists[:, :k], targets)
        out[f"{name}/NDCG@{k}"] = float(ndcg_at_k(hits, counts, k).mean())
        out[f"{name}/Precision@{k}"] = float(precision_at_k(hits, k).mean())
    recall = hit_matrix(candidates, targets).sum(axis=1) / np.maximum(counts, 1)
    out[f"candidate_recall@{candidates.shape[1]}"] = float(recall.mean())
    return out


# ----- ONNX export -------------------------------------------------------------------------------
class _Encoder(nn.Module):
    def __init__(self, encoder: HistoryEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, hist, ctx, *codes):
        return self.encoder(hist, ctx, *codes)


def encoder_input_names(config: RankerConfig) -> list[str]:
    return [HISTORY_INPUT, CONTEXT_INPUT, *(f"hist_{n}" for n in config.history_features)]


def encoder_example(
    ranker: Ranker, batch: int, length: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """Random valid inputs: each row's history is a random-length prefix (newest first)."""
    rng = np.random.default_rng(seed)
    used = rng.integers(1, length + 1, size=batch)
    real = np.arange(length)[None, :] < used[:, None]  # (B, L) right padding
    out = {
        HISTORY_INPUT: np.where(real, rng.integers(1, ranker.num_items + 1, (batch, length)), 0),
        CONTEXT_INPUT: rng.random((batch, CONTEXT_DIM)).astype(np.float32),
    }
    for name, size in feature_sizes(ranker.config).items():
        out[f"hist_{name}"] = np.where(real, rng.integers(1, size, (batch, length)), 0)
    return {k: v.astype(np.int64) if v.dtype.kind == "i" else v for k, v in out.items()}


def _export(module: nn.Module, args: tuple, names: list[str], output: str, shapes, path: Path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The exporter's own deprecation notices are not ours (as in trainer.models.export).
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*axis name.*", category=UserWarning)
        program = torch.onnx.export(
            module.eval(),
            args,
            dynamo=True,
            external_data=False,
            input_names=names,
            output_names=[output],
            dynamic_shapes=shapes,
            verbose=False,
        )
        program.save(str(path), external_data=False)
    return path


def export_history_encoder(ranker: Ranker, path: Path) -> Path:
    """hist int64 (B, L<=history_len), ctx float32 (B, 16) [, hist_<f> int64 (B, L)] ->
    user_state float32 (B, 64); one self-contained file."""
    ranker.train_mode(False)
    length = ranker.config.history_len
    inputs = encoder_example(ranker, 2, length)
    names = encoder_input_names(ranker.config)
    args = tuple(torch.as_tensor(inputs[n]) for n in names)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    seq = torch.export.Dim("seq", min=1, max=length)
    codes = tuple({0: batch, 1: seq} for _ in names[2:])
    # Structure of forward(hist, ctx, *codes); without codes the varargs entry is left out.
    shapes = ({0: batch, 1: seq}, {0: batch}, codes) if codes else ({0: batch, 1: seq}, {0: batch})
    return _export(_Encoder(ranker.encoder), args, names, STATE_OUTPUT, shapes, path)


def export_candidate_scorer(ranker: Ranker, path: Path) -> Path:
    """user_state float32 (B, 64), cand float32 (B, C) -> score float32 (B, 1)."""
    ranker.train_mode(False)
    args = (torch.randn(2, ranker.config.state_dim), torch.randn(2, ranker.cand_dim))
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    shapes = ({0: batch}, {0: batch})
    names = [STATE_INPUT, CAND_INPUT]
    return _export(ranker.scorer, args, names, SCORE_OUTPUT, shapes, path)


@torch.no_grad()
def reference_user_state(ranker: Ranker, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """Eager PyTorch output for the ONNX history encoder's inputs (for parity checks)."""
    ranker.train_mode(False)
    names = encoder_input_names(ranker.config)
    return ranker.encoder(*(torch.as_tensor(inputs[n]) for n in names)).numpy()


@torch.no_grad()
def reference_score(ranker: Ranker, user_state: np.ndarray, cand: np.ndarray) -> np.ndarray:
    ranker.train_mode(False)
    return ranker.scorer(torch.as_tensor(user_state), torch.as_tensor(cand)).numpy()
