"""GraphSAGE: shapes, learning beyond MostPop, and inductive embeddings of new products/users."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.trainer.graph.eventless import (
    assert_each_cluster_prefers_its_new_product,
    with_eventless_products,
)
from tests.trainer.models.inductive import grown_marketplace, nearest, recall_at
from tests.trainer.models.planted import planted_marketplace
from trainer.data.splits import split_dataset
from trainer.graph.priors import PriorWeights
from trainer.models.baselines.mostpop import MostPop, MostPopConfig
from trainer.models.graphsage import GraphSAGE, GraphSAGEConfig

CONFIG = GraphSAGEConfig(
    dim=16, fanouts=(5, 5), batch_size=64, epochs=15, lr=0.01, patience=0, threads=1
)


@pytest.fixture(scope="module")
def planted():
    return split_dataset(planted_marketplace(num_users=80, num_items=40, events_per_user=8))


@pytest.fixture(scope="module")
def model(planted):
    model = GraphSAGE(CONFIG, planted.num_users, planted.num_items)
    model.report = model.fit(planted, progress=False)
    return model


def test_shapes_and_training_report(model, planted):
    users = np.arange(10)
    assert model.score(planted, "test", users).shape == (10, planted.num_items)
    assert model.item_embeddings().shape == (planted.num_items, CONFIG.dim)
    assert model.user_embeddings(planted, "valid").shape == (planted.num_users, CONFIG.dim)
    history = model.report.history
    assert history[-1]["loss"] < history[0]["loss"]
    assert all(0 < row["sample_share"] < 1 for row in history)
    assert model.report.best_epoch is not None


def test_beats_mostpop_on_the_planted_marketplace(model, planted):
    popular = MostPop(MostPopConfig(), planted.num_users, planted.num_items)
    popular.fit(planted, progress=False)
    assert recall_at(model, planted) > recall_at(popular, planted) + 0.1


def test_new_product_and_new_user_are_embedded_without_retraining(model):
    grown, new_item, new_user = grown_marketplace()
    assert grown.num_items == model.num_items + 1
    out = model.embed(grown, "test")
    items, users = out["product"], out["user"]
    assert items.shape == (grown.num_items, CONFIG.dim)
    assert torch.isfinite(items[new_item]).all() and torch.isfinite(users[new_user]).all()
    # The new product (category "a", no events) sits among category-"a" products.
    half = model.num_items // 2
    assert (nearest(items, new_item) < half).mean() >= 0.8
    # The new user bought category-"b" products: their top items come from "b".
    scores = users[new_user] @ items[: model.num_items].T
    assert (torch.topk(scores, 5).indices.numpy() >= half).mean() >= 0.8


def test_config_is_checked():
    with pytest.raises(ValueError, match="fanouts needs one entry per layer"):
        GraphSAGE(GraphSAGEConfig(layers=3), 2, 2)
    with pytest.raises(ValueError, match="aggr must be"):
        GraphSAGE(GraphSAGEConfig(aggr="median"), 2, 2)
    with pytest.raises(ValueError, match="unknown event type 'view'"):
        GraphSAGE(GraphSAGEConfig(event_types=("view",)), 2, 2)
    with pytest.raises(RuntimeError, match="not trained"):
        GraphSAGE(GraphSAGEConfig(), 2, 2).item_embeddings()


def test_cold_item_rate_is_checked():
    with pytest.raises(ValueError, match="cold_item_rate must be in"):
        GraphSAGE(GraphSAGEConfig(cold_item_rate=1.0), 2, 2)


def test_cold_items_hear_nothing_from_users_in_a_training_step(planted):
    """With cold_item_rate near 1 every product of a batch loses its incoming user edges, so
    the step must see no user->product edge at all (the products' feature-only path is trained);
    product->user edges stay, users are still described by their products."""
    model = GraphSAGE(GraphSAGEConfig(dim=8, fanouts=(5, 5), cold_item_rate=0.999999), 1, 1)
    model.num_users, model.num_items = planted.num_users, planted.num_items
    model.event_types = tuple(planted.info.positive_events)
    view, model.features = model.graph(planted, "valid")
    model._build_net()
    seen: dict = {}
    original = model.net.forward

    def spy(features, n_id, edges):
        seen.update({key: value.shape[1] for key, value in edges.items()})
        return original(features, n_id, edges)

    model.net.forward = spy
    from trainer.graph import torch_geometric
    from trainer.graph.sampling import HeteroNeighborSampler

    pairs = planted.train_matrix().tocoo()
    label = torch.from_numpy(np.stack([pairs.row, pairs.col]).astype(np.int64))
    relation = next(t for t in model.relations() if t[0] == "user")
    loader = torch_geometric.loader.LinkLoader(
        view,
        HeteroNeighborSampler(view, [5, 5], seed=0),
        edge_label_index=(relation, label),
        neg_sampling=torch_geometric.sampler.NegativeSampling("triplet", amount=1),
        batch_size=32,
    )
    batch = next(iter(loader))
    interactions = [t for t in view.edge_types if "user" in (t[0], t[2])]
    optimizer = torch.optim.Adam(model.net.parameters())
    torch.manual_seed(0)
    model._train_step(batch, interactions, optimizer)
    user_to_product = [t for t in interactions if t[0] == "user"]
    product_to_user = [t for t in interactions if t[0] == "product"]
    assert all(seen[t] == 0 for t in user_to_product)
    assert sum(seen[t] for t in product_to_user) > 0


def test_prior_weights_come_from_the_grids_and_travel_in_checkpoints(model, planted):
    assert model.prior.popularity in CONFIG.prior_grid
    assert min(CONFIG.cold_grid) <= model.prior.cold <= max(CONFIG.cold_grid)
    clone = GraphSAGE(CONFIG, planted.num_users, planted.num_items)
    clone.load_state_dict({**model.state_dict(), "prior_weight": 0.4, "cold_weight": 0.2})
    assert clone.prior == PriorWeights(0.4, 0.2)
    users = np.arange(planted.num_users)
    torch.testing.assert_close(
        clone._score(planted, "test", users, PriorWeights()),
        model._score(planted, "test", users, PriorWeights()),
    )


def test_eventless_product_ranks_by_the_users_category(model, planted):
    """Two products with no events, one per cluster: with the cold prior on, users of cluster
    "a" (even users) rank the "a" one higher, users of cluster "b" the other; without it the
    feature-only vectors alone decide."""
    data, new_a, new_b = with_eventless_products(planted)
    grown = GraphSAGE(CONFIG, data.num_users, data.num_items)
    grown.load_state_dict({**model.state_dict(), "items": model.embed_items(data, "test")})
    grown.prior = PriorWeights(cold=1.0)
    scores = grown.score(data, "test", np.arange(data.num_users))
    assert_each_cluster_prefers_its_new_product(scores, new_a, new_b)
