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
    yield RecommendationPipeline.from_export(client, built.export, config=config)
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


def test_history_keeps_100_events_and_the_ranking_profile_reads_50(pipeline, market, monkeypatch):
    """add_to_history keeps the newest 100 products (history_product_ids, recent_item_idx and
    the per-event context, the ranking_features history) and their newest 50 as
    recent_product_ids; the plain ranking profile's query still carries 50 cells."""
    user_id = _users_with_history(pipeline, market, 10)[-1]  # one the other tests leave alone
    products = market.products["product_id"].tolist()[:105]
    for i, product_id in enumerate(products):
        fields = pipeline.add_to_history(
            user_id, product_id, 1_800_000_000 + i, "click", hour=i % 24, device="app"
        )
    newest = products[::-1][:100]
    assert fields["history_product_ids"] == newest
    assert fields["recent_product_ids"] == newest[:50]
    assert fields["recent_item_idx"] == [pipeline.item_index[p] for p in newest]
    assert fields["recent_hours"] == [i % 24 for i in range(104, 4, -1)]
    assert all(len(fields[k]) == 100 for k in ("recent_event_types", "recent_devices"))

    sent = []
    real = pipeline.vespa.search
    monkeypatch.setattr(pipeline.vespa, "search", lambda b, **kw: sent.append(b) or real(b, **kw))
    pipeline.recommend(user_id, 10)
    ranked = next(b for b in sent if b.get("ranking.profile") == "ranking")
    hist = ranked["input.query(hist)"][0]
    assert pipeline.config.history_len == 50 and len(hist) == 50
    assert hist == [pipeline.item_index[p] + 1.0 for p in newest[:50]]


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
    # A user with two interactions is still cold; their two products are excluded unless
    # consumable.
    pipeline.add_to_history("light-user", plain.product_ids[0], 1_700_000_000)
    pipeline.add_to_history("light-user", plain.product_ids[1], 1_700_000_100)
    light = pipeline.recommend("light-user", 10)
    assert light.strategy == "cold_start"
    consumable = set(market.products.loc[market.products["consumable"], "product_id"])
    assert not set(light.product_ids) & (set(plain.product_ids[:2]) - consumable)


def test_cached_popularity_gives_the_live_answer_and_saves_queries(engine, built, market):
    """Cold start from the shared (cached) popularity list equals a query per request, with
    each user's own exclusions; a second cold user in the same context costs no popularity
    query."""
    client = VespaClient(engine.url, timeout=10.0)
    searches: list[str] = []
    search = client.search

    def counted(body, what="search"):
        searches.append(what)
        return search(body, what)

    client.search = counted  # type: ignore[method-assign]

    def make(cache_s: float) -> RecommendationPipeline:
        config = PipelineConfig(locations=locations(built), popularity_cache_s=cache_s)
        return RecommendationPipeline.from_export(client, built.export, config=config)

    cached, live = make(60.0), make(0.0)
    in_stock = list(market.products.loc[market.products["in_stock"], "product_id"])
    leaf = market.products["category_id"].value_counts().index[0]
    context = RecommendationContext(
        hour=20,
        device="mobile",
        exclude_product_ids=tuple(in_stock[:30]),
        excluded_categories=(leaf,),
    )
    assert (
        cached.recommend("nobody", 50, context).items == live.recommend("nobody", 50, context).items
    )
    searches.clear()
    second = cached.recommend(
        "nobody-else", 50, dataclasses.replace(context, exclude_product_ids=())
    )
    assert "popularity" not in searches
    assert second.strategy == "cold_start" and len(second.items) == 50
    assert not any(leaf in item["category_path"] for item in second.items)
    # Users served one after another from one cached list (and the candidates built from it)
    # get what a query of their own gives, whatever the users before them excluded.
    popular = tuple(second.product_ids[:4])
    for exclude in ((), popular[:2], (), popular[3:], popular[:2], popular):
        each = dataclasses.replace(context, exclude_product_ids=exclude)
        assert (
            cached.recommend("nobody", 50, each).items == live.recommend("nobody", 50, each).items
        )
    client.close()


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

    def short(recent, ctx, length=50):
        inputs = real(recent, ctx, length)
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


def test_sellers_to_follow_are_the_closest_seller_embeddings(pipeline, market, built):
    from model_export.export import read_embeddings
    from model_export.feed import seller_vectors
    from model_export.manifest import Manifest

    user_id = _users_with_history(pipeline, market, 1)[0]
    out = pipeline.sellers(user_id, k=5)
    assert out["method"] == "seller embedding closeness to the user embedding"
    assert len(out["sellers"]) == 5
    # The feeder's seller vectors against the stored user vector, by exact cosine.
    manifest = Manifest.read(built.export)
    product_ids, table = read_embeddings(built.export, manifest, "product")
    vectors = seller_vectors(market, product_ids, table)
    user = np.asarray(pipeline.vespa.get_document("user", user_id)["embedding"]["values"])
    by_cosine = sorted(vectors, key=lambda s: -float(vectors[s] @ user))
    assert [s["seller_id"] for s in out["sellers"]] == by_cosine[:5]
    for seller in out["sellers"]:
        assert seller["products"] and all(
            market.products.set_index("product_id").loc[p, "seller_id"] == seller["seller_id"]
            for p in seller["products"]
        )
    # A blocked seller is not proposed; unblocked, it is back.
    top = out["sellers"][0]["seller_id"]
    pipeline.vespa.update_document("seller", top, {"is_blocked": True})
    try:
        again = pipeline.sellers(user_id, k=5)
        assert top not in [s["seller_id"] for s in again["sellers"]]
        assert [s["seller_id"] for s in again["sellers"]] == by_cosine[1:6]
    finally:
        pipeline.vespa.update_document("seller", top, {"is_blocked": False})
    # A user without an embedding: the sellers of the cold-start list.
    cold = pipeline.sellers("nobody-follows", k=3)
    assert cold["strategy"] == "cold_start" and "no user embedding" in cold["method"]
    assert 1 <= len(cold["sellers"]) <= 3


def test_unreachable_vespa_is_a_clear_error():
    client = VespaClient("http://127.0.0.1:9", timeout=0.5)
    with pytest.raises(VespaUnavailable, match=r"127\.0\.0\.1:9"):
        RecommendationPipeline(client).recommend("u1")
    client.close()
    with pytest.raises(ValueError, match="http"):
        VespaClient("localhost:8080")


# ----- issue 7 features: inspector, consumables, walk candidates, rows, cold start, new items ---


def test_inspect_shows_the_three_stages(pipeline, market):
    user_id = _users_with_history(pipeline, market, 1)[0]
    plain = pipeline.recommend(user_id, 20)
    assert plain.stages is None and "stages" not in plain.to_dict()
    result = pipeline.recommend(user_id, 20, inspect=True)
    body = result.to_dict()
    assert set(body["stages"]) == {"candidates", "ranked", "reranked"}
    stages, counts = result.stages, result.stage_counts
    keys = {
        "product_id", "seller_id", "source", "retrieval_score", "ranker_score", "walk_score",
        "final_score", "moved_by",
    }  # fmt: skip
    assert all(set(row) == keys for rows in stages.values() for row in rows)
    candidates, ranked, reranked = stages["candidates"], stages["ranked"], stages["reranked"]
    assert len(candidates) == len(ranked) == 100  # the inspector's cut
    assert counts["candidates"] >= counts["ranked"] > 100 and counts["reranked"] == 20
    retrieval = [row["retrieval_score"] for row in candidates]
    assert retrieval == sorted(retrieval, reverse=True)  # stage 1's own order
    ranker = [row["ranker_score"] for row in ranked]
    assert ranker == sorted(ranker, reverse=True)
    assert [row["product_id"] for row in reranked] == result.product_ids
    assert all(row["final_score"] is None for row in candidates + ranked)
    for row, item in zip(reranked, result.items, strict=True):
        assert row["final_score"] == item["explanation"]["scores"]["final"]
        assert row["moved_by"] == list(
            dict.fromkeys(r["rule"] for r in item["explanation"]["rules"])
        )
    cold = pipeline.recommend("nobody-inspects", 10, inspect=True)
    assert cold.stage_counts["reranked"] == 10 and cold.stages["ranked"][0]["ranker_score"] is None


def test_purchased_non_consumables_never_come_back_consumables_may(pipeline, market):
    consumable = set(market.products.loc[market.products["consumable"], "product_id"])
    user_id = _users_with_history(pipeline, market, 2)[1]
    first = pipeline.recommend(user_id, 50)
    durable = next(p for p in first.product_ids if p not in consumable)
    repeat = next(p for p in first.product_ids if p in consumable)
    for i, product_id in enumerate((durable, repeat)):
        pipeline.add_to_history(user_id, product_id, 2_000_000_000 + i, event_type="purchase")
    doc = pipeline.vespa.get_document("user", user_id)
    assert doc["recent_purchases"][:2] == [repeat, durable]
    wide = RecommendationPipeline(
        pipeline.vespa, config=dataclasses.replace(pipeline.config, inspect_limit=500),
        graph=pipeline.graph, vectors=pipeline.vectors,
    )  # fmt: skip
    after = wide.recommend(user_id, 50, inspect=True)
    assert durable not in after.product_ids
    ranked = [row["product_id"] for row in after.stages["ranked"]]
    assert durable not in ranked
    assert repeat in ranked  # the consumable stays eligible
    # The caller's purchase list works the same way, for purchases the user document lacks.
    other = _users_with_history(pipeline, market, 3)[2]
    base = pipeline.recommend(other, 50)
    durable = next(p for p in base.product_ids if p not in consumable)
    context = RecommendationContext(purchased_product_ids=(durable,))
    assert durable not in pipeline.recommend(other, 50, context).product_ids


def test_walk_candidates_are_merged_and_keep_their_source(pipeline, market, monkeypatch):
    assert pipeline.graph is not None  # the export's graph.npz
    user_id = _users_with_history(pipeline, market, 1)[0]
    result = pipeline.recommend(user_id, 50, inspect=True)
    sources = result.summary["sources"]
    assert set(sources) <= {"ann", "walk", "ann+walk"}
    assert sources.get("ann+walk", 0) + sources.get("walk", 0) > 0
    rows = result.stages["ranked"]
    for row in rows:
        assert (row["walk_score"] is not None) == (row["source"] in ("walk", "ann+walk"))
    assert {item["explanation"]["source"] for item in result.items} <= set(sources)
    # A walk-only candidate (no NN match) is ranked by the same profile and explained.
    sent = []
    real = pipeline.vespa.search
    monkeypatch.setattr(
        pipeline.vespa, "search", lambda body, *a, **kw: sent.append(body) or real(body, *a, **kw)
    )
    narrow = RecommendationPipeline(
        pipeline.vespa, config=dataclasses.replace(pipeline.config, target_hits=5),
        graph=pipeline.graph, vectors=pipeline.vectors,
    )  # fmt: skip
    result = narrow.recommend(user_id, 50, inspect=True)
    walk_queries = [b for b in sent if "@walk" in b["yql"]]
    assert walk_queries and walk_queries[-1]["ranking.profile"] == "ranking"
    walk_only = [row for row in result.stages["ranked"] if row["source"] == "walk"]
    assert walk_only and all(row["ranker_score"] is not None for row in walk_only)
    assert all(0 < row["retrieval_score"] <= 1 for row in walk_only)  # the ANN closeness
    # Without a graph, stage 1 is ANN only.
    bare = RecommendationPipeline(pipeline.vespa, config=pipeline.config)
    assert set(bare.recommend(user_id, 20).summary["sources"]) == {"ann"}


def test_broken_ranking_with_walk_candidates_degrades_both_queries(pipeline, market):
    user_id = _users_with_history(pipeline, market, 1)[0]
    broken = RecommendationPipeline(
        pipeline.vespa,
        config=dataclasses.replace(pipeline.config, ranking_profile="no_such_profile"),
        graph=pipeline.graph,
        vectors=pipeline.vectors,
    )
    result = broken.recommend(user_id, 50, inspect=True)
    assert result.degraded.startswith("ranker unavailable: ranking query: HTTP 400")
    sources = result.summary["sources"]
    assert sources.get("walk", 0) + sources.get("ann+walk", 0) > 0  # walk hits kept
    assert all(row["ranker_score"] is None for row in result.stages["ranked"])


def test_supported_by_is_the_closest_history_item_by_cosine(pipeline, market):
    user_id = _users_with_history(pipeline, market, 1)[0]
    result = pipeline.recommend(user_id, 10)
    history = pipeline.vespa.get_document("user", user_id)["recent_product_ids"]
    vectors = pipeline.vectors
    for item in result.items:
        support = item["explanation"]["supported_by"]
        assert support["reason"] == "embedding_similarity"
        mine = vectors.get(item["product_id"])
        best = max(history, key=lambda h: float(vectors.get(h) @ mine))
        assert support["product_id"] == best
        assert support["similarity"] == pytest.approx(float(vectors.get(best) @ mine), abs=1e-5)
    # Without vectors: the category.
    bare = RecommendationPipeline(pipeline.vespa, config=pipeline.config)
    reasons = {
        (item["explanation"]["supported_by"] or {}).get("reason")
        for item in bare.recommend(user_id, 10).items
    }
    assert "embedding_similarity" not in reasons


def test_because_you_bought_rows(pipeline, market):
    user_id = _users_with_history(pipeline, market, 4)[3]
    bought = pipeline.recommend(user_id, 10).product_ids[:3]
    for i, product_id in enumerate(bought):
        pipeline.add_to_history(user_id, product_id, 2_100_000_000 + i, event_type="purchase")
    rows = pipeline.because_you_bought(user_id, rows=2, k=5)
    assert [row["anchor"]["product_id"] for row in rows] == bought[::-1][:2]  # newest first
    doc = pipeline.vespa.get_document("user", user_id)
    seen = set(doc["recent_product_ids"]) | set(doc["recent_purchases"])
    shown = [item["product_id"] for row in rows for item in row["items"]]
    assert len(shown) == 10 and len(set(shown)) == 10 and not set(shown) & seen
    for row in rows:
        closeness = [item["closeness"] for item in row["items"]]
        assert closeness == sorted(closeness, reverse=True)
        anchor = pipeline.vectors.get(row["anchor"]["product_id"])
        first = pipeline.vectors.get(row["items"][0]["product_id"])
        assert row["anchor"]["title"] and float(anchor @ first) > 0
    assert pipeline.because_you_bought("nobody-bought") == []
    with pytest.raises(ValueError, match="rows"):
        pipeline.because_you_bought(user_id, rows=0)


def _set_ctx(pipeline, cells: dict[str, dict[str, float]]) -> None:
    for product_id, lifts in cells.items():
        pipeline.vespa.update_document("product", product_id, {"ctx_popularity": lifts}, False)


def test_cold_start_and_trending_follow_the_request_context(pipeline, market):
    in_stock = market.products[market.products["in_stock"]]
    leaf = in_stock["category_id"].value_counts().index[0]
    a, b = in_stock[in_stock["category_id"] == leaf]["product_id"].iloc[:2]
    before = {p: pipeline.product(p).get("ctx_popularity") for p in (a, b)}
    # The data says: a sells on mobile in the evening, b on desktop in the morning.
    _set_ctx(
        pipeline,
        {
            a: {"all": 50.0, "device:mobile": 200.0, "daypart:evening": 200.0},
            b: {"all": 50.0, "device:desktop": 200.0, "daypart:morning": 200.0},
        },
    )
    try:
        mobile = RecommendationContext(hour=20, device="mobile")
        desktop = RecommendationContext(hour=9, device="desktop")
        cold_mobile = pipeline.recommend("nobody-ctx", 10, mobile, inspect=True)
        cold_desktop = pipeline.recommend("nobody-ctx", 10, desktop, inspect=True)
        # Stage 1 is the context's popularity order; the re-ranker (freshness, MMR) may then
        # move the leader a few slots.
        assert cold_mobile.stages["ranked"][0]["product_id"] == a
        assert cold_desktop.stages["ranked"][0]["product_id"] == b
        assert a in cold_mobile.product_ids[:5] and b in cold_desktop.product_ids[:5]
        assert cold_mobile.product_ids != cold_desktop.product_ids
        trend_mobile = pipeline.trending([leaf], 5, mobile)
        assert [t["product_id"] for t in trend_mobile][:1] == [a]
        assert [t["product_id"] for t in pipeline.trending([leaf], 5, desktop)][:1] == [b]
        assert all(leaf in t["category_path"] for t in trend_mobile)
        scores = [t["popularity_score"] for t in trend_mobile]
        assert scores == sorted(scores, reverse=True)
        # Without context: global popularity ("all"), where a and b tie at 50: both lead.
        assert {t["product_id"] for t in pipeline.trending([leaf], 2)} == {a, b}
    finally:
        _set_ctx(pipeline, {p: v or {} for p, v in before.items()})


def test_new_arrivals_are_the_newest_in_stock(pipeline, market):
    items = pipeline.new_arrivals(8)
    created = [item["created_at"] for item in items]
    assert len(items) == 8 and created == sorted(created, reverse=True)
    in_stock = market.products[market.products["in_stock"]]
    newest = int(in_stock["created_at"].max().timestamp())
    assert created[0] == newest
    leaf = in_stock["category_id"].value_counts().index[0]
    assert all(leaf in i["category_path"] for i in pipeline.new_arrivals(3, categories=[leaf]))


def test_a_product_without_interactions_can_be_recommended(pipeline, market, built):
    positive = market.events[market.events["event_type"].isin(market.info.positive_events)]
    in_stock = market.products[market.products["in_stock"]]
    fresh = sorted(set(in_stock["product_id"]) - set(positive["product_id"]))
    assert fresh, "the tiny marketplace has in-stock products without events"
    new = fresh[0]
    assert new in load_item_index(built.export)  # the export covers every product
    assert pipeline.similar(new, 5)  # it has an embedding and neighbours
    # A shopper whose taste is that product's vector gets it recommended.
    vector = pipeline.product(new)["embedding"]["values"]
    user_id = _users_with_history(pipeline, market, 5)[4]
    pipeline.vespa.update_document("user", "new-item-fan", {
        **{k: v for k, v in pipeline.vespa.get_document("user", user_id).items()
           if k in ("recent_product_ids", "recent_item_idx", "updated_at")},
        "embedding": {"values": vector},
    })  # fmt: skip
    result = pipeline.recommend("new-item-fan", 50, inspect=True)
    assert result.strategy == "personalized"
    assert new in [row["product_id"] for row in result.stages["candidates"]][:5]


def test_candidates_carry_the_exports_vectors(pipeline, market, built, monkeypatch):
    """Every candidate reaches the re-ranker with its own row of the export (L2-normalised),
    personalized and cold alike; a product the vectors lack gets none (never another's), and
    MMR then falls back to attributes."""
    from model_export.export import read_embeddings
    from model_export.manifest import Manifest
    from vespa_app.client.vectors import ProductVectors

    ids, table = read_embeddings(built.export, Manifest.read(built.export), "product")
    table = np.asarray(table, dtype=np.float32)
    row = {p: i for i, p in enumerate(ids)}
    unit = table / np.linalg.norm(table, axis=1, keepdims=True)

    def capture(target: RecommendationPipeline) -> list[list]:
        seen: list[list] = []
        real = target.reranker.rerank
        monkeypatch.setattr(
            target.reranker, "rerank", lambda c, *a, **kw: seen.append(list(c)) or real(c, *a, **kw)
        )
        return seen

    seen = capture(pipeline)
    user_id = _users_with_history(pipeline, market, 1)[0]
    full = pipeline.recommend(user_id, 20)
    assert full.strategy == "personalized" and full.summary["similarity"] == "embedding"
    assert pipeline.recommend("nobody-here", 20).strategy == "cold_start"
    assert len(seen) == 2 and all(seen)
    for candidates in seen:
        for c in candidates:
            np.testing.assert_allclose(c.embedding, unit[row[c.product_id]], rtol=0, atol=1e-6)

    missing = {c.product_id for c in seen[0] if c.source in ("ann", "ann+walk")}
    missing = set(sorted(missing)[:10])
    keep = [i for i, p in enumerate(ids) if p not in missing]
    partial = RecommendationPipeline(
        pipeline.vespa, config=pipeline.config, item_index=pipeline.item_index,
        graph=pipeline.graph, vectors=ProductVectors([ids[i] for i in keep], table[keep]),
    )  # fmt: skip
    seen = capture(partial)
    result = partial.recommend(user_id, 20)
    assert result.summary["similarity"] == "attributes"
    candidates = seen[0]
    assert missing <= {c.product_id for c in candidates}
    for c in candidates:
        if c.product_id in missing:
            assert c.embedding is None
        else:
            np.testing.assert_allclose(c.embedding, unit[row[c.product_id]], rtol=0, atol=1e-6)
