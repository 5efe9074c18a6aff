"""The offline pipeline evaluator: hand-computed metrics and the three stages on tiny data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from tests.trainer.data.builders import T0, frames, marketplace
from trainer.data.splits import cold_users, split_dataset
from trainer.data.synthetic import generate
from trainer.evaluation.pipeline import (
    GLOBAL_FRESH,
    BaselineSystem,
    Catalogue,
    GraphRankerSystem,
    Request,
    blocked_items,
    catalog_coverage,
    ild_embedding,
    ild_labels,
    ild_path,
    padded_hits,
    pipeline_metrics,
    run_pipeline,
    sample_users,
    seller_exposure,
)
from trainer.models.baselines.bpr_mf import BPRMF
from trainer.models.ranker import Ranker, RankerConfig
from vespa_app.client.rerank import RequestContext, Reranker, RerankRules


# ----- metrics by hand ---------------------------------------------------------------------------
def test_coverage_counts_distinct_items_over_the_whole_catalogue():
    lists = np.array([[0, 1, -1], [1, 2, 3]])
    assert catalog_coverage(lists, 8) == pytest.approx(4 / 8)


def test_padded_slots_are_never_hits_and_precision_divides_by_k():
    lists = np.array([[2, -1, -1], [0, 1, 2]])
    targets = sp.csr_matrix(np.array([[1, 0, 1], [0, 1, 1]], dtype=np.float32))
    hits = padded_hits(lists, targets)
    assert hits.tolist() == [[True, False, False], [False, True, True]]
    assert (hits.sum(axis=1) / 3).tolist() == pytest.approx([1 / 3, 2 / 3])


def test_label_ild_by_hand():
    labels = np.array([0, 0, 1, -1])
    # pairs (0,1) same, (0,2) and (1,2) different: 1 - 1/3
    assert ild_labels(np.array([[0, 1, 2]]), labels) == pytest.approx(2 / 3)
    # item 3 has no label and the padding is ignored: only the pair (0, 2), different
    assert ild_labels(np.array([[0, 3, 2, -1]]), labels) == pytest.approx(1.0)
    # mean over lists; a list without a comparable pair is left out
    assert ild_labels(np.array([[0, 1, -1], [0, 2, -1], [3, -1, -1]]), labels) == pytest.approx(0.5)


def test_path_ild_uses_shared_depth_over_the_deeper_path():
    codes = np.array(
        [
            [0, 1, 2],  # home / home/kitchen / home/kitchen/knives
            [0, 1, 3],  # home / home/kitchen / home/kitchen/pans
            [4, 5, -1],  # garden / garden/tools
            [0, -1, -1],  # home
        ]
    )
    # (0,1) 2/3, (0,2) 0, (1,2) 0 -> mean similarity 2/9
    assert ild_path(np.array([[0, 1, 2]]), codes) == pytest.approx(1 - 2 / 9)
    # (0,3): shares "home", deeper path has depth 3 -> 1/3
    assert ild_path(np.array([[0, 3]]), codes) == pytest.approx(2 / 3)


def test_embedding_ild_by_hand():
    vectors = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    assert ild_embedding(np.array([[0, 1]]), vectors) == pytest.approx(1.0)
    # (0,1) cos 0, (0,2) cos 1, (1,2) cos 0: 1 - 1/3
    assert ild_embedding(np.array([[0, 1, 2]]), vectors) == pytest.approx(2 / 3)


# ----- the catalogue the re-ranker sees ----------------------------------------------------------
def test_catalogue_carries_what_the_serving_pipeline_passes():
    tables = frames()
    products = tables["products"].copy()
    products.loc[1, "seller_id"] = None
    products.loc[2, ["price", "margin", "created_at"]] = [np.nan, np.nan, pd.NaT]
    products.loc[3, "in_stock"] = False
    data = split_dataset(marketplace(products=products))
    catalogue = Catalogue.from_data(data)
    row = int(data.items.to_idx(["p0"])[0])
    assert catalogue.paths[row] == ("home", "home/kitchen")
    assert catalogue.seller_ids[int(data.items.to_idx(["p1"])[0])] == ""
    assert catalogue.seller_codes[int(data.items.to_idx(["p1"])[0])] == -1
    assert catalogue.created_at[row] == int(T0.timestamp())
    p2 = int(data.items.to_idx(["p2"])[0])
    (candidate,) = catalogue.candidates(np.array([p2]), np.array([0.5]), None, "baseline")
    assert (candidate.price, candidate.margin, candidate.created_at) == (0.0, 0.0, None)
    assert candidate.ranker_score is None and candidate.retrieval_score == 0.5
    assert not catalogue.in_stock[int(data.items.to_idx(["p3"])[0])]
    # freshness as Vespa's: 1 at listing, 0.5 after 15 days, 0 after 30 and for undated items
    now = int(T0.timestamp())
    fresh = catalogue.freshness(np.array([row, row, p2]), now + 15 * 86400)
    assert fresh.tolist() == pytest.approx([0.5, 0.5, 0.0])
    assert catalogue.freshness(np.array([row]), now + 40 * 86400).tolist() == [0.0]


# ----- the pipeline on the tiny synthetic marketplace --------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    data = split_dataset(generate("tiny", seed=0))
    model = BPRMF(BPRMF.test_config(), data.num_users, data.num_items)
    model.fit(data, progress=False)
    return data, Catalogue.from_data(data), model


def _expected_top(model, data, catalogue, user, k):
    scores = model.score(data, "test", np.array([user]))[0].numpy().astype(np.float64)
    blocked = blocked_items(data, "test")
    scores[blocked.indices[blocked.indptr[user] : blocked.indptr[user + 1]]] = -np.inf
    scores[~catalogue.in_stock] = -np.inf
    return np.argsort(-scores, kind="stable")[:k]


def test_neutral_rules_keep_the_baseline_order_over_eligible_items(tiny):
    data, catalogue, model = tiny
    users = sample_users(data, "test", None)
    run = run_pipeline(
        BaselineSystem(model, catalogue), data, "test", users, Reranker(RerankRules())
    )
    assert run.lists.shape == (len(users), 10)
    for user, listed in zip(users, run.lists, strict=True):
        assert listed.tolist() == _expected_top(model, data, catalogue, user, 10).tolist()
    assert run.score_source == {"retrieval": len(users)}
    assert set(run.latency_ms) == {"retrieve", "rank", "rerank", "total"}
    assert (run.latency_ms["total"] >= run.latency_ms["rerank"]).all()


def test_shipped_rules_are_applied(tiny):
    data, catalogue, model = tiny
    users = sample_users(data, "test", None)
    system = BaselineSystem(model, catalogue)
    run = run_pipeline(
        system, data, "test", users, Reranker(), seller_exposure(data, "test", catalogue)
    )
    raw_max = max(
        np.unique(
            catalogue.seller_ids[_expected_top(model, data, catalogue, u, 10)], return_counts=True
        )[1].max()
        for u in users
    )
    assert raw_max > 2, "the tiny data must give the seller cap something to do"
    blocked = blocked_items(data, "test")
    for user, listed in zip(users, run.lists, strict=True):
        listed = listed[listed >= 0]
        # rules.toml: at most 2 items of one seller in any 10 consecutive slots
        assert np.unique(catalogue.seller_ids[listed], return_counts=True)[1].max() <= 2
        assert catalogue.in_stock[listed].all()
        assert not np.isin(
            listed, blocked.indices[blocked.indptr[user] : blocked.indptr[user + 1]]
        ).any()
    assert run.rules_moved.get("seller_cap", 0) > 0


def test_pipeline_metrics_match_a_count_by_hand(tiny):
    data, catalogue, model = tiny
    users = sample_users(data, "test", None)
    run = run_pipeline(BaselineSystem(model, catalogue), data, "test", users, Reranker())
    metrics = pipeline_metrics(run, data, "test", catalogue)
    targets = data.test.groupby("user_idx")["item_idx"].agg(set)
    hits = np.array(
        [
            len(set(lst[lst >= 0].tolist()) & targets[u])
            for u, lst in zip(users, run.lists, strict=True)
        ]
    )
    assert metrics["Precision@10"] == pytest.approx((hits / 10).mean())
    assert metrics["HR@10"] == pytest.approx((hits > 0).mean())
    listed = np.unique(run.lists[run.lists >= 0])
    assert metrics["Coverage@10"] == pytest.approx(len(listed) / data.num_items)
    cold = np.isin(users, cold_users(data, "test", 3))
    assert 0 < cold.sum() < len(users)
    assert metrics["cold_users/users"] == cold.sum()
    assert metrics["cold_users/Precision@10"] == pytest.approx((hits[cold] / 10).mean())
    assert metrics["latency/total/p99_ms"] >= metrics["latency/total/p50_ms"] > 0


def test_graph_ranker_system_stages(tiny):
    data, catalogue, model = tiny
    users = sample_users(data, "test", None)
    ranker = Ranker(RankerConfig(blocks=1, dim=16, heads=2, hidden=16), model.item_embeddings())
    system = GraphRankerSystem(model, ranker, catalogue, target_hits=200, rank_count=50)
    system.prepare(data, "test", users)
    blocked = blocked_items(data, "test")
    for position in (0, len(users) - 1):
        user = int(users[position])
        request = Request(
            position, user, blocked.indices[blocked.indptr[user] : blocked.indptr[user + 1]]
        )
        items, closeness = system.retrieve(request)
        assert len(items) == 50 and len(set(items.tolist())) == 50
        assert catalogue.in_stock[items].all() and not np.isin(items, request.blocked).any()
        assert ((closeness > 0) & (closeness <= 1)).all()
        # stage 2 equals the ranker's own scoring of the same candidates (+ 0.05 freshness)
        scores = system.rank(request, items)
        expected = ranker.score_candidates(data, "test", np.array([user]), items[None])[0]
        fresh = GLOBAL_FRESH * catalogue.freshness(items, system.now)
        assert scores == pytest.approx(expected + fresh, abs=1e-5)
    # An untrained residual ranker is retrieval order: w * cos (+ freshness, same for both).
    residual = Ranker(
        RankerConfig(blocks=1, dim=16, heads=2, hidden=16),
        model.item_embeddings(),
        user_embeddings=model.user_embeddings(data, "test"),
    )
    system = GraphRankerSystem(model, residual, catalogue, target_hits=200, rank_count=50)
    system.prepare(data, "test", users)
    user = int(users[0])
    request = Request(0, user, blocked.indices[blocked.indptr[user] : blocked.indptr[user + 1]])
    items, closeness = system.retrieve(request)
    cosine = 2.0 - 1.0 / closeness
    fresh = GLOBAL_FRESH * catalogue.freshness(items, system.now)
    assert system.rank(request, items) == pytest.approx(residual.weight * cosine + fresh, abs=1e-4)


def test_product_vectors_reach_the_candidates_normalised(tiny):
    _, catalogue, model = tiny
    with_vectors = catalogue.with_embeddings(model.item_embeddings().numpy())
    (candidate,) = with_vectors.candidates(np.array([3]), np.array([1.0]), np.array([2.0]), "ann")
    assert np.linalg.norm(candidate.embedding) == pytest.approx(1.0, abs=1e-6)
    result = Reranker().rerank(
        with_vectors.candidates(np.arange(20), np.ones(20), np.arange(20.0), "ann"),
        RequestContext(user_id="u", now=0, k=10),
    )
    assert result.summary["similarity"] == "embedding"
    with pytest.raises(ValueError, match="3 product vectors for"):
        catalogue.with_embeddings(np.ones((3, 4)))
