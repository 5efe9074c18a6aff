"""The skeleton shared by the sequence recommenders (SASRec, BERT4Rec).

A subclass supplies its network (an ``nn.Module`` with ``user_vector(items, features)`` and
``item_vectors()``), its training examples and its loss; this class holds the training loop
(Adam, one log line per epoch, early stopping on validation NDCG@10 under full ranking with seen
items excluded, the best epoch's weights kept), scoring, embeddings and persistence.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from trainer.data.interactions import InteractionData, Stage
from trainer.evaluation.sampled import sample_negatives
from trainer.models.base import Recommender, TrainReport
from trainer.models.sequence_encoder import SequenceEncoder
from trainer.models.sequences import (
    FEATURES,
    QUERY_FEATURES,
    UNKNOWN,
    Tokens,
    feature_vocab_sizes,
    request_context,
    user_sequences,
)
from trainer.models.training import epoch_summary

SCORE_BATCH = 1024


@dataclass(frozen=True)
class SequenceConfig:
    """The fields every sequence recommender shares; a model's config adds its loss's fields and
    overrides the defaults its paper uses."""

    max_len: int = 50
    dim: int = 64
    blocks: int = 2
    heads: int = 2
    dropout: float = 0.1
    attention_dropout: float = 0.1
    epochs: int = 200
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    adam_beta2: float = 0.999  # the SASRec paper's code uses 0.98
    # Context codes embedded beside each item: any of event, gap, hour, device, location.
    features: tuple[str, ...] = ()
    location_buckets: int = 256
    # Request context added to the user vector (any of gap, hour, device, location); in training
    # each target's own context, replaced by "unknown" with probability query_dropout.
    query_features: tuple[str, ...] = ()
    query_dropout: float = 0.1
    # Event types that form the history; None keeps the dataset's positive events.
    history_events: tuple[str, ...] | None = None
    attention: str = "full"  # or "local" for long histories (trainer.models.attention)
    block_size: int = 64
    patience: int = 10  # validation rounds without improvement before stopping; 0 = never
    eval_every: int = 1
    valid_users: int = 10000  # validation subsample for epoch selection; 0 = all
    # Epoch selection on NDCG@10 under full ranking (0), or among this many seeded uniform
    # negatives per user (100: the protocol of the SASRec paper's sampled anchors).
    valid_negatives: int = 0
    max_seconds: float = 0.0  # stop training after this much wall time; 0 = no limit
    seed: int = 0
    device: str = "cpu"  # training device ("cuda" where available); scoring runs on CPU


def build_encoder(
    config: SequenceConfig, num_tokens: int, causal: bool, feature_sizes: dict[str, int]
) -> SequenceEncoder:
    """The transformer encoder of ``config`` over ``num_tokens`` item tokens (padding included)."""
    return SequenceEncoder(
        num_tokens=num_tokens,
        dim=config.dim,
        max_len=config.max_len,
        blocks=config.blocks,
        heads=config.heads,
        dropout=config.dropout,
        attention_dropout=config.attention_dropout,
        causal=causal,
        feature_sizes=feature_sizes,
        attention=config.attention,
        block_size=config.block_size,
    )


def length_groups(batch: dict[str, torch.Tensor], rows: int) -> list[dict[str, torch.Tensor]]:
    """``batch`` cut into groups of ``rows`` examples of similar length, each trimmed to its
    longest sequence. Exact for encoders whose output ignores left padding (positions counted
    from the newest token); (B,) tensors are split alongside."""
    lengths = (batch["items"] > 0).sum(1)  # (B,)
    order = torch.argsort(lengths, stable=True)
    groups = []
    for chunk in order.split(rows):
        width = max(int(lengths[chunk].max()), 1)
        groups.append(
            {name: t[chunk, -width:] if t.dim() > 1 else t[chunk] for name, t in batch.items()}
        )
    return groups


class SequenceRecommender(Recommender):
    """Common fit / score / persistence for models that read a user's recent event sequence."""

    network: nn.Module

    def __init__(self, config: Any, num_users: int, num_items: int):
        super().__init__(config, num_users, num_items)
        unknown = [f for f in config.features if f not in FEATURES]
        if unknown:
            raise ValueError(f"features: unknown feature {unknown[0]!r} ({', '.join(FEATURES)})")
        unknown = [f for f in config.query_features if f not in QUERY_FEATURES]
        if unknown:
            raise ValueError(
                f"query_features: unknown feature {unknown[0]!r} ({', '.join(QUERY_FEATURES)})"
            )
        torch.manual_seed(config.seed)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.network = self.build_network()

    # --- what a subclass defines -------------------------------------------------------------
    @abstractmethod
    def build_network(self) -> nn.Module: ...

    @abstractmethod
    def training_examples(self, data: InteractionData) -> dict[str, torch.Tensor]:
        """Tensors with a common first dimension (examples) that :meth:`loss` reads in batches.

        (W, L) token tensors are trimmed to each batch's longest sequence; (W,) tensors (per-example
        ids such as the user) are passed whole."""

    @abstractmethod
    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...

    @property
    def history_length(self) -> int:
        """How many history tokens the user encoder reads."""
        return self.config.max_len

    # --- shared -----------------------------------------------------------------------------
    def feature_sizes(self) -> dict[str, int]:
        sizes = feature_vocab_sizes(self.config.location_buckets)
        return {name: sizes[name] for name in self.config.features}

    def query_sizes(self) -> dict[str, int]:
        sizes = feature_vocab_sizes(self.config.location_buckets)
        return {name: sizes[name] for name in self.config.query_features}

    def _codes(self, name: str, codes: np.ndarray) -> torch.Tensor:
        # Locations are hashed into the bucket table, so the model size does not depend on data.
        if name == "location":
            codes = np.where(codes >= 2, (codes - 2) % self.config.location_buckets + 2, codes)
        return torch.as_tensor(codes)

    def feature_tensors(self, tokens: Tokens) -> dict[str, torch.Tensor]:
        """The configured per-token context codes as tensors."""
        return {name: self._codes(name, getattr(tokens, name)) for name in self.config.features}

    def query_tensors(self, codes: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """The configured request-context codes as tensors."""
        return {name: self._codes(name, codes[name]) for name in self.config.query_features}

    def drop_query(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch's request codes, each known code hidden with probability query_dropout."""
        out = {}
        for key, codes in batch.items():
            if key.startswith("q_"):
                draw = torch.rand(codes.shape, generator=self.generator).to(codes.device)
                hide = (codes > 0) & (draw < self.config.query_dropout)
                out[key[2:]] = codes.masked_fill(hide, UNKNOWN)
        return out

    def history_tokens(self, data: InteractionData, stage: Stage, users: np.ndarray) -> Tokens:
        return user_sequences(data, stage, users, self.history_length, self.config.history_events)

    def fit(self, data: InteractionData, progress: bool = True) -> TrainReport:
        self._check_sizes(data)
        cfg = self.config
        device = torch.device(cfg.device)
        self.network.to(device)
        examples = {k: v.to(device) for k, v in self.training_examples(data).items()}
        lengths = (examples["items"] > 0).sum(1).cpu()  # (W,)
        count = len(lengths)
        if count == 0:
            raise ValueError(
                f"{self.name}: dataset {data.info.name!r} has no training sequence with a target "
                "(every user needs at least two training events of the history event types)"
            )
        # The fused kernel does the same Adam update in one pass over each tensor instead of a
        # dozen; on CPU the item table's update was a sixth of a SASRec step.
        optimizer = torch.optim.Adam(
            self.network.parameters(),
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            betas=(0.9, cfg.adam_beta2),
            fused=device.type in ("cpu", "cuda"),
        )
        valid_users = self._validation_users(data)
        negatives = self._validation_negatives(data, valid_users)
        history: list[dict[str, float]] = []
        best_score, best_epoch, best_state, waited = -1.0, None, None, 0
        start = time.perf_counter()
        epoch = 0
        for epoch in range(1, cfg.epochs + 1):
            began = time.perf_counter()
            self.network.train()
            total, drawn = 0.0, 0
            batches = self.epoch_batches(lengths)
            for rows in tqdm(
                batches, desc=f"epoch {epoch}", disable=None if progress else True, leave=False
            ):
                # Left padding and positions counted from the newest token make dropping the
                # all-padding columns exact, and short batches cheap.
                width = int(lengths[rows].max())
                rows = rows.to(device)
                batch = {
                    name: t[rows, -width:] if t.dim() > 1 else t[rows]  # (B,) per-example ids
                    for name, t in examples.items()
                }
                loss = self.loss(batch)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item() * len(rows)
                drawn += len(rows)
            line = {
                "epoch": epoch,
                "loss": total / max(drawn, 1),
                "seconds": time.perf_counter() - began,
            }
            if len(valid_users) and epoch % cfg.eval_every == 0:
                metrics = self._validate(data, valid_users, negatives)
                line.update(metrics)
                score = next(v for key, v in metrics.items() if key.endswith("ndcg@10"))
                if score > best_score:
                    best_score, best_epoch, waited = score, epoch, 0
                    best_state = {k: v.clone() for k, v in self.network.state_dict().items()}
                else:
                    waited += 1
            history.append(line)
            if progress:
                print(epoch_summary(line), flush=True)
            if cfg.patience and waited >= cfg.patience:
                break
            if cfg.max_seconds and time.perf_counter() - start > cfg.max_seconds:
                break
        if best_state is not None:
            self.network.load_state_dict(best_state)
        self.network.to("cpu").eval()
        return TrainReport(
            epochs=epoch,
            seconds=time.perf_counter() - start,
            history=history,
            best_epoch=best_epoch,
        )

    def epoch_batches(self, lengths: torch.Tensor) -> list[torch.Tensor]:
        """One epoch's batches as example rows; ``lengths`` (W,) counts each example's tokens."""
        return self._length_bucketed_batches(lengths)

    def _length_bucketed_batches(self, lengths: torch.Tensor) -> list[torch.Tensor]:
        """Shuffled batches of examples of similar length (sorted within chunks of 50 batches)."""
        size = self.config.batch_size
        order = torch.randperm(len(lengths), generator=self.generator)
        batches = []
        for first in range(0, len(order), 50 * size):
            chunk = order[first : first + 50 * size]
            chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
            batches.extend(chunk.split(size))
        shuffle = torch.randperm(len(batches), generator=self.generator).tolist()
        return [batches[i] for i in shuffle]

    @torch.no_grad()
    def user_vectors(self, data: InteractionData, stage: Stage, users: np.ndarray) -> torch.Tensor:
        """(len(users), D) user vectors from each user's history before ``stage``."""
        self._check_sizes(data)
        self.network.eval()
        users = np.asarray(users, dtype=np.int64)
        device = next(self.network.parameters()).device
        tokens = self.history_tokens(data, stage, users)
        all_items = torch.as_tensor(tokens.items)
        all_features = self.feature_tensors(tokens)
        all_query = {}
        if self.config.query_features:
            context = request_context(data, stage, users, self.config.history_events)
            all_query = self.query_tensors(context)
        # Users of similar history length share a batch whose all-padding columns are dropped
        # (exact, as in training: left padding, positions counted from the newest token). Most
        # histories are far shorter than max_len, so this saves most of the encoder's work.
        lengths = (all_items > 0).sum(1)  # (U,)
        order = torch.argsort(lengths, stable=True)
        out = torch.zeros(len(users), self.config.dim)
        for first in range(0, len(users), SCORE_BATCH):
            rows = order[first : first + SCORE_BATCH]
            width = max(int(lengths[rows].max()), 1)
            items = all_items[rows, -width:].to(device)
            features = {k: v[rows, -width:].to(device) for k, v in all_features.items()}
            query = {k: v[rows].to(device) for k, v in all_query.items()}
            out[rows] = self.network.user_vector(items, features, query).cpu()
        return out

    @torch.no_grad()
    def score(self, data: InteractionData, stage: Stage, users: np.ndarray) -> torch.Tensor:
        return self.user_vectors(data, stage, users) @ self.item_embeddings().T

    @torch.no_grad()
    def item_embeddings(self) -> torch.Tensor:
        return self.network.item_vectors().detach().cpu().clone()

    def user_embeddings(self, data: InteractionData, stage: Stage) -> torch.Tensor:
        return self.user_vectors(data, stage, np.arange(self.num_users))

    def state_dict(self) -> dict[str, Any]:
        return {k: v.detach().cpu().clone() for k, v in self.network.state_dict().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.network.load_state_dict(state)
        self.network.eval()

    def _check_sizes(self, data: InteractionData) -> None:
        if (data.num_users, data.num_items) != (self.num_users, self.num_items):
            raise ValueError(
                f"{self.name}: built for {self.num_users} users x {self.num_items} items, "
                f"data has {data.num_users} x {data.num_items}"
            )

    def _validation_users(self, data: InteractionData) -> np.ndarray:
        users = np.unique(data.valid["user_idx"].to_numpy())
        limit = self.config.valid_users
        if limit and len(users) > limit:
            rng = np.random.default_rng(self.config.seed)
            users = np.sort(rng.choice(users, size=limit, replace=False))
        return users

    def _validation_negatives(
        self, data: InteractionData, users: np.ndarray
    ) -> torch.Tensor | None:
        """(len(users), valid_negatives) seeded uniform negatives, or None for full ranking."""
        count = self.config.valid_negatives
        if count <= 0 or len(users) == 0:
            return None
        drawn = sample_negatives(data, "valid", count, "uniform", self.config.seed, users)
        return torch.as_tensor(np.stack([drawn[int(user)] for user in users]))

    def _validate(
        self,
        data: InteractionData,
        users: np.ndarray,
        negatives: torch.Tensor | None = None,
        k: int = 10,
    ) -> dict[str, float]:
        """HR@k and NDCG@k of the validation targets of ``users`` (sorted), for epoch selection.

        Without ``negatives``: full ranking, seen items excluded (keys ``valid_hr@k``,
        ``valid_ndcg@k``). With ``negatives`` (len(users), n) item rows: each target ranked among
        its user's n negatives, ties counting against it as in trainer.evaluation.sampled (keys
        ``valid_s<n>_hr@k``, ``valid_s<n>_ndcg@k``). Reported figures come from
        trainer.evaluation.
        """
        targets = data.valid[np.isin(data.valid["user_idx"].to_numpy(), users)]
        target_users = targets["user_idx"].to_numpy()
        target_items = torch.as_tensor(targets["item_idx"].to_numpy(dtype=np.int64, copy=True))
        items = self.item_embeddings()  # (N, D)
        vectors = self.user_vectors(data, "valid", users)  # (U, D), one history build
        row_of = torch.as_tensor(np.searchsorted(users, target_users))  # (T,)
        if negatives is not None:
            rank = torch.zeros(len(row_of), dtype=torch.long)
            for first in range(0, len(row_of), SCORE_BATCH):
                part = slice(first, first + SCORE_BATCH)
                mine = vectors[row_of[part]]  # (t, D)
                own = (mine * items[target_items[part]]).sum(1)  # (t,)
                drawn = items[negatives[row_of[part]]]  # (t, n, D)
                negative_scores = torch.einsum("td,tnd->tn", mine, drawn)
                rank[part] = torch.count_nonzero(negative_scores >= own[:, None], dim=1)
            prefix = f"valid_s{negatives.shape[1]}_"
        else:
            seen = data.seen_matrix("valid")
            rank = torch.zeros(len(row_of), dtype=torch.long)
            for first in range(0, len(users), SCORE_BATCH):
                part = slice(first, first + SCORE_BATCH)
                scores = vectors[part] @ items.T  # (b, N)
                in_part = ((row_of >= first) & (row_of < first + SCORE_BATCH)).nonzero()[:, 0]
                row = row_of[in_part] - first
                # Read from the same product, so that rounding never ranks a target above
                # itself; it keeps this score even if seen before (repeat consumption).
                own = scores[row, target_items[in_part]]
                rows, cols = seen[users[part]].nonzero()
                scores[torch.as_tensor(rows), torch.as_tensor(cols)] = -torch.inf
                rank[in_part] = torch.count_nonzero(scores[row] > own[:, None], dim=1)
            prefix = "valid_"
        if len(rank) == 0:
            return {f"{prefix}hr@{k}": 0.0, f"{prefix}ndcg@{k}": 0.0}
        hit = (rank < k).float()
        gain = torch.where(rank < k, 1.0 / torch.log2(rank.float() + 2.0), 0.0)
        return {f"{prefix}hr@{k}": hit.mean().item(), f"{prefix}ndcg@{k}": gain.mean().item()}
