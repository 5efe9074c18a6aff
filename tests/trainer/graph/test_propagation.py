"""The embedding cache: a local refresh equals a full recomputation, and stays local."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.trainer.graph_toy import toy_market
from trainer.data.splits import split_dataset
from trainer.graph.propagation import PropagationCache, normalized_adjacency
from trainer.models.lightgcn import LightGCN, LightGCNConfig, interaction_adjacency


def chain_edges(num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """A path 0-1-2-...: k-hop neighbourhoods are small, so locality is visible."""
    nodes = np.arange(num_nodes - 1)
    return nodes, nodes + 1


def assert_matches_full(cache: PropagationCache, ego: torch.Tensor) -> None:
    full = PropagationCache(cache.adjacency, ego, cache.num_layers)
    for got, want in zip(cache.layers, full.layers, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cache.final(), full.final(), rtol=1e-5, atol=1e-6)


def test_refresh_after_new_edge_is_exact_and_local():
    rows, cols = chain_edges(60)
    ego = torch.randn(60, 8)
    cache = PropagationCache(normalized_adjacency(rows, cols, np.ones(len(rows)), 60), ego, 2)
    # A new edge 10-30: both endpoints' degrees change.
    new = normalized_adjacency(np.append(rows, 10), np.append(cols, 30), np.ones(len(rows) + 1), 60)
    recomputed = cache.refresh(new, touched=np.array([10, 30]))
    assert_matches_full(cache, ego)
    # Rows that can change: within (layers + 1) hops of the endpoints; far rows are untouched.
    assert set(recomputed) <= set(range(6, 15)) | set(range(26, 35))
    assert 0 not in recomputed and 59 not in recomputed


def test_refresh_with_removed_edge_changed_ego_and_new_nodes():
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, 50, 120), rng.integers(0, 50, 120)
    keep = rows != cols
    rows, cols = rows[keep], cols[keep]
    ego = torch.randn(50, 4)
    cache = PropagationCache(normalized_adjacency(rows, cols, np.ones(len(rows)), 50), ego, 3)
    removed = 0
    touched = [rows[removed], cols[removed], 50, 3, 51, 7]
    new_rows = np.concatenate([rows[1:], [50, 51, 7]])
    new_cols = np.concatenate([cols[1:], [3, 50, 12]])
    weights = np.ones(len(new_rows))
    weights[-1] = 3.0  # a reweighted edge counts as touching its endpoints (7, 12)
    touched.append(12)
    new_ego = torch.cat([ego, torch.randn(2, 4)])
    new_ego[5] += 1.0
    cache.refresh(
        normalized_adjacency(new_rows, new_cols, weights, 52),
        touched=np.array(touched),
        ego=new_ego,
        changed_ego=np.array([5]),
    )
    assert cache.num_nodes == 52
    assert_matches_full(cache, new_ego)


def test_refresh_finds_the_changed_rows_itself():
    rows, cols = chain_edges(40)
    ego = torch.randn(40, 3)
    cache = PropagationCache(normalized_adjacency(rows, cols, np.ones(39), 40), ego, 2)
    new = normalized_adjacency(np.append(rows, 5), np.append(cols, 20), np.ones(40), 40)
    recomputed = cache.refresh(new)
    assert_matches_full(cache, ego)
    assert len(recomputed) < 40


def test_refresh_rejects_bad_input():
    rows, cols = chain_edges(5)
    adjacency = normalized_adjacency(rows, cols, np.ones(4), 5)
    cache = PropagationCache(adjacency, torch.randn(5, 2), 1)
    with pytest.raises(ValueError, match="new nodes need their ego"):
        cache.refresh(normalized_adjacency(rows, cols, np.ones(4), 6), touched=np.array([5]))
    with pytest.raises(ValueError, match="shrank"):
        cache.refresh(normalized_adjacency(rows[:2], cols[:2], np.ones(2), 4), touched=[0])
    with pytest.raises(ValueError, match="outside"):
        cache.refresh(adjacency, touched=np.array([9]))


def test_lightgcn_cache_refreshes_from_validation_to_test_graph():
    data = split_dataset(toy_market(seed=2))
    model = LightGCN(
        LightGCNConfig(dim=8, layers=2, epochs=2, batch_size=64, threads=1),
        data.num_users,
        data.num_items,
    )
    model.fit(data, progress=False)
    cache = model.embedding_cache(data, "valid")
    torch.testing.assert_close(
        cache.final()[: data.num_users], model.user_embeddings(data, "valid"), rtol=1e-5, atol=1e-6
    )
    # The test-stage history adds the validation period's events: touch their endpoints.
    new_events = data.positives(data.valid_history)
    touched = np.union1d(
        new_events["user_idx"].to_numpy(), data.num_users + new_events["item_idx"].to_numpy()
    )
    recomputed = cache.refresh(interaction_adjacency(data, "test", None), touched=touched)
    assert len(recomputed) > 0
    assert_matches_full(cache, model.net.ego.detach())
