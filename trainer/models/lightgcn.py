"""LightGCN: linear propagation of ID embeddings over the user-item graph.

He et al., "LightGCN: Simplifying and Powering Graph Convolution Network for Recommendation",
SIGIR 2020 (https://arxiv.org/abs/2002.02126). Users and items get ego embeddings E_0; each layer
is E_{k+1} = Â E_k with Â the symmetric normalised adjacency of the bipartite interaction graph;
the final embedding is the mean of the K+1 layers and score(u, i) = <e_u, e_i>.

CPU speed: Â is built once (torch sparse CSR) and the propagation uses
:class:`~trainer.graph.propagation.SymmetricSpMM`, whose backward is the same sparse product.

Losses:
- ``bpr``: the paper's pairwise loss with one uniform negative per positive pair.
- ``softmax``: sampled softmax over similarities divided by a temperature; each batch shares
  ``num_negatives`` uniform negatives (Wu et al., "On the Effectiveness of Sampled Softmax Loss
  for Item Recommendation", TOIS 2024, https://arxiv.org/abs/2201.02327). Many negatives per step
  give far more signal per propagation than BPR's one, so it converges in fewer epochs.

Where embeddings are L2-normalised (``normalize``), for training and scoring alike:
- ``final``: the propagated embeddings, so scores are cosines (the softmax default). Cosine
  discards magnitudes, which carry popularity.
- ``ego``: the ego rows before propagation; scores are dot products of the propagated means, so
  magnitudes come from the graph (a node's degree and its neighbours'), the remedy Wu et al.
  give for cosine's blindness to magnitude. On gowalla it converges faster and higher than
  ``final`` (benchmarks/results/lightgcn_gowalla.json, docs/graph-models.md).
- ``none``: raw ego rows and dot products (the paper; the BPR default).

Multi-relational graphs: ``event_weights`` gives each event type a weight; the edge between a
user and an item weighs the largest weight among the event types the pair has in the history
(types absent from the mapping are left out of the graph). The default (None) is the paper's
binary graph over the dataset's positive events. Training pairs are always the positive pairs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from trainer.data.graph import build_graph
from trainer.data.interactions import InteractionData, Stage
from trainer.data.schema import EVENT_TYPES
from trainer.graph.propagation import (
    PropagationCache,
    normalized_adjacency,
    propagate_mean,
    to_torch_csr,
)
from trainer.models.base import Recommender, TrainReport, register
from trainer.models.training import EpochHooks, torch_threads, train_epochs

log = logging.getLogger(__name__)

LOSSES = ("bpr", "softmax")
NORMALIZE = ("none", "final", "ego")
DEFAULT_NORMALIZE = {"bpr": "none", "softmax": "final"}
NEGATIVE_RETRIES = 3


@dataclass(frozen=True)
class LightGCNConfig:
    dim: int = 64  # embedding size
    layers: int = 3  # propagation depth K
    loss: str = "bpr"  # "bpr" or "softmax" (sampled softmax, converges faster)
    epochs: int = 400  # maximum passes over the positive pairs
    batch_size: int = 2048  # positive pairs per step
    lr: float = 1e-3  # Adam learning rate
    reg: float = 1e-4  # L2 weight on the batch's ego embeddings (per pair)
    init_std: float = 0.1  # std of the normal initialisation of the ego embeddings
    num_negatives: int = 1024  # softmax: uniform negatives shared by the batch
    temperature: float = 0.1  # softmax: temperature of the logits
    normalize: str = ""  # "none", "final" or "ego" (module docstring); "": the loss's default
    event_weights: dict[str, float] | None = None  # None: binary graph of the positive events
    seed: int = 0
    eval_every: int = 1  # validate every N epochs (when the split has validation targets)
    patience: int = 10  # stop after this many validations without improvement; 0 disables
    valid_k: int = 20  # cut-off of the validation NDCG used for epoch selection
    valid_users: int = 5000  # validate on at most this many users (fixed sample)
    time_budget: float = 0.0  # stop after this many seconds of training steps; 0 disables
    # torch intra-op threads during fit (0: leave torch's setting). On a busy shared machine one
    # thread avoids OpenMP barrier waits that cost ~10 ms per sparse product.
    threads: int = 0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(
                f"lightgcn: loss must be one of {', '.join(LOSSES)}, got {self.loss!r}"
            )
        if self.layers < 0:
            raise ValueError(f"lightgcn: layers must be >= 0, got {self.layers}")
        if self.normalize not in ("", *NORMALIZE):
            raise ValueError(
                f"lightgcn: normalize must be one of {', '.join(NORMALIZE)} (or empty for the "
                f"loss's default), got {self.normalize!r}"
            )
        for name, weight in (self.event_weights or {}).items():
            if name not in EVENT_TYPES:
                raise ValueError(
                    f"lightgcn: event_weights has unknown event type {name!r} "
                    f"(known: {', '.join(EVENT_TYPES)})"
                )
            if weight < 0:
                raise ValueError(f"lightgcn: event_weights[{name!r}] must be >= 0, got {weight}")


def interaction_adjacency(
    data: InteractionData, stage: Stage, event_weights: dict[str, float] | None
) -> sp.csr_matrix:
    """Normalised Â over users (rows 0..U-1) and items (rows U..U+I-1) from ``history(stage)``."""
    weights = event_weights or {name: 1.0 for name in data.info.positive_events}
    events = tuple(name for name in EVENT_TYPES if weights.get(name, 0.0) > 0)
    graph = build_graph(data, stage=stage, event_types=events, add_reverse=False)
    num_users, num_items = data.num_users, data.num_items
    keys, values = [], []
    for event in events:
        edge_index = graph.data["user", event, "product"].edge_index.numpy()
        keys.append(edge_index[0] * np.int64(num_items) + edge_index[1])
        values.append(np.full(edge_index.shape[1], weights[event], dtype=np.float64))
    key = np.concatenate(keys) if keys else np.zeros(0, dtype=np.int64)
    value = np.concatenate(values) if values else np.zeros(0)
    # The strongest event type of each pair sets its weight.
    order = np.lexsort((-value, key))
    key, value = key[order], value[order]
    first = np.ones(len(key), dtype=bool)
    first[1:] = key[1:] != key[:-1]
    key, value = key[first], value[first]
    return normalized_adjacency(
        key // num_items, num_users + key % num_items, value, num_users + num_items
    )


def _sample_negatives(
    users: np.ndarray, positive_keys: np.ndarray, num_items: int, rng: np.random.Generator
) -> np.ndarray:
    """One uniform item per user, re-drawn (a few times) where it is a training positive."""
    negatives = rng.integers(0, num_items, size=len(users))
    for _ in range(NEGATIVE_RETRIES):
        keys = users * np.int64(num_items) + negatives
        slot = np.minimum(np.searchsorted(positive_keys, keys), len(positive_keys) - 1)
        clash = positive_keys[slot] == keys
        if not clash.any():
            break
        negatives[clash] = rng.integers(0, num_items, size=int(clash.sum()))
    return negatives


class LightGCNNet(nn.Module):
    """The ego embeddings and the propagation; forward returns final (user, item) tables."""

    def __init__(self, num_users: int, num_items: int, config: LightGCNConfig):
        super().__init__()
        generator = torch.Generator().manual_seed(config.seed)
        self.num_users = num_users
        self.layers = config.layers
        self.normalize = config.normalize or DEFAULT_NORMALIZE[config.loss]
        self.ego = nn.Parameter(
            torch.randn(num_users + num_items, config.dim, generator=generator) * config.init_std
        )

    def ego_table(self) -> torch.Tensor:
        """The layer-0 embeddings that propagation starts from (rows unit-length for "ego")."""
        return F.normalize(self.ego, dim=1) if self.normalize == "ego" else self.ego

    def forward(self, adjacency: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Propagated (users, items) tables; :meth:`score_vectors` turns rows into scored ones."""
        final = propagate_mean(adjacency, self.ego_table(), self.layers)  # (U+I, D)
        return final[: self.num_users], final[self.num_users :]

    def score_vectors(self, rows: torch.Tensor) -> torch.Tensor:
        """Final embedding rows as scored: L2-normalised for "final" (cosine), else unchanged."""
        return F.normalize(rows, dim=1) if self.normalize == "final" else rows

    def readout(self, final: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(users, items) used for scoring from the propagated (U+I, D) table."""
        users, items = final[: self.num_users], final[self.num_users :]
        return self.score_vectors(users), self.score_vectors(items)


@register("lightgcn")
class LightGCN(Recommender):
    """LightGCN (He et al. 2020): mean of linear propagations of ID embeddings on the graph."""

    config_class = LightGCNConfig

    def __init__(self, config: LightGCNConfig, num_users: int, num_items: int):
        super().__init__(config, num_users, num_items)
        self.net = LightGCNNet(num_users, num_items, config)
        self._users: torch.Tensor | None = None  # (U, D) final, after fit / load
        self._items: torch.Tensor | None = None  # (I, D)
        # Called as epoch_callback(model, row) after each epoch (benchmarks draw curves with it);
        # its time is not counted in time_budget.
        self.epoch_callback: Callable[[LightGCN, dict[str, float]], None] | None = None

    @classmethod
    def test_config(cls) -> LightGCNConfig:
        return LightGCNConfig(
            dim=16, layers=2, epochs=30, batch_size=64, lr=0.01, patience=0, threads=1
        )

    # Training ---------------------------------------------------------------------------------
    def _loss(
        self,
        users_final: torch.Tensor,
        items_final: torch.Tensor,
        users: np.ndarray,
        positives: np.ndarray,
        positive_keys: np.ndarray,
        rng: np.random.Generator,
    ) -> torch.Tensor:
        config = self.config
        u_idx = torch.from_numpy(users)
        p_idx = torch.from_numpy(positives)
        scored = self.net.score_vectors
        if config.loss == "bpr":
            negatives = torch.from_numpy(
                _sample_negatives(users, positive_keys, self.num_items, rng)
            )
            u, p, n = (
                scored(users_final[u_idx]),
                scored(items_final[p_idx]),
                scored(items_final[negatives]),
            )  # (B, D) each
            ranking = -F.logsigmoid((u * p).sum(1) - (u * n).sum(1)).mean()
            reg_items = torch.cat([p_idx, negatives])
        else:
            negatives = torch.from_numpy(rng.integers(0, self.num_items, size=config.num_negatives))
            u = scored(users_final[u_idx])  # (B, D)
            p = scored(items_final[p_idx])  # (B, D)
            n = scored(items_final[negatives])  # (M, D)
            positive_logit = (u * p).sum(1, keepdim=True) / config.temperature  # (B, 1)
            negative_logits = (u @ n.T) / config.temperature  # (B, M)
            # A sampled "negative" that is the positive itself is not a negative.
            negative_logits = negative_logits.masked_fill(
                negatives[None, :] == p_idx[:, None], float("-inf")
            )
            logits = torch.cat([positive_logit, negative_logits], dim=1)  # (B, 1 + M)
            ranking = F.cross_entropy(logits, torch.zeros(len(users), dtype=torch.long))
            reg_items = torch.cat([p_idx, negatives])
        ego = self.net.ego
        l2 = ego[u_idx].square().sum() + ego[self.num_users + reg_items].square().sum()
        return ranking + config.reg * l2 / len(users)

    def train_step(
        self,
        adjacency: torch.Tensor,
        users: np.ndarray,
        positives: np.ndarray,
        positive_keys: np.ndarray,
        rng: np.random.Generator,
        optimizer: torch.optim.Optimizer,
    ) -> float:
        """One optimiser step on a batch of positive pairs; returns the batch loss.

        ``adjacency`` is the training graph's Â as torch CSR (:func:`interaction_adjacency` then
        :func:`~trainer.graph.propagation.to_torch_csr`); ``positive_keys`` the sorted
        ``user * num_items + item`` keys of all training positives (negatives avoid them).
        """
        users_final, items_final = self.net(adjacency)
        loss = self._loss(users_final, items_final, users, positives, positive_keys, rng)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    def fit(self, data: InteractionData, progress: bool = True) -> TrainReport:
        with torch_threads(self.config.threads):
            return self._fit(data, progress)

    def _fit(self, data: InteractionData, progress: bool) -> TrainReport:
        config = self.config
        adjacency = to_torch_csr(interaction_adjacency(data, "valid", config.event_weights))
        pairs = data.train_matrix().tocoo()
        users_all = pairs.row.astype(np.int64)
        items_all = pairs.col.astype(np.int64)
        if len(users_all) == 0:
            raise ValueError("lightgcn: the training split has no positive events")
        positive_keys = np.sort(users_all * np.int64(self.num_items) + items_all)
        rng = np.random.default_rng(config.seed)
        torch.manual_seed(config.seed)
        optimizer = torch.optim.Adam(self.net.parameters(), lr=config.lr)

        def run_epoch(epoch: int) -> dict[str, float]:
            order = rng.permutation(len(users_all))
            total = 0.0
            for first in tqdm(
                range(0, len(order), config.batch_size),
                desc=f"lightgcn epoch {epoch}",
                disable=not progress,
                leave=False,
            ):
                batch = order[first : first + config.batch_size]
                loss = self.train_step(
                    adjacency, users_all[batch], items_all[batch], positive_keys, rng, optimizer
                )
                total += loss * len(batch)
            return {"loss": total / len(order)}

        def restore(state: torch.Tensor) -> None:
            with torch.no_grad():
                self.net.ego.copy_(state)

        def on_epoch(row: dict[str, float]) -> None:
            if self.epoch_callback is not None:
                self.epoch_callback(self, row)

        hooks = EpochHooks(
            run_epoch=run_epoch,
            refresh=lambda: self._refresh_final(adjacency),
            score_users=lambda users: self._require_users()[torch.as_tensor(users)] @ self._items.T,
            snapshot=lambda: self.net.ego.detach().clone(),
            restore=restore,
            on_epoch=on_epoch,
        )
        return train_epochs("lightgcn", config, data, hooks)

    @torch.no_grad()
    def _refresh_final(self, adjacency: torch.Tensor) -> None:
        final = propagate_mean(adjacency, self.net.ego_table().detach(), self.config.layers)
        self._users, self._items = self.net.readout(final)

    # Contract ---------------------------------------------------------------------------------
    def _require_users(self) -> torch.Tensor:
        if self._users is None or self._items is None:
            raise RuntimeError("lightgcn: the model is not trained (call fit or load_state_dict)")
        return self._users

    @torch.no_grad()
    def score(self, data: InteractionData, stage: Stage, users: np.ndarray) -> torch.Tensor:
        # Embeddings come from the training graph: the model is transductive, and the same
        # tables serve score(), item_embeddings() and user_embeddings() (export relies on that).
        # Folding newer history in is the embedding cache's job (embedding_cache / refresh).
        table = self._require_users()
        return table[torch.as_tensor(np.asarray(users), dtype=torch.long)] @ self._items.T

    def item_embeddings(self) -> torch.Tensor:
        self._require_users()
        return self._items.clone()

    def user_embeddings(self, data: InteractionData, stage: Stage) -> torch.Tensor:
        return self._require_users().clone()

    def embedding_cache(self, data: InteractionData, stage: Stage = "valid") -> PropagationCache:
        """Every layer's embeddings over the graph of ``history(stage)``, ready to refresh.

        The cache holds propagated means; scores use ``net.score_vectors`` of its rows."""
        adjacency = interaction_adjacency(data, stage, self.config.event_weights)
        return PropagationCache(adjacency, self.net.ego_table().detach(), self.config.layers)

    def state_dict(self) -> dict[str, Any]:
        return {
            "ego": self.net.ego.detach().clone(),
            "users": self._require_users().clone(),
            "items": self._items.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        dim = self.config.dim
        expected = {
            "ego": (self.num_users + self.num_items, dim),
            "users": (self.num_users, dim),
            "items": (self.num_items, dim),
        }
        for name, shape in expected.items():
            if name not in state or tuple(state[name].shape) != shape:
                got = tuple(state[name].shape) if name in state else None
                raise ValueError(f"lightgcn state '{name}' has shape {got}, expected {shape}")
        with torch.no_grad():
            self.net.ego.copy_(state["ego"])
        self._users = state["users"].clone()
        self._items = state["items"].clone()
