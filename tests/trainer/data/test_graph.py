"""The graph builder: history-only edges, counts, reverse edges, id maps, missing references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.trainer.graph_toy import toy_market
from trainer.data.graph import (
    NO_TIME,
    build_graph,
    load_graph,
    reverse_type,
    save_graph,
)
from trainer.data.schema import EVENT_TYPES
from trainer.data.splits import split_dataset


@pytest.fixture(scope="module")
def data():
    return split_dataset(toy_market(seed=3))


def test_graph_for_validation_holds_only_training_events(data):
    graph = build_graph(data, stage="valid").data
    last_train = int(data.train["timestamp"].max())
    first_valid = int(data.valid["timestamp"].min())
    assert last_train < first_valid
    for event in EVENT_TYPES:
        times = graph["user", event, "product"].time
        assert times.numel() == 0 or int(times.max()) <= last_train
    # Validation targets are pairs without earlier positive events: none is a positive edge.
    pairs = set()
    for event in data.info.positive_events:
        edge_index = graph["user", event, "product"].edge_index
        pairs |= set(map(tuple, edge_index.t().tolist()))
    targets = set(zip(data.valid["user_idx"], data.valid["item_idx"], strict=True))
    assert targets and not (targets & pairs)


def test_graph_for_test_adds_the_validation_period(data):
    valid_graph = build_graph(data, stage="valid").data
    test_graph = build_graph(data, stage="test").data
    history = data.history("test")
    assert int(history["timestamp"].max()) < int(data.test["timestamp"].min())
    valid_edges = sum(valid_graph["user", e, "product"].num_edges for e in EVENT_TYPES)
    test_edges = sum(test_graph["user", e, "product"].num_edges for e in EVENT_TYPES)
    assert test_edges > valid_edges


def test_edge_counts_and_weights_match_the_events(data):
    graph = build_graph(data, stage="valid").data
    for code, event in enumerate(EVENT_TYPES):
        rows = data.train[data.train["event"] == code]
        store = graph["user", event, "product"]
        pairs = rows.groupby(["user_idx", "item_idx"]).size()
        assert store.num_edges == len(pairs)
        assert float(store.edge_weight.sum()) == len(rows)
        first = rows.groupby(["user_idx", "item_idx"])["timestamp"].min()
        got = dict(zip(map(tuple, store.edge_index.t().tolist()), store.time.tolist(), strict=True))
        assert got == {key: int(value) for key, value in first.items()}


def test_reverse_edges_mirror_forward_edges(data):
    graph = build_graph(data).data
    forward = [t for t in graph.edge_types if not t[1].startswith("rev_")]
    assert len(graph.edge_types) == 2 * len(forward)
    for edge_type in forward:
        rev = graph[reverse_type(edge_type)]
        assert torch.equal(rev.edge_index, graph[edge_type].edge_index.flip(0))
        assert torch.equal(rev.time, graph[edge_type].time)
        assert torch.equal(rev.edge_weight, graph[edge_type].edge_weight)
    assert reverse_type(reverse_type(("user", "click", "product"))) == ("user", "click", "product")


def test_without_reverse_and_with_chosen_event_types(data):
    graph = build_graph(data, event_types=("purchase", "cart"), add_reverse=False).data
    relations = {rel for _, rel, _ in graph.edge_types}
    assert relations == {"purchase", "cart", "sold_by", "in_category", "child_of"}
    with pytest.raises(ValueError, match="unknown event type 'view'"):
        build_graph(data, event_types=("view",))
    with pytest.raises(ValueError, match="stage must be"):
        build_graph(data, stage="train")


def test_products_without_seller_category_or_price(data):
    graph = build_graph(data).data
    product = graph["product"]
    # toy_market: p0 has no seller, p1 no category, p2 no price.
    assert product.seller_idx[0] == -1 and product.category_idx[1] == -1
    assert product.price_bucket[2] == -1
    sold_by = graph["product", "sold_by", "seller"].edge_index
    in_category = graph["product", "in_category", "category"].edge_index
    assert 0 not in sold_by[0].tolist() and 1 not in in_category[0].tolist()
    assert sold_by.size(1) == data.num_items - 1
    assert torch.all(graph["product", "sold_by", "seller"].time == NO_TIME)
    buckets = product.price_bucket[product.price_bucket >= 0]
    assert int(buckets.min()) == 0 and int(buckets.max()) == 9


def test_category_tree_edges_and_depth(data):
    graph = build_graph(data)
    child_of = graph.data["category", "child_of", "category"].edge_index
    ids = graph.id_maps["category"]
    named = {(ids.ids[c], ids.ids[p]) for c, p in child_of.t().tolist()}
    assert ("root0/leaf1", "root0") in named and len(named) == 4
    depth = dict(zip(ids.ids, graph.data["category"].depth.tolist(), strict=True))
    assert depth["root1"] == 0 and depth["root1/leaf0"] == 1


def test_features_reference_existing_nodes(data):
    graph = build_graph(data).data
    assert int(graph["product"].seller_idx.max()) < graph["seller"].num_nodes
    assert int(graph["product"].category_idx.max()) < graph["category"].num_nodes
    for edge_type in graph.edge_types:
        src, _, dst = edge_type
        index = graph[edge_type].edge_index
        if index.numel():
            assert int(index[0].max()) < graph[src].num_nodes
            assert int(index[1].max()) < graph[dst].num_nodes


def test_save_and_load_round_trip(data, tmp_path):
    graph = build_graph(data, stage="test")
    loaded = load_graph(save_graph(graph, tmp_path / "graph.pt"))
    assert loaded.stage == "test" and loaded.event_types == graph.event_types
    assert set(loaded.data.edge_types) == set(graph.data.edge_types)
    for edge_type in graph.data.edge_types:
        for key in ("edge_index", "time", "edge_weight"):
            assert torch.equal(loaded.data[edge_type][key], graph.data[edge_type][key])
    assert torch.equal(loaded.data["product"].seller_idx, graph.data["product"].seller_idx)
    for node_type, id_map in graph.id_maps.items():
        assert loaded.data[node_type].num_nodes == len(id_map)
        np.testing.assert_array_equal(loaded.id_maps[node_type].ids, id_map.ids)
    rows = loaded.to_idx("product", ["p5", "p0"])
    assert rows.tolist() == [5, 0]
    assert loaded.to_id("user", [3]).tolist() == ["u3"]


def test_load_rejects_other_files(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"something": 1}, path)
    with pytest.raises(ValueError, match="not a graph file"):
        load_graph(path)
