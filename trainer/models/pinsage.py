"""PinSAGE: item-to-item embeddings from random-walk neighbourhoods with importance pooling.

Ying et al., "Graph Convolutional Neural Networks for Web-Scale Recommender Systems", KDD 2018
(https://arxiv.org/abs/1806.01973).

- Neighbourhoods: :class:`~trainer.graph.sampling.PinSAGESampler` runs random walks with restart
  product -> user -> product and keeps the T most visited products with their normalised visit
  counts; training batches come from PyG's ``NodeLoader`` (:class:`WalkNodeLoader`) over it.
- Importance pooling: a layer aggregates ``ReLU(Q h_j)`` weighted by visit counts, concatenates
  it with the node's own vector, applies ``ReLU(W .)`` and L2-normalises (the paper's CONVOLVE).
- Inputs are catalogue features only (category, parent category, seller, price bucket), so a new
  product is embedded from its features and whatever walks reach it (:meth:`PinSAGE.embed_items`).
- Training pairs are consecutive distinct positive items of a user's history (item-to-item
  relatedness); the loss is a sampled softmax over cosine logits against the other positives of
  the batch plus hard negatives with the paper's curriculum: from the second epoch on each query
  gets ``hard_step`` more hard negatives per epoch (up to ``hard_max``), drawn from ranks
  ``hard_low``..``hard_high`` of the current model's item-item similarity: related enough to be
  hard, far enough down not to be true positives.
- Users are scored through items: a user vector is the mean of the vectors of their
  ``history_len`` most recent distinct positive items (a user with no history gets the
  popularity-weighted mean item).
- Scores add the priors of :mod:`trainer.graph.priors` (popularity fading with history length;
  products with no events yet placed by the user's category affinity and their freshness), with
  weights chosen on validation after training.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from trainer.data.graph import build_graph
from trainer.data.interactions import InteractionData, Stage
from trainer.data.schema import EVENT_TYPES
from trainer.graph.features import FeatureEncoder, ProductFeatures, recent_history
from trainer.graph.priors import PriorWeights, StagePriors, select_config_weights
from trainer.graph.sampling import WALK, PinSAGESampler, WalkNodeLoader
from trainer.graph.training import softmax_loss
from trainer.models.base import Recommender, TrainReport, register
from trainer.models.training import EpochHooks, torch_threads, train_epochs


@dataclass(frozen=True)
class PinSAGEConfig:
    dim: int = 64
    layers: int = 2  # convolutions = walk-neighbourhood hops
    top_k: int = 10  # T: neighbours kept per product (most visited)
    num_walks: int = 20  # walks per product when training
    walk_length: int = 2  # product -> user -> product steps per walk
    restart: float = 0.5
    inference_walks: int = 100  # walks per product for the final embeddings (stabler top-T)
    batch_size: int = 512  # (query, positive) item pairs per step
    lr: float = 0.005
    weight_decay: float = 0.0
    temperature: float = 0.1
    hard_step: int = 1  # hard negatives per query added each epoch after the first
    hard_max: int = 4  # at most this many hard negatives per query
    hard_low: int = 50  # hard negatives come from similarity ranks [hard_low, hard_high)
    hard_high: int = 500
    history_len: int = 20  # recent items averaged into a user vector
    # Priors (trainer.graph.priors): score = cos(u, i) + w / (1 + n_u) * pop(i), plus for
    # products with no events beta * affinity(u, category(i)) * fresh(i). w is picked on
    # validation NDCG after training from ``prior_grid``, then beta from ``cold_grid`` (0 in a
    # grid keeps that prior off).
    prior_grid: tuple[float, ...] = (0.0, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2)
    cold_grid: tuple[float, ...] = (0.0, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2)
    cold_tolerance: float = 0.02  # overall valid NDCG (relative) traded for new-item recall
    fresh_half_life_days: float = 14.0  # listing age at which the cold prior halves
    event_types: tuple[str, ...] | None = None  # walk relations; None: positive events
    price_buckets: int = 10
    epochs: int = 20
    eval_every: int = 1
    patience: int = 5
    valid_k: int = 20
    valid_users: int = 5000
    time_budget: float = 0.0
    threads: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.layers < 1:
            raise ValueError(f"pinsage: layers must be >= 1, got {self.layers}")
        if not 0 <= self.hard_low < self.hard_high:
            raise ValueError(
                f"pinsage: need 0 <= hard_low < hard_high, got {self.hard_low}, {self.hard_high}"
            )
        if self.top_k < 1 or self.num_walks < 1 or self.inference_walks < 1:
            raise ValueError("pinsage: top_k, num_walks and inference_walks must be >= 1")
        for event in self.event_types or ():
            if event not in EVENT_TYPES:
                raise ValueError(
                    f"pinsage: unknown event type {event!r} (known: {', '.join(EVENT_TYPES)})"
                )


class ImportancePooling(nn.Module):
    """PinSAGE's CONVOLVE: visit-count-weighted pooling of transformed neighbours."""

    def __init__(self, dim: int):
        super().__init__()
        self.neighbour = nn.Linear(dim, dim)  # Q
        self.combine = nn.Linear(2 * dim, dim)  # W

    def forward(self, x: Tensor, edge_index: Tensor, weight: Tensor) -> Tensor:
        messages = F.relu(self.neighbour(x))[edge_index[0]] * weight[:, None]  # (E, D)
        pooled = torch.zeros_like(x).index_add_(0, edge_index[1], messages)  # (N, D)
        return F.normalize(F.relu(self.combine(torch.cat([x, pooled], dim=1))), dim=1)


class PinSAGENet(nn.Module):
    def __init__(self, encoder: FeatureEncoder, dim: int, layers: int):
        super().__init__()
        self.encoder = encoder
        self.convs = nn.ModuleList([ImportancePooling(dim) for _ in range(layers)])
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))  # G1, G2

    def forward(
        self, features: ProductFeatures, n_id: Tensor, edge_index: Tensor, weight: Tensor
    ) -> Tensor:
        x = self.encoder(features, n_id)  # (N, D)
        for conv in self.convs:
            x = conv(x, edge_index, weight)
        return self.head(x)  # (N, D)


def item_pairs(data: InteractionData) -> np.ndarray:
    """(2, P) consecutive distinct positive items of each user's training history."""
    train = data.positives(data.train)
    users = train["user_idx"].to_numpy(dtype=np.int64)
    items = train["item_idx"].to_numpy(dtype=np.int64)
    order = np.argsort(users, kind="stable")  # train is chronological; keep time order per user
    users, items = users[order], items[order]
    same_user = users[1:] == users[:-1]
    different = items[1:] != items[:-1]
    keep = same_user & different
    pairs = np.stack([items[:-1][keep], items[1:][keep]])
    return np.unique(pairs, axis=1) if pairs.size else pairs


@register("pinsage")
class PinSAGE(Recommender):
    """PinSAGE (Ying et al. 2018): random-walk importance pooling, hard-negative curriculum."""

    config_class = PinSAGEConfig

    def __init__(self, config: PinSAGEConfig, num_users: int, num_items: int):
        super().__init__(config, num_users, num_items)
        self.net: PinSAGENet | None = None
        self.features: ProductFeatures | None = None
        self.event_types: tuple[str, ...] = ()
        self._items: Tensor | None = None  # (I, D) L2-normalised
        self._fallback: Tensor | None = None  # (D,) the vector of a user with no history
        # (data, stage, (user table (U, D), priors of that stage))
        self._users: tuple[InteractionData, str, tuple[Tensor, StagePriors]] | None = None
        self.prior = PriorWeights()  # chosen on validation after training

    @classmethod
    def test_config(cls) -> PinSAGEConfig:
        return PinSAGEConfig(
            dim=16,
            top_k=5,
            num_walks=10,
            inference_walks=30,
            batch_size=64,
            epochs=10,
            lr=0.01,
            hard_low=3,
            hard_high=12,
            patience=0,
            threads=1,
        )

    def _build_net(self) -> None:
        assert self.features is not None
        encoder = FeatureEncoder(
            len(self.features.categories),
            len(self.features.sellers),
            self.features.price_buckets,
            self.config.dim,
        )
        self.net = PinSAGENet(encoder, self.config.dim, self.config.layers)

    def _sampler(self, graph, walks: int, seed: int) -> PinSAGESampler:
        config = self.config
        return PinSAGESampler(
            graph,
            interaction_types=self.event_types,
            num_layers=config.layers,
            walk_length=config.walk_length,
            restart=config.restart,
            num_walks=walks,
            top_k=config.top_k,
            seed=seed,
        )

    # Training ---------------------------------------------------------------------------------
    def fit(self, data: InteractionData, progress: bool = True) -> TrainReport:
        with torch_threads(self.config.threads):
            return self._fit(data, progress)

    def _fit(self, data: InteractionData, progress: bool) -> TrainReport:
        config = self.config
        torch.manual_seed(config.seed)
        rng = np.random.default_rng(config.seed)
        self.event_types = tuple(config.event_types or data.info.positive_events)
        graph = build_graph(data, "valid", event_types=self.event_types)
        self.features = ProductFeatures.from_graph(graph, config.price_buckets)
        self._build_net()
        pairs = item_pairs(data)
        if pairs.shape[1] == 0:
            raise ValueError("pinsage: no user has two distinct positive training items")
        popularity = torch.from_numpy(data.item_popularity().astype(np.float32))
        sampler = self._sampler(graph.data, config.num_walks, config.seed)
        loader = WalkNodeLoader(
            graph.data, sampler, input_nodes=("product", torch.arange(self.num_items))
        )
        optimizer = torch.optim.Adam(
            self.net.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )

        def run_epoch(epoch: int) -> dict[str, float]:
            assert self.net is not None
            hard = min(config.hard_max, config.hard_step * (epoch - 1))
            band = self.hard_band() if hard > 0 else None
            order = rng.permutation(pairs.shape[1])
            total = sample_seconds = 0.0
            steps = 0
            start = time.perf_counter()
            for first in tqdm(
                range(0, len(order), config.batch_size),
                desc=f"pinsage epoch {epoch}",
                disable=not progress,
                leave=False,
            ):
                batch = pairs[:, order[first : first + config.batch_size]]
                loss, sampled = self._train_step(loader, batch, hard, band, rng, optimizer)
                total += loss
                sample_seconds += sampled
                steps += 1
            seconds = time.perf_counter() - start
            return {
                "loss": total / max(steps, 1),
                "hard_negatives": float(hard),
                "sample_share": sample_seconds / seconds if seconds > 0 else 0.0,
            }

        def refresh() -> None:
            self._items = self._embed(graph.data, self.features)
            self._fallback = F.normalize(popularity @ self._items, dim=0)
            self._users = None

        hooks = EpochHooks(
            run_epoch=run_epoch,
            refresh=refresh,
            score_users=lambda users: self.score(data, "valid", users),
            snapshot=lambda: copy.deepcopy(self.net.state_dict()),
            restore=lambda state: self.net.load_state_dict(state),
        )
        refresh()  # hard negatives of epoch 2 need a table; epoch 1 uses none
        report = train_epochs(self.name, config, data, hooks)
        self.prior = select_config_weights(
            lambda weights: lambda users: self._score(data, "valid", users, weights),
            data,
            config,
            self.name,
        )
        return report

    @torch.no_grad()
    def hard_band(self, chunk: int = 2048) -> Tensor:
        """(I, hard_high - hard_low) items at similarity ranks [hard_low, hard_high) of each item
        under the current table; computed once per epoch (the table changes only between
        epochs), which is far cheaper than ranking the catalogue for every query of every step."""
        items = self._require()
        high = min(self.config.hard_high, self.num_items)
        low = min(self.config.hard_low, high - 1)
        band = []
        for first in range(0, self.num_items, chunk):
            similarity = items[first : first + chunk] @ items.T  # (chunk, I)
            band.append(torch.topk(similarity, k=high, dim=1).indices[:, low:].to(torch.int32))
        return torch.cat(band)

    def _hard_negatives(
        self, band: Tensor, queries: np.ndarray, count: int, rng: np.random.Generator
    ) -> np.ndarray:
        """(B * count,) items drawn uniformly from each query's row of :meth:`hard_band`."""
        rows = band[torch.from_numpy(queries)].numpy()  # (B, width)
        picks = rng.integers(0, rows.shape[1], size=(len(queries), count))
        return np.take_along_axis(rows, picks, axis=1).reshape(-1).astype(np.int64)

    def _train_step(
        self,
        loader: WalkNodeLoader,
        pairs: np.ndarray,
        hard: int,
        band: Tensor | None,
        rng: np.random.Generator,
        optimizer: torch.optim.Optimizer,
    ) -> tuple[float, float]:
        assert self.net is not None
        queries, positives = np.ascontiguousarray(pairs[0]), np.ascontiguousarray(pairs[1])
        negatives = (
            self._hard_negatives(band, queries, hard, rng)
            if hard > 0 and band is not None
            else np.empty(0, dtype=np.int64)
        )
        tick = time.perf_counter()
        seeds = torch.from_numpy(np.unique(np.concatenate([queries, positives, negatives])))
        batch = loader(seeds)  # PyG NodeLoader over the walk sampler: seeds come first in n_id
        sampled = time.perf_counter() - tick
        self.net.train()
        out = self.net(
            self.features, batch["product"].n_id, batch[WALK].edge_index, batch[WALK].edge_weight
        )

        def local(items: np.ndarray) -> Tensor:
            return torch.searchsorted(seeds, torch.from_numpy(items))

        candidate_items = torch.from_numpy(np.concatenate([positives, negatives]))
        mask = (candidate_items[None, :] == torch.from_numpy(positives)[:, None]) | (
            candidate_items[None, :] == torch.from_numpy(queries)[:, None]
        )  # (B, C): copies of the row's positive, and the query itself, are not negatives
        loss = softmax_loss(
            out[local(queries)],
            out[local(np.concatenate([positives, negatives]))],
            torch.arange(len(queries)),
            self.config.temperature,
            mask,
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return float(loss.detach()), sampled

    # Inference --------------------------------------------------------------------------------
    @torch.no_grad()
    def _embed(self, graph, features: ProductFeatures) -> Tensor:
        """(num products, D) normalised vectors over every product's walk neighbourhood."""
        assert self.net is not None
        self.net.eval()
        sampler = self._sampler(graph, self.config.inference_walks, self.config.seed)
        products = torch.arange(graph["product"].num_nodes)
        owner, neighbour, weight = sampler.neighbours(products)
        edge_index = torch.stack([neighbour, owner])
        return F.normalize(self.net(features, products, edge_index, weight), dim=1)

    def _require(self) -> Tensor:
        if self.net is None or self._items is None:
            raise RuntimeError("pinsage: the model is not trained (call fit or load_state_dict)")
        return self._items

    def embed_items(self, data: InteractionData, stage: Stage = "test") -> Tensor:
        """(data.num_items, D) vectors of ``data``'s catalogue on the graph of its history(stage):
        products added after training are embedded from their features and walks (inductive)."""
        self._require()
        assert self.features is not None
        graph = build_graph(data, stage, event_types=self.event_types)
        features = ProductFeatures.from_graph(
            graph, self.config.price_buckets, self.features.categories, self.features.sellers
        )
        return self._embed(graph.data, features)

    def similar_items(self, item: int, k: int = 10) -> Tensor:
        """The ``k`` items nearest to ``item`` (item-to-item recommendations), best first."""
        items = self._require()
        scores = items @ items[item]
        scores[item] = -torch.inf
        return torch.topk(scores, k=min(k, self.num_items - 1)).indices

    def _user_table(self, data: InteractionData, stage: Stage) -> tuple[Tensor, StagePriors]:
        items = self._require()
        if self._users is not None and self._users[0] is data and self._users[1] == stage:
            return self._users[2]
        ptr, history = recent_history(data, stage, self.config.history_len)
        counts = np.diff(ptr)
        owner = torch.from_numpy(np.repeat(np.arange(data.num_users), counts))
        sums = torch.zeros(data.num_users, items.shape[1]).index_add_(
            0, owner, items[torch.from_numpy(history)]
        )
        table = F.normalize(sums, dim=1)
        table[torch.from_numpy(counts == 0)] = self._fallback
        priors = StagePriors.build(
            data, stage, self.config.history_len, self.config.fresh_half_life_days
        )
        self._users = (data, stage, (table, priors))
        return self._users[2]

    def _score(
        self, data: InteractionData, stage: Stage, users: np.ndarray, weights: PriorWeights
    ) -> Tensor:
        table, priors = self._user_table(data, stage)
        users = np.asarray(users)
        scores = table[torch.as_tensor(users, dtype=torch.long)] @ self._items.T
        return priors.add_to(scores, users, weights)

    def score(self, data: InteractionData, stage: Stage, users: np.ndarray) -> Tensor:
        return self._score(data, stage, users, self.prior)

    def item_embeddings(self) -> Tensor:
        return self._require().clone()

    def user_embeddings(self, data: InteractionData, stage: Stage) -> Tensor:
        return self._user_table(data, stage)[0].clone()

    # Persistence ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        items = self._require()
        assert self.net is not None and self.features is not None
        return {
            "net": {key: value.clone() for key, value in self.net.state_dict().items()},
            "features": self.features.state(),
            "event_types": list(self.event_types),
            "items": items.clone(),
            "fallback": self._fallback.clone(),
            **self.prior.state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("net", "features", "event_types", "items", "fallback"):
            if key not in state:
                raise ValueError(f"pinsage state lacks '{key}'")
        expected = (self.num_items, self.config.dim)
        if tuple(state["items"].shape) != expected:
            raise ValueError(
                f"pinsage state 'items' has shape {tuple(state['items'].shape)}, "
                f"expected {expected}"
            )
        self.event_types = tuple(state["event_types"])
        self.features = ProductFeatures.from_state(state["features"])
        self._build_net()
        assert self.net is not None
        self.net.load_state_dict(state["net"])
        self._items = state["items"].clone()
        self._fallback = state["fallback"].clone()
        self.prior = PriorWeights.from_state(state)
        self._users = None
