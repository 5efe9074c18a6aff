"""The skeleton GraphSAGE and GAT share: an inductive heterogeneous GNN recommender.

Following PyG's ``basic_gnn`` (GraphSAGE, GAT and GCN differ only in ``init_conv``), the two
models differ only in :meth:`HeteroGNNRecommender.make_conv`; everything else lives here.

Graph: users, products, categories, sellers (:func:`~trainer.graph.features.interaction_view`).
Inputs carry no per-user or per-product id: a product starts from its catalogue features
(:class:`~trainer.graph.features.FeatureEncoder`), categories and sellers from their own
embeddings, users from one shared learned vector. After ``layers`` rounds of message passing a
user is what their products say about them and a product what its features, category, seller and
buyers say, so a product or user that appears after training is embedded without retraining.

Training is mini-batch: PyG's ``LinkLoader`` drives
:class:`~trainer.graph.sampling.HeteroNeighborSampler` over the training positive pairs with
"triplet" negative sampling; the loss is a sampled softmax over cosine logits in which every
product of the batch (the other positives and the uniform negatives) is a negative. The edges of
a batch's own positive pairs are removed from its sampled subgraph before message passing, so
the model never learns to spot the edge it is asked to predict (at evaluation time the target is
not in the history either).

Inference is full-graph (every neighbour, no sampling). Product vectors are computed on the
training graph when ``fit`` ends and kept (``item_embeddings``); user vectors are computed from
``data.history(stage)`` whenever a stage is scored, so users with newer history are embedded
from it. :meth:`HeteroGNNRecommender.embed` embeds both on any later graph (new products included).

Scores add the priors of :mod:`trainer.graph.priors` (popularity for short histories; category
affinity times freshness for products with no events) with weights chosen on validation after
training from ``prior_grid`` / ``cold_grid``; the defaults here keep them off (GAT), GraphSAGE
turns them on.
"""

from __future__ import annotations

import copy
import time
import warnings
from abc import abstractmethod
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
from trainer.graph import HeteroData, torch_geometric
from trainer.graph.features import (
    CATALOGUE_EDGES,
    MERGED,
    FeatureEncoder,
    ProductFeatures,
    interaction_view,
)
from trainer.graph.priors import PriorWeights, StagePriors, select_config_weights
from trainer.graph.sampling import HeteroNeighborSampler
from trainer.graph.training import softmax_loss
from trainer.models.base import Recommender, TrainReport
from trainer.models.training import EpochHooks, torch_threads, train_epochs

EdgeType = tuple[str, str, str]


@dataclass(frozen=True)
class HeteroGNNConfig:
    dim: int = 64  # embedding size
    layers: int = 2  # message-passing rounds (= sampled hops)
    fanouts: tuple[int, ...] = (10, 5)  # neighbours sampled per interaction edge type and hop
    batch_size: int = 1024  # positive (user, product) pairs per step
    num_negatives: int = 1  # uniform negative products per positive (plus in-batch ones)
    lr: float = 0.005  # Adam learning rate
    weight_decay: float = 0.0
    temperature: float = 0.1  # of the cosine logits in the sampled softmax
    event_types: tuple[str, ...] | None = None  # interaction relations; None: positive events
    # One "interacted" relation instead of one per event type: with the medium marketplace's four
    # positive event types, per-event relations made a GraphSAGE epoch ~2x slower (10 convs
    # per layer instead of 4).
    merge_events: bool = True
    # Share of a batch's products that lose every incoming user edge (DropoutNet-style cold-start
    # simulation): products with no interactions yet are embedded from catalogue features alone,
    # and without this the model never sees such a product as a positive, so they never rank.
    cold_item_rate: float = 0.0
    # Score priors (trainer.graph.priors), weights chosen on validation after training from
    # these grids; (0.0,) keeps a prior off. GraphSAGE turns them on.
    prior_grid: tuple[float, ...] = (0.0,)  # w of the popularity prior
    cold_grid: tuple[float, ...] = (0.0,)  # beta of the cold-item prior
    cold_tolerance: float = 0.0  # see trainer.graph.priors.select_weights
    history_len: int = 20  # recent history items behind n_u and category affinity
    fresh_half_life_days: float = 14.0
    price_buckets: int = 10
    epochs: int = 30
    eval_every: int = 1
    patience: int = 5  # validations without improvement before stopping; 0 disables
    valid_k: int = 20
    valid_users: int = 5000
    time_budget: float = 0.0  # seconds of training steps; 0 disables
    threads: int = 0  # torch intra-op threads during fit; 0 leaves torch's setting
    seed: int = 0

    def validate(self, name: str) -> None:
        if self.layers < 1:
            raise ValueError(f"{name}: layers must be >= 1, got {self.layers}")
        if len(self.fanouts) != self.layers:
            raise ValueError(
                f"{name}: fanouts needs one entry per layer ({self.layers}), got {self.fanouts}"
            )
        if not 0.0 <= self.cold_item_rate < 1.0:
            raise ValueError(f"{name}: cold_item_rate must be in [0, 1), got {self.cold_item_rate}")
        if self.num_negatives < 1:
            raise ValueError(f"{name}: num_negatives must be >= 1, got {self.num_negatives}")
        for event in self.event_types or ():
            if event not in EVENT_TYPES:
                raise ValueError(
                    f"{name}: unknown event type {event!r} (known: {', '.join(EVENT_TYPES)})"
                )


class HeteroGNN(nn.Module):
    """Feature inputs and ``layers`` HeteroConv rounds; forward returns user/product vectors."""

    def __init__(self, convs: list[nn.Module], encoder: FeatureEncoder, dim: int):
        super().__init__()
        self.encoder = encoder
        self.user_input = nn.Parameter(torch.randn(dim) * 0.1)
        self.convs = nn.ModuleList(convs)

    def inputs(self, features: ProductFeatures, n_id: dict[str, Tensor]) -> dict[str, Tensor]:
        encoder = self.encoder
        return {
            "product": encoder(features, n_id["product"]),
            "category": encoder.lookup(encoder.category, features.category_rows[n_id["category"]]),
            "seller": encoder.lookup(encoder.seller, features.seller_rows[n_id["seller"]]),
            "user": self.user_input.expand(len(n_id["user"]), -1),
        }

    def propagate(
        self, x: dict[str, Tensor], edges: dict[EdgeType, Tensor], upto: int | None = None
    ) -> dict[str, Tensor]:
        """Node vectors after the first ``upto`` layers (all by default)."""
        layers = len(self.convs) if upto is None else upto
        for depth in range(layers):
            out = self.convs[depth](x, edges)
            if depth < len(self.convs) - 1:
                out = {key: F.relu(value) for key, value in out.items()}
            x = {**x, **out}  # categories and sellers only send: they keep their inputs
        return x

    def forward(
        self, features: ProductFeatures, n_id: dict[str, Tensor], edges: dict[EdgeType, Tensor]
    ) -> dict[str, Tensor]:
        return self.propagate(self.inputs(features, n_id), edges)


class HeteroGNNRecommender(Recommender):
    """Base of the inductive hetero GNN recommenders; subclasses supply :meth:`make_conv`."""

    config_class = HeteroGNNConfig

    def __init__(self, config: HeteroGNNConfig, num_users: int, num_items: int):
        super().__init__(config, num_users, num_items)
        config.validate(self.name)
        self.net: HeteroGNN | None = None
        self.features: ProductFeatures | None = None
        self.event_types: tuple[str, ...] = ()
        self._items: Tensor | None = None  # (I, D) L2-normalised, from the training graph
        self._users: dict[tuple[int, str], Tensor] = {}  # (id(data), stage) -> (U, D)
        self._cached_data: InteractionData | None = None
        self._priors: dict[tuple[int, str], StagePriors] = {}  # same keys as _users
        self.prior = PriorWeights()  # chosen on validation after training

    @abstractmethod
    def make_conv(self, edge_type: EdgeType, dim: int) -> nn.Module:
        """The message-passing layer for one edge type (bipartite (dim, dim) -> dim)."""

    # Building -----------------------------------------------------------------------------------
    def relations(self) -> list[EdgeType]:
        names = [MERGED] if self.config.merge_events else list(self.event_types)
        edge_types = []
        for name in names:
            edge_types += [("user", name, "product"), ("product", f"rev_{name}", "user")]
        return [*edge_types, *CATALOGUE_EDGES]

    def _build_net(self) -> None:
        assert self.features is not None
        dim = self.config.dim
        encoder = FeatureEncoder(
            len(self.features.categories),
            len(self.features.sellers),
            self.features.price_buckets,
            dim,
        )
        with warnings.catch_warnings():
            # Categories and sellers only send messages (they keep their input vectors), which
            # HeteroConv warns about; that is the design here.
            warnings.filterwarnings("ignore", message=r".*do not get updated during message")
            convs = [
                torch_geometric.nn.HeteroConv(
                    {edge_type: self.make_conv(edge_type, dim) for edge_type in self.relations()},
                    aggr="sum",
                )
                for _ in range(self.config.layers)
            ]
        self.net = HeteroGNN(convs, encoder, dim)

    def graph(self, data: InteractionData, stage: Stage) -> tuple[HeteroData, ProductFeatures]:
        """The message-passing graph of ``history(stage)`` and its features (frozen vocab)."""
        market_graph = build_graph(data, stage, event_types=self.event_types, add_reverse=False)
        view, _ = interaction_view(market_graph, self.event_types, self.config.merge_events)
        if self.features is None:
            features = ProductFeatures.from_graph(market_graph, self.config.price_buckets)
        else:
            features = ProductFeatures.from_graph(
                market_graph,
                self.config.price_buckets,
                self.features.categories,
                self.features.sellers,
            )
        return view, features

    # Training ---------------------------------------------------------------------------------
    def fit(self, data: InteractionData, progress: bool = True) -> TrainReport:
        with torch_threads(self.config.threads):
            return self._fit(data, progress)

    def _fit(self, data: InteractionData, progress: bool) -> TrainReport:
        config = self.config
        torch.manual_seed(config.seed)
        self.event_types = tuple(config.event_types or data.info.positive_events)
        view, self.features = self.graph(data, "valid")
        self._build_net()
        assert self.net is not None
        pairs = data.train_matrix().tocoo()
        if pairs.nnz == 0:
            raise ValueError(f"{self.name}: the training split has no positive events")
        label_index = torch.from_numpy(np.stack([pairs.row, pairs.col]).astype(np.int64))
        relations = [t for t in self.relations() if t[0] == "user"]
        fanouts = {}
        for edge_type in view.edge_types:
            catalogue = edge_type[0] in ("category", "seller")
            fanouts[edge_type] = [1] * config.layers if catalogue else list(config.fanouts)
        sampler = HeteroNeighborSampler(view, fanouts, seed=config.seed)
        loader = torch_geometric.loader.LinkLoader(
            view,
            sampler,
            edge_label_index=(relations[0], label_index),
            neg_sampling=torch_geometric.sampler.NegativeSampling(
                "triplet", amount=config.num_negatives
            ),
            batch_size=config.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(config.seed),
        )
        optimizer = torch.optim.Adam(
            self.net.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        interaction_types = [t for t in view.edge_types if "product" in (t[0], t[2])]
        interaction_types = [t for t in interaction_types if "user" in (t[0], t[2])]

        def run_epoch(epoch: int) -> dict[str, float]:
            assert self.net is not None
            self.net.train()
            total = sample_seconds = 0.0
            steps = 0
            batches = iter(loader)
            bar = tqdm(
                total=len(loader),
                desc=f"{self.name} epoch {epoch}",
                disable=not progress,
                leave=False,
            )
            step_start = time.perf_counter()
            while True:
                tick = time.perf_counter()
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                sample_seconds += time.perf_counter() - tick
                loss = self._train_step(batch, interaction_types, optimizer)
                total += loss
                steps += 1
                bar.update(1)
            bar.close()
            seconds = time.perf_counter() - step_start
            return {
                "loss": total / max(steps, 1),
                "sample_share": sample_seconds / seconds if seconds > 0 else 0.0,
            }

        def snapshot() -> Any:
            assert self.net is not None
            return copy.deepcopy(self.net.state_dict())

        def restore(state: Any) -> None:
            assert self.net is not None
            self.net.load_state_dict(state)

        hooks = EpochHooks(
            run_epoch=run_epoch,
            refresh=lambda: self._refresh(data, view),
            score_users=lambda users: self.score(data, "valid", users),
            snapshot=snapshot,
            restore=restore,
        )
        report = train_epochs(self.name, config, data, hooks)
        self.prior = select_config_weights(
            lambda weights: lambda users: self._score(data, "valid", users, weights),
            data,
            config,
            self.name,
        )
        return report

    def _train_step(
        self,
        batch: HeteroData,
        interaction_types: list[EdgeType],
        optimizer: torch.optim.Optimizer,
    ) -> float:
        assert self.net is not None and self.features is not None
        users = batch["user"].src_index  # (B,) local rows
        positives = batch["product"].dst_pos_index  # (B,)
        negatives = batch["product"].dst_neg_index.reshape(-1)  # (B * n,)
        user_ids, product_ids = batch["user"].n_id, batch["product"].n_id
        num_items = np.int64(self.num_items)
        target_keys = user_ids[users] * num_items + product_ids[positives]
        cold = torch.rand(len(product_ids)) < self.config.cold_item_rate  # (P,) local rows
        edges = {}
        for edge_type in batch.edge_types:
            index = batch[edge_type].edge_index
            if edge_type in interaction_types and index.numel():
                user_side = 0 if edge_type[0] == "user" else 1
                keys = user_ids[index[user_side]] * num_items + product_ids[index[1 - user_side]]
                keep = ~torch.isin(keys, target_keys)
                if user_side == 0:  # user -> product: cold products hear nothing from users
                    keep &= ~cold[index[1]]
                index = index[:, keep]
            edges[edge_type] = index
        n_id = {key: batch[key].n_id for key in ("user", "product", "category", "seller")}
        out = self.net(self.features, n_id, edges)
        candidates = torch.cat([positives, negatives])  # (C,) local product rows
        candidate_ids = product_ids[candidates]
        mask = candidate_ids[None, :] == product_ids[positives][:, None]  # (B, C)
        loss = softmax_loss(
            out["user"][users],
            out["product"][candidates],
            torch.arange(len(users)),
            self.config.temperature,
            mask,
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    # Inference --------------------------------------------------------------------------------
    def _require(self) -> HeteroGNN:
        if self.net is None or self._items is None:
            raise RuntimeError(
                f"{self.name}: the model is not trained (call fit or load_state_dict)"
            )
        return self.net

    @torch.no_grad()
    def _full(self, view: HeteroData, features: ProductFeatures) -> dict[str, Tensor]:
        net = self._require() if self._items is not None else self.net
        assert net is not None
        net.eval()
        n_id = {key: torch.arange(view[key].num_nodes) for key in view.node_types}
        out = net(features, n_id, {t: view[t].edge_index for t in view.edge_types})
        return {key: F.normalize(out[key], dim=1) for key in ("user", "product")}

    def _refresh(self, data: InteractionData, view: HeteroData) -> None:
        assert self.features is not None
        out = self._full(view, self.features)
        self._items = out["product"]
        self._users = {(id(data), "valid"): out["user"]}
        if self._cached_data is not data:
            self._priors = {}
        self._cached_data = data  # keeps id(data) from being reused while cached

    def embed(self, data: InteractionData, stage: Stage) -> dict[str, Tensor]:
        """User and product vectors on the graph of ``data.history(stage)`` (any dataset whose
        catalogue shares ids with the training one: new products, users, sellers are fine)."""
        self._require()
        view, features = self.graph(data, stage)
        return self._full(view, features)

    def embed_items(self, data: InteractionData, stage: Stage = "test") -> Tensor:
        """(data.num_items, D) product vectors of ``data``'s catalogue (inductive)."""
        return self.embed(data, stage)["product"]

    def _user_table(self, data: InteractionData, stage: Stage) -> Tensor:
        key = (id(data), stage)
        if key not in self._users or self._cached_data is not data:
            if self._cached_data is not data:
                self._users, self._priors = {}, {}
            self._users[key] = self.embed(data, stage)["user"]
            self._cached_data = data
        return self._users[key]

    def _stage_priors(self, data: InteractionData, stage: Stage) -> StagePriors:
        self._user_table(data, stage)  # resets the caches when ``data`` changed
        key = (id(data), stage)
        if key not in self._priors:
            config = self.config
            self._priors[key] = StagePriors.build(
                data, stage, config.history_len, config.fresh_half_life_days
            )
        return self._priors[key]

    def _score(
        self, data: InteractionData, stage: Stage, users: np.ndarray, weights: PriorWeights
    ) -> Tensor:
        self._require()
        table = self._user_table(data, stage)
        users = np.asarray(users)
        scores = table[torch.as_tensor(users, dtype=torch.long)] @ self._items.T
        if not weights.active:
            return scores
        return self._stage_priors(data, stage).add_to(scores, users, weights)

    def score(self, data: InteractionData, stage: Stage, users: np.ndarray) -> Tensor:
        return self._score(data, stage, users, self.prior)

    def item_embeddings(self) -> Tensor:
        self._require()
        return self._items.clone()

    def user_embeddings(self, data: InteractionData, stage: Stage) -> Tensor:
        self._require()
        return self._user_table(data, stage).clone()

    # Persistence ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        net = self._require()
        assert self.features is not None
        return {
            "net": {key: value.clone() for key, value in net.state_dict().items()},
            "features": self.features.state(),
            "event_types": list(self.event_types),
            "items": self._items.clone(),
            **self.prior.state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("net", "features", "event_types", "items"):
            if key not in state:
                raise ValueError(f"{self.name} state lacks '{key}'")
        expected = (self.num_items, self.config.dim)
        if tuple(state["items"].shape) != expected:
            raise ValueError(
                f"{self.name} state 'items' has shape {tuple(state['items'].shape)}, "
                f"expected {expected}"
            )
        self.event_types = tuple(state["event_types"])
        self.features = ProductFeatures.from_state(state["features"])
        self._build_net()
        assert self.net is not None
        self.net.load_state_dict(state["net"])
        self._items = state["items"].clone()
        self.prior = PriorWeights.from_state(state)
        self._users, self._priors = {}, {}
        self._cached_data = None
