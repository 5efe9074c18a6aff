"""Behavioural tests of the three-stage pipeline on the tiny marketplace served by the engine.

A 128-d BPR-MF and a tiny ranker are trained, exported, installed into a package copy and fed
(tests/webapp/served.py); every test queries that engine through the real client.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest

from tests.vespa_app.conftest import EngineProcess
from tests.webapp.served import Built, build, feed_all, locations
from vespa_app.client import pipeline as pipeline_module
from vespa_app.client.context import context_vector
from vespa_app.client.pipeline import (
    PipelineConfig,
    ProductNotFound,
    RecommendationContext,
    RecommendationPipeline,
    load_item_index,
    load_retrieval_weight,
)
from vespa_app.client.vespa import VespaClient, VespaUnavailable


@pytest.fixture(scope="module")
def built() -> Built:
    return build()


@pytest.fixture(scope="module")
def engine(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    proc = EngineProcess(built.package, tmp_path_factory.mktemp("pipeline-engine") / "data")
    proc.wait_ready()
    feed_all(built, proc.url)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def market(built: Built):
    from trainer.data.loaders import load_dataset

    return load_dataset(built.dataset)


@pytest.fixture
def pipeline(engine: EngineProcess, built: Built) -> Iterator[RecommendationPipeline]:
    client = VespaClient(engine.url, timeout=10.0)
    config = PipelineConfig(locations=locations(built))
    yield RecommendationPipeline(client, config=config, item_index=load_item_index(built.export))
    client.close()


def _users_with_history(pipeline: RecommendationPipeline, market, n: int = 5) -> list[str]:
    out = []
    for user_id in market.users["user_id"]:
        doc = pipeline.vespa.get_document("user", user_id) or {}
        if len(doc.get("recent_product_ids") or []) >= 5:
            out.append(user_id)
        if len(out) == n:
            break
    return out


def test_ctx_encoding_equals_the_trainers():
    from trainer.ranking.features import context_vectors

    names = ("central", "islands", "north", "south")
    cases = [
        (13, "mobile", "islands", 3600.0),
        (None, None, None, None),
        (0, "app", "south", 0.0),
        (23, "tablet", "nowhere", 10.0 * 365 * 24 * 3600),  # unknown location, clipped gap
        (7, "fridge", "central", 1.5),  # unknown device
    ]
    for hour, device, location, gap in cases:
        mine = context_vector(hour, device, location, gap, names)
        devices = ("mobile", "desktop", "tablet", "app")
        ref = context_vectors(
            np.array([-1 if hour is None else hour]),
            np.array([devices.index(device) if device in devices else -1]),
            np.array([names.index(location) if location in names else -1]),
            np.array([-1.0 if gap is None else gap]),
        )[0]
        np.testing.assert_array_equal(mine, ref)
        assert mine.dtype == np.float32 and mine.shape == (16,)


def test_personalized_list_is_ranked_and_excludes_purchases(pipeline, market):
    users = _users_with_history(pipeline, market)
    assert users
    events = market.events
    consumable = set(market.products.loc[market.products["consumable"], "product_id"])
    for user_id in users:
        doc = pipeline.vespa.get_document("user", user_id)
        purchased = set(
            events[(events.user_id == user_id) & (events.event_type == "purchase")]["product_id"]
        )
        # The caller passes the purchase log (the webapp's event store does); the user document
        # adds the recent history.
        context = RecommendationContext(
            hour=14, device="mobile", exclude_product_ids=tuple(sorted(purchased - consumable))
        )
        result = pipeline.recommend(user_id, 50, context)
        assert result.strategy == "personalized" and result.degraded is None
        assert len(result.items) == 50
        returned = set(result.product_ids)
        assert not returned & (purchased - consumable)
        assert not returned & set(doc["recent_product_ids"])
        assert all(item["explanation"]["scores"]["ranker"] is not None for item in result.items)
        assert result.summary["score_source"] == "ranker"
        assert {"user_lookup", "retrieve_and_rank", "rerank", "total"} <= set(result.latency_ms)
    # Without the caller's list, what the user document holds is still excluded.
    doc = pipeline.vespa.get_document("user", users[0])
    assert not set(pipeline.recommend(users[0], 50).product_ids) & set(doc["recent_product_ids"])


def test_out_of_stock_and_excluded_categories_are_filtered(pipeline, market):
    user_id = _users_with_history(pipeline, market, 1)[0]
    out_of_stock = set(market.products.loc[~market.products["in_stock"], "product_id"])
    before = pipeline.recommend(user_id, 50)
    assert not set(before.product_ids) & out_of_stock
    roots = Counter(item["category_path"][0] for item in before.items)
    top_root = roots.most_common(1)[0][0]
    assert roots[top_root] > 0
    after = pipeline.recommend(user_id, 50, RecommendationContext(excluded_categories=(top_root,)))
    assert after.items
    assert all(top_root not in item["category_path"] for item in after.items)
    assert after.summary["excluded_categories"] == [top_root]


def test_no_seller_exceeds_its_share(pipeline, market):
    diversity = pipeline.reranker.rules.diversity
    cap = max(1, math.floor(diversity.max_share * 50))
    for user_id in _users_with_history(pipeline, market, 3):
        result = pipeline.recommend(user_id, 50)
        counts = Counter(item["seller_id"] for item in result.items)
        assert max(counts.values()) <= cap
        sellers = [item["seller_id"] for item in result.items]
        for start in range(len(sellers)):
            window = Counter(sellers[start : start + diversity.window])
            assert max(window.values()) <= diversity.max_per_window


def test_history_update_changes_the_next_response(pipeline, market, built):
    user_id = _users_with_history(pipeline, market, 1)[0]
    first = pipeline.recommend(user_id, 50)
    bought = first.product_ids[0]
    fields = pipeline.add_to_history(user_id, bought, timestamp=2_000_000_000)
    doc = pipeline.vespa.get_document("user", user_id)
    assert doc["recent_product_ids"][0] == bought == fields["recent_product_ids"][0]
    assert doc["recent_item_idx"][0] == load_item_index(built.export)[bought]
    assert doc["updated_at"] == 2_000_000_000
    second = pipeline.recommend(user_id, 50)
    assert bought not in second.product_ids
    assert second.product_ids != first.product_ids


def test_unknown_and_light_users_get_cold_start(pipeline, market):
    in_stock = market.products[market.products["in_stock"]]
    browsed = in_stock["category_id"].value_counts().index[-1]  # a leaf, the least stocked one
    result = pipeline.recommend(
        "nobody-here", 20, RecommendationContext(browsed_categories=(browsed,))
    )
    assert result.strategy == "cold_start" and result.degraded is None
    assert len(result.items) == 20
    sources = [item["explanation"]["source"] for item in result.items]
    assert f"browsed:{browsed}" in sources and "popularity" in sources
    assert sum(browsed in item["category_path"] for item in result.items) >= 3
    out_of_stock = set(market.products.loc[~market.products["in_stock"], "product_id"])
    assert not set(result.product_ids) & out_of_stock
    # Popularity without browsing: the most popular in-stock products lead.
    plain = pipeline.recommend("nobody-here", 10)
    assert plain.strategy == "cold_start" and len(plain.items) == 10
    # A user with two interactions is still cold; their two products are excluded.
    pipeline.add_to_history("light-user", plain.product_ids[0], 1_700_000_000)
    pipeline.add_to_history("light-user", plain.product_ids[1], 1_700_000_100)
    light = pipeline.recommend("light-user", 10)
    assert light.strategy == "cold_start"
    assert not set(light.product_ids) & set(plain.product_ids[:2])


def test_broken_ranking_degrades_to_retrieval_order(pipeline, market, monkeypatch):
    user_id = _users_with_history(pipeline, market, 1)[0]
    missing = RecommendationPipeline(
        pipeline.vespa,
        config=PipelineConfig(ranking_profile="no_such_profile"),
        item_index=pipeline.item_index,
    )
    result = missing.recommend(user_id, 50)
    assert result.degraded.startswith("ranker unavailable: ranking query: HTTP 400")
    assert "no_such_profile" in result.degraded
    assert len(result.items) == 50 and result.summary["score_source"] == "retrieval"
    assert all(item["explanation"]["scores"]["ranker"] is None for item in result.items)

    # A wrong input: query(hist) one cell short of the profile's d1[50].
    real = pipeline_module.ranking_inputs

    def short(recent, ctx):
        inputs = real(recent, ctx)
        inputs["input.query(hist)"] = [inputs["input.query(hist)"][0][:49]]
        return inputs

    monkeypatch.setattr(pipeline_module, "ranking_inputs", short)
    result = pipeline.recommend(user_id, 50)
    assert result.degraded and "query(hist)" in result.degraded
    assert len(result.items) == 50


def test_ranking_query_sends_the_residual_weight(pipeline, market, built, monkeypatch, tmp_path):
    # The served export's ranker has no residual term: W = 0, the profile's own value.
    assert load_retrieval_weight(built.export) == 0.0
    manifest = json.loads((built.export / "manifest.json").read_text())
    manifest["ranker"]["retrieval_weight"] = 7.25
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert load_retrieval_weight(tmp_path) == 7.25
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(ValueError, match=r"manifest\.json:1: invalid JSON"):
        load_retrieval_weight(tmp_path)
    with pytest.raises(ValueError, match="retrieval_weight"):
        PipelineConfig(retrieval_weight=math.nan)

    user_id = _users_with_history(pipeline, market, 1)[0]
    sent: list[tuple[dict, dict]] = []
    real = pipeline.vespa.search

    def recording(body, *args, **kwargs):
        payload = real(body, *args, **kwargs)
        sent.append((body, payload))
        return payload

    monkeypatch.setattr(pipeline.vespa, "search", recording)
    # A W so large that W * cos dominates the ranker's own score: the ranked hits come back in
    # retrieval (closeness) order, which a W left out of the query would not give.
    heavy = RecommendationPipeline(
        pipeline.vespa,
        config=dataclasses.replace(pipeline.config, retrieval_weight=1e6),
        item_index=pipeline.item_index,
    )
    result = heavy.recommend(user_id, 50)
    assert result.degraded is None
    body, payload = next((b, p) for b, p in sent if b.get("ranking.profile") == "ranking")
    assert body["input.query(retrieval_weight)"] == 1e6
    ann = [h["fields"]["matchfeatures"]["ann"] for h in payload["root"]["children"]]
    assert len(ann) > 50 and ann == sorted(ann, reverse=True)

    sent.clear()
    pipeline.recommend(user_id, 50)
    body, payload = next((b, p) for b, p in sent if b.get("ranking.profile") == "ranking")
    assert body["input.query(retrieval_weight)"] == 0.0
    ann = [h["fields"]["matchfeatures"]["ann"] for h in payload["root"]["children"]]
    assert ann != sorted(ann, reverse=True)  # the ranker's own order


def test_similar_products(pipeline, market):
    product_id = market.products.loc[market.products["in_stock"], "product_id"].iloc[0]
    similar = pipeline.similar(product_id, 10)
    assert len(similar) == 10
    assert product_id not in [s["product_id"] for s in similar]
    closeness = [s["closeness"] for s in similar]
    assert closeness == sorted(closeness, reverse=True)
    with pytest.raises(ProductNotFound, match="no-such-product"):
        pipeline.similar("no-such-product")


def test_sellers_rank_the_sellers_of_the_top_list(pipeline, market):
    user_id = _users_with_history(pipeline, market, 1)[0]
    out = pipeline.sellers(user_id, k=5)
    assert 1 <= len(out["sellers"]) <= 5
    scores = [s["score"] for s in out["sellers"]]
    assert scores == sorted(scores, reverse=True)
    top = pipeline.recommend(user_id, 50)
    first_seller = top.items[0]["seller_id"]
    assert first_seller in [s["seller_id"] for s in out["sellers"]]


def test_unreachable_vespa_is_a_clear_error():
    client = VespaClient("http://127.0.0.1:9", timeout=0.5)
    with pytest.raises(VespaUnavailable, match=r"127\.0\.0\.1:9"):
        RecommendationPipeline(client).recommend("u1")
    client.close()
    with pytest.raises(ValueError, match="http"):
        VespaClient("localhost:8080")
