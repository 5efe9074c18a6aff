"""LightGCN: the fast propagation's gradient, the adjacency, the losses, and learning for real."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from tests.trainer.graph_toy import toy_market
from tests.trainer.models.planted import planted_marketplace
from trainer.data.splits import split_dataset
from trainer.graph.propagation import (
    SymmetricSpMM,
    layer_mean,
    normalized_adjacency,
    propagate_layers,
    propagate_mean,
    to_torch_csr,
)
from trainer.models.base import load_checkpoint, save_checkpoint
from trainer.models.baselines.mostpop import MostPop, MostPopConfig
from trainer.models.lightgcn import LightGCN, LightGCNConfig, interaction_adjacency


def random_adjacency(num_nodes: int = 12, num_edges: int = 30, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, num_nodes, num_edges)
    cols = rng.integers(0, num_nodes, num_edges)
    keep = rows != cols
    return normalized_adjacency(rows[keep], cols[keep], rng.uniform(0.5, 2, keep.sum()), num_nodes)


def test_normalized_adjacency_is_symmetric_d_half_a_d_half():
    rows, cols = np.array([0, 0, 1, 2]), np.array([1, 2, 3, 3])
    weights = np.array([1.0, 2.0, 1.0, 0.5])
    got = normalized_adjacency(rows, cols, weights, 5).toarray()
    dense = np.zeros((5, 5))
    dense[rows, cols] = weights
    dense = dense + dense.T
    degree = dense.sum(1)
    inv = np.where(degree > 0, 1 / np.sqrt(np.where(degree > 0, degree, 1)), 0)
    np.testing.assert_allclose(got, inv[:, None] * dense * inv[None, :], rtol=1e-6)
    assert not got[4].any()  # isolated node: zero row, no division by zero


def test_custom_backward_passes_gradcheck():
    matrix = random_adjacency()
    csr64 = to_torch_csr(matrix, dtype=torch.float64)
    x = torch.randn(12, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: SymmetricSpMM.apply(csr64, t), (x,))


def test_fused_mean_propagation_passes_gradcheck():
    csr64 = to_torch_csr(random_adjacency(seed=4), dtype=torch.float64)
    x = torch.randn(12, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: propagate_mean(csr64, t, 3), (x,))


def test_multi_layer_gradient_equals_dense_autograd():
    matrix = random_adjacency(num_nodes=20, num_edges=60, seed=1)
    dense = torch.from_numpy(matrix.toarray())
    ego = torch.randn(20, 4, requires_grad=True)
    weight = torch.randn(20, 4)
    (layer_mean(propagate_layers(to_torch_csr(matrix), ego, 3)) * weight).sum().backward()
    per_layer = ego.grad.clone()
    ego.grad = None
    (propagate_mean(to_torch_csr(matrix), ego, 3) * weight).sum().backward()
    fused = ego.grad.clone()
    ego.grad = None
    layers = [ego]
    for _ in range(3):
        layers.append(dense @ layers[-1])
    (torch.stack(layers).mean(0) * weight).sum().backward()
    torch.testing.assert_close(per_layer, ego.grad)
    torch.testing.assert_close(fused, ego.grad)


def test_event_weights_give_the_strongest_event_per_pair():
    data = split_dataset(toy_market(seed=5))
    weights = {"purchase": 4.0, "click": 1.0}
    adjacency = interaction_adjacency(data, "valid", weights)
    users, items = data.num_users, data.num_items
    train = data.train
    # Unnormalise: Â[u, U+i] * sqrt(d_u d_i) must be the pair's largest weight.
    raw = np.zeros((users, items))
    for code, name in ((1, "click"), (4, "purchase")):
        rows = train[train["event"] == code]
        raw[rows["user_idx"], rows["item_idx"]] = np.maximum(
            raw[rows["user_idx"], rows["item_idx"]], weights[name]
        )
    degree = np.concatenate([raw.sum(1), raw.sum(0)])
    block = adjacency.toarray()[:users, users:]
    scale = np.sqrt(np.outer(degree[:users], degree[users:]))
    np.testing.assert_allclose(block * scale, raw, rtol=1e-5, atol=1e-6)
    # Cart/favorite are absent from the mapping, so pairs with only those have no edge.
    assert (raw > 0).sum() == (block > 0).sum()


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="loss must be one of"):
        LightGCNConfig(loss="hinge")
    with pytest.raises(ValueError, match="unknown event type 'view'"):
        LightGCNConfig(event_weights={"view": 1.0})
    with pytest.raises(ValueError, match=r"event_weights\['click'\] must be >= 0"):
        LightGCNConfig(event_weights={"click": -1.0})
    with pytest.raises(ValueError, match="normalize must be one of none, final, ego"):
        LightGCNConfig(normalize="cosine")


@pytest.mark.parametrize("normalize", ["none", "final", "ego"])
def test_normalize_sets_where_rows_are_unit_length(planted, normalize):
    """ "final" scores cosines of the propagated means; "ego" propagates unit ego rows and
    scores their dot products (magnitudes from the graph); "none" propagates raw rows."""
    config = LightGCNConfig(
        dim=8, layers=2, epochs=1, batch_size=256, loss="softmax", num_negatives=8,
        normalize=normalize, patience=0, threads=1,
    )  # fmt: skip
    model = LightGCN(config, planted.num_users, planted.num_items)
    model.fit(planted, progress=False)
    adjacency = to_torch_csr(interaction_adjacency(planted, "valid", None))
    ego = model.net.ego.detach()
    start = torch.nn.functional.normalize(ego, dim=1) if normalize == "ego" else ego
    final = propagate_mean(adjacency, start, 2)
    users, items = final[: planted.num_users], final[planted.num_users :]
    if normalize == "final":
        users = torch.nn.functional.normalize(users, dim=1)
        items = torch.nn.functional.normalize(items, dim=1)
    expected = users @ items.T
    scores = model.score(planted, "test", np.arange(planted.num_users))
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-6)
    norms = model.item_embeddings().norm(dim=1)
    if normalize == "final":
        torch.testing.assert_close(norms, torch.ones_like(norms))
    else:  # magnitudes vary with the graph
        assert float(norms.std()) > 1e-3


def test_state_shape_mismatch_is_named():
    model = LightGCN(LightGCNConfig(dim=8), 3, 4)
    with pytest.raises(ValueError, match="state 'ego' has shape"):
        model.load_state_dict({"ego": torch.zeros(2, 8)})
    with pytest.raises(RuntimeError, match="not trained"):
        model.item_embeddings()


def recall_at(model, data, k: int = 5) -> float:
    targets = data.test
    users = np.unique(targets["user_idx"].to_numpy())
    top = model.recommend(data, "test", users, k=k).numpy()
    wanted = targets.groupby("user_idx")["item_idx"].apply(set)
    return float(
        np.mean([len(wanted[u] & set(top[r])) / len(wanted[u]) for r, u in enumerate(users)])
    )


@pytest.fixture(scope="module")
def planted():
    return split_dataset(planted_marketplace(num_users=80, num_items=40, events_per_user=8))


PLANTED = {"dim": 16, "layers": 2, "batch_size": 64, "lr": 0.01, "patience": 0, "threads": 1}
SOFTMAX = {**PLANTED, "epochs": 15, "loss": "softmax", "num_negatives": 16}


@pytest.mark.parametrize(
    "config",
    [
        LightGCNConfig(**PLANTED, epochs=40),
        LightGCNConfig(**SOFTMAX, temperature=0.2),
        LightGCNConfig(**SOFTMAX, normalize="ego", temperature=0.1),
    ],
    ids=["bpr", "softmax", "softmax-ego"],
)
def test_beats_mostpop_on_a_planted_marketplace(planted, config):
    popular = MostPop(MostPopConfig(), planted.num_users, planted.num_items)
    popular.fit(planted, progress=False)
    model = LightGCN(config, planted.num_users, planted.num_items)
    report = model.fit(planted, progress=False)
    assert report.history[-1]["loss"] < report.history[0]["loss"]
    assert recall_at(model, planted) > recall_at(popular, planted) + 0.1


def test_validation_selects_an_epoch_and_checkpoint_restores_it(planted, tmp_path):
    config = LightGCNConfig(dim=8, layers=1, epochs=4, batch_size=128, lr=0.01, threads=1)
    model = LightGCN(config, planted.num_users, planted.num_items)
    report = model.fit(planted, progress=False)
    assert report.best_epoch is not None
    assert "valid_NDCG@20" in report.history[0]
    restored = load_checkpoint(save_checkpoint(model, planted, tmp_path / "m.pt")).model
    users = np.arange(planted.num_users)
    assert torch.equal(restored.score(planted, "test", users), model.score(planted, "test", users))
    assert restored.config == config


def test_time_budget_stops_training(planted):
    config = LightGCNConfig(dim=8, layers=1, epochs=1000, batch_size=64, time_budget=0.5, threads=1)
    report = LightGCN(config, planted.num_users, planted.num_items).fit(planted, progress=False)
    assert report.epochs < 1000
