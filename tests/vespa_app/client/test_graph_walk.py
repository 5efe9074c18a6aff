"""Random walks with restart on the item-user graph (vespa_app/client/graph_walk.py), on
hand-made graphs whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from model_export.graph import GRAPH_FILE, bipartite_csr
from vespa_app.client.graph_walk import ItemGraph, WalkConfig, load_graph


def two_communities() -> ItemGraph:
    """Users 0-2 bought items 0-3 only, users 3-5 items 4-7 only; item 8 has no user."""
    pairs = [(u, i) for u in range(3) for i in range(4)] + [
        (u, i) for u in range(3, 6) for i in range(4, 8)
    ]
    pairs += [(0, 1)]  # a duplicate edge counts once
    users, items = np.array(pairs).T
    arrays = bipartite_csr(users, items, num_users=6, num_items=9)
    return ItemGraph(**arrays, product_ids=[f"p{i}" for i in range(9)])


def test_csr_arrays_hold_each_pair_once_both_ways():
    arrays = bipartite_csr(np.array([0, 0, 1, 0]), np.array([2, 1, 2, 2]), 2, 3)
    assert arrays["user_indptr"].tolist() == [0, 2, 3]
    assert arrays["user_items"].tolist() == [1, 2, 2]
    assert arrays["item_indptr"].tolist() == [0, 0, 1, 3]
    assert arrays["item_users"].tolist() == [0, 0, 1]


def test_walks_stay_in_the_seed_community_and_leave_the_seeds_out():
    graph = two_communities()
    result = graph.walk([0], WalkConfig(walkers=500, steps=6, budget_ms=1e6), top_n=10)
    assert set(result.item_idx.tolist()) == {1, 2, 3}
    assert result.visits.sum() == result.total_visits > 0
    assert result.steps == 6
    # Each of the three other items is equally reachable: visits within a few percent.
    shares = result.visits / result.visits.sum()
    assert np.allclose(shares, 1 / 3, atol=0.05)


def test_seeded_runs_repeat_and_exclusions_and_unknown_seeds_are_handled():
    graph = two_communities()
    config = WalkConfig(walkers=300, steps=4, seed=7, budget_ms=1e6)
    a = graph.walk_ids(["p4", "p0"], config)
    b = graph.walk_ids(["p4", "p0"], config)
    assert a == b and set(a) == {"p1", "p2", "p3", "p5", "p6", "p7"}
    assert sum(a.values()) == pytest.approx(1.0)
    # Newer seeds get more walkers: p4's community (first) is visited more than p0's.
    assert sum(a[p] for p in ("p5", "p6", "p7")) > sum(a[p] for p in ("p1", "p2", "p3"))
    excluded = graph.walk_ids(["p4"], config, exclude_ids=["p5"])
    assert "p5" not in excluded and set(excluded) == {"p6", "p7"}
    assert graph.walk_ids(["p8", "nowhere"], config) == {}  # no users, not in the graph
    assert len(graph.walk_ids(["p0"], config, top_n=2)) == 2


def test_the_time_budget_stops_early():
    graph = two_communities()
    result = graph.walk([0], WalkConfig(walkers=100, steps=1000, budget_ms=0.0))
    assert result.steps == 1 and result.item_idx.size > 0


def test_inconsistent_graphs_and_configs_are_refused(tmp_path):
    arrays = bipartite_csr(np.array([0]), np.array([0]), 1, 1)
    with pytest.raises(ValueError, match="2 product ids for 1 item rows"):
        ItemGraph(**arrays, product_ids=["a", "b"])
    broken = dict(arrays, item_users=np.array([3]))
    with pytest.raises(ValueError, match="past the last row"):
        ItemGraph(**broken)
    with pytest.raises(ValueError, match="restart"):
        WalkConfig(restart=1.0)
    assert load_graph(tmp_path) is None  # an export without graph.npz: no walk candidates
    np.savez(tmp_path / GRAPH_FILE, item_indptr=arrays["item_indptr"])
    (tmp_path / "product_ids.json").write_text('["a"]')
    with pytest.raises(ValueError, match=r"graph\.npz: missing array 'item_users'"):
        load_graph(tmp_path)
