"""The JSON API through Flask's test client, against the embedded engine serving the tiny
marketplace (tests/webapp/conftest.py)."""

from __future__ import annotations

import math
import sqlite3
from collections import Counter

import pytest

from tests.webapp.conftest import close_app, make_app
from trainer.data.loaders import load_dataset


@pytest.fixture(scope="module")
def market(built):
    return load_dataset(built.dataset)


def _active_user(client, market) -> str:
    for user_id in market.users["user_id"]:
        body = client.get(f"/api/recommendations?user_id={user_id}&k=5").get_json()
        if body["strategy"] == "personalized":
            return user_id
    raise AssertionError("no personalized user in the tiny marketplace")


def test_recommendations_with_context(client, market):
    user_id = _active_user(client, market)
    response = client.get(
        f"/api/recommendations?user_id={user_id}&k=50&hour=20&device=desktop&location=north"
    )
    assert response.status_code == 200
    body = response.get_json()
    assert body["strategy"] == "personalized" and body["degraded"] is None
    assert len(body["items"]) == 50
    assert [item["position"] for item in body["items"]] == list(range(1, 51))
    first = body["items"][0]
    assert set(first["explanation"]) == {"scores", "source", "rules", "supported_by"}
    assert first["explanation"]["source"] in ("ann", "walk", "ann+walk")
    assert body["summary"]["context"]["device"] == "desktop"
    assert {"user_lookup", "retrieve_and_rank", "rerank", "total"} <= set(body["latency_ms"])
    # No seller above the configured share of the top 50.
    reranker = client.application.config["PIPELINE"].reranker
    cap = max(1, math.floor(reranker.rules.diversity.max_share * 50))
    assert max(Counter(item["seller_id"] for item in body["items"]).values()) <= cap


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("", "user_id"),
        ("user_id=u001&k=0", "k"),
        ("user_id=u001&k=ten", "k"),
        ("user_id=u001&k=100000", "k"),
        ("user_id=u001&hour=24", "hour"),
        ("user_id=u001&hour=-1", "hour"),
        ("user_id=u001&device=toaster", "device"),
        ("user_id=a,b", "user_id"),
    ],
)
def test_bad_parameters_are_400_naming_them(client, query, parameter):
    response = client.get(f"/api/recommendations?{query}")
    assert response.status_code == 400
    body = response.get_json()
    assert body["parameter"] == parameter and body["error"].startswith(f"{parameter}:")


def test_similar_and_unknown_product(client, market):
    product_id = market.products.loc[market.products["in_stock"], "product_id"].iloc[0]
    response = client.get(f"/api/similar/{product_id}?k=8")
    assert response.status_code == 200
    items = response.get_json()["items"]
    assert len(items) == 8 and product_id not in [i["product_id"] for i in items]
    missing = client.get("/api/similar/no-such-product")
    assert missing.status_code == 404
    assert missing.get_json()["product_id"] == "no-such-product"
    assert client.get(f"/api/similar/{product_id}?k=0").status_code == 400
    assert client.get("/api/nothing-here").status_code == 404  # JSON, not an HTML page
    assert client.get("/api/nothing-here").get_json()["status"] == 404


def test_sellers(client, market):
    user_id = _active_user(client, market)
    body = client.get(f"/api/sellers?user_id={user_id}&k=3").get_json()
    assert 1 <= len(body["sellers"]) <= 3
    assert body["method"] == "seller embedding closeness to the user embedding"
    scores = [s["score"] for s in body["sellers"]]
    assert scores == sorted(scores, reverse=True)
    cold = client.get("/api/sellers?user_id=brand-new-seller-fan&k=3").get_json()
    assert cold["strategy"] == "cold_start" and "no user embedding" in cold["method"]
    assert client.get("/api/sellers").status_code == 400


def test_purchase_event_is_stored_and_changes_the_next_response(client, app, market):
    user_id = _active_user(client, market)
    before = client.get(f"/api/recommendations?user_id={user_id}").get_json()
    bought = before["items"][0]["product_id"]
    event = {
        "user_id": user_id,
        "product_id": bought,
        "event_type": "purchase",
        "context": {"hour": 9, "device": "mobile"},
    }
    response = client.post("/api/events", json=event)
    assert response.status_code == 201
    body = response.get_json()
    assert body["stored"] and body["history_updated"]
    assert body["recent_product_ids"][0] == bought
    # Durable: the row is in the SQLite file (WAL mode), read by a separate connection.
    db = sqlite3.connect(app.config["EVENT_STORE"].path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    rows = db.execute(
        "SELECT user_id, product_id, event_type, hour, device FROM events WHERE event_id = ?",
        (body["event_id"],),
    ).fetchall()
    db.close()
    assert rows == [(user_id, bought, "purchase", 9, "mobile")]
    # The user document's per-event codes (the ranker's history features) carry the event.
    user = app.config["PIPELINE"].vespa.get_document("user", user_id)
    assert bought in app.config["PIPELINE"].item_index  # recommended, so exported
    assert user["recent_event_types"][0] == "purchase"
    assert user["recent_hours"][0] == 9
    assert user["recent_devices"][0] == "mobile"
    after = client.get(f"/api/recommendations?user_id={user_id}").get_json()
    assert bought not in [item["product_id"] for item in after["items"]]
    assert after["items"] != before["items"]


def test_impressions_are_logged_but_not_history(client, app, market):
    product_id = market.products["product_id"].iloc[3]
    response = client.post(
        "/api/events",
        json={"user_id": "imp-user", "product_id": product_id, "event_type": "impression"},
    )
    assert response.status_code == 201 and not response.get_json()["history_updated"]
    events = app.config["EVENT_STORE"].events("imp-user")
    assert [e["event_type"] for e in events] == ["impression"]
    seller = market.products.set_index("product_id").loc[product_id, "seller_id"]
    assert events[0]["seller_id"] == seller
    assert app.config["EVENT_STORE"].seller_exposure() == {seller: 1.0}


@pytest.mark.parametrize(
    ("body", "parameter"),
    [
        ({"product_id": "p001", "event_type": "click"}, "user_id"),
        ({"user_id": "u1", "event_type": "click"}, "product_id"),
        ({"user_id": "u1", "product_id": "p001", "event_type": "like"}, "event_type"),
        ({"user_id": "u1", "product_id": "p001", "event_type": "click", "x": 1}, "x"),
        ({"user_id": 5, "product_id": "p001", "event_type": "click"}, "user_id"),
        (
            {"user_id": "u1", "product_id": "p001", "event_type": "click", "context": {"hour": 30}},
            "context.hour",
        ),
        ([1, 2], "body"),
    ],
)
def test_bad_events_are_400_and_not_stored(client, app, body, parameter):
    response = client.post("/api/events", json=body)
    assert response.status_code == 400
    assert response.get_json()["parameter"] == parameter
    assert app.config["EVENT_STORE"].events("u1") == []


def test_event_for_unknown_product_is_404_and_not_stored(client, app):
    event = {"user_id": "u404", "product_id": "nope", "event_type": "click"}
    response = client.post("/api/events", json=event)
    assert response.status_code == 404
    assert app.config["EVENT_STORE"].events("u404") == []


def test_unknown_user_gets_cold_start(client, market):
    category = market.products["category_id"].value_counts().index[0]
    response = client.get(f"/api/recommendations?user_id=brand-new&k=12&browsed={category}")
    assert response.status_code == 200
    body = response.get_json()
    assert body["strategy"] == "cold_start" and len(body["items"]) == 12
    assert any(category in item["category_path"] for item in body["items"])


def test_broken_ranking_profile_degrades_not_500(engine, built, tmp_path, market):
    app = make_app(engine, built, tmp_path, RANKING_PROFILE="no_such_profile")
    client = app.test_client()
    user_id = _active_user(client, market)
    response = client.get(f"/api/recommendations?user_id={user_id}&k=20")
    assert response.status_code == 200
    body = response.get_json()
    assert body["degraded"].startswith("ranker unavailable:")
    assert len(body["items"]) == 20 and body["summary"]["score_source"] == "retrieval"
    close_app(app)


def test_vespa_down_is_503_not_500(built, tmp_path):
    from webapp import create_app

    app = create_app(
        {
            "TESTING": True,
            "VESPA_URL": "http://127.0.0.1:9",
            "VESPA_TIMEOUT": 0.5,
            "EVENTS_DB": str(tmp_path / "e.sqlite3"),
        }
    )
    response = app.test_client().get("/api/recommendations?user_id=u1")
    assert response.status_code == 503 and "127.0.0.1:9" in response.get_json()["error"]
    close_app(app)


def test_the_export_manifest_sets_the_residual_ranker_weight(tmp_path):
    import json

    from webapp import create_app

    export = tmp_path / "export"
    export.mkdir()
    (export / "product_ids.json").write_text(json.dumps(["p0", "p1"]))
    (export / "manifest.json").write_text(json.dumps({"ranker": {"retrieval_weight": 2.5}}))
    app = create_app(
        {
            "TESTING": True,
            "VESPA_URL": "http://127.0.0.1:9",
            "EXPORT_DIR": str(export),
            "EVENTS_DB": str(tmp_path / "e.sqlite3"),
        }
    )
    assert app.config["PIPELINE"].config.retrieval_weight == 2.5
    close_app(app)


def test_inspect_adds_the_stages(client, market):
    user_id = _active_user(client, market)
    plain = client.get(f"/api/recommendations?user_id={user_id}&k=10").get_json()
    assert "stages" not in plain
    body = client.get(f"/api/recommendations?user_id={user_id}&k=10&inspect=1").get_json()
    assert set(body["stages"]) == {"candidates", "ranked", "reranked"}
    assert [r["product_id"] for r in body["stages"]["reranked"]] == [
        i["product_id"] for i in body["items"]
    ]
    assert body["stage_counts"]["reranked"] == 10
    assert body["stage_counts"]["candidates"] >= len(body["stages"]["candidates"]) > 0
    bad = client.get(f"/api/recommendations?user_id={user_id}&inspect=yes")
    assert bad.status_code == 400 and bad.get_json()["parameter"] == "inspect"


def test_because_you_bought_follows_purchase_events(client, market):
    user_id = _active_user(client, market)
    before = client.get(f"/api/because?user_id={user_id}&rows=2&k=4").get_json()
    bought = client.get(f"/api/recommendations?user_id={user_id}&k=5").get_json()["items"][0]
    event = {"user_id": user_id, "product_id": bought["product_id"], "event_type": "purchase"}
    assert client.post("/api/events", json=event).status_code == 201
    after = client.get(f"/api/because?user_id={user_id}&rows=2&k=4").get_json()
    assert after["rows"][0]["anchor"]["product_id"] == bought["product_id"]
    assert len(after["rows"][0]["items"]) == 4
    assert after["rows"] != before["rows"]
    shown = {i["product_id"] for row in after["rows"] for i in row["items"]}
    assert bought["product_id"] not in shown
    for query, parameter in (("rows=0", "rows"), ("k=51", "k"), ("", "user_id")):
        uid = f"user_id={user_id}&" if parameter != "user_id" else ""
        response = client.get(f"/api/because?{uid}{query}")
        assert response.status_code == 400 and response.get_json()["parameter"] == parameter


def test_a_purchased_durable_never_comes_back(client, market):
    consumable = set(market.products.loc[market.products["consumable"], "product_id"])
    user_id = [u for u in market.users["user_id"]][5]
    items = client.get(f"/api/recommendations?user_id={user_id}&k=50").get_json()["items"]
    ids = [i["product_id"] for i in items]
    durable = next(p for p in ids if p not in consumable)
    repeat = next(p for p in ids if p in consumable)
    for product_id in (durable, repeat):
        event = {"user_id": user_id, "product_id": product_id, "event_type": "purchase"}
        assert client.post("/api/events", json=event).status_code == 201
    body = client.get(f"/api/recommendations?user_id={user_id}&k=50&inspect=1").get_json()
    assert durable not in [i["product_id"] for i in body["items"]]
    assert durable not in [r["product_id"] for r in body["stages"]["ranked"]]
    assert body["summary"]["excluded_products"] >= 1


def test_json_replies_are_the_documents_flasks_own_provider_writes(app):
    """jsonify goes through orjson (webapp.OrjsonProvider): the same bytes as Flask's provider
    for a plain reply, the same document with Flask's conversions otherwise."""
    import dataclasses
    import datetime
    import decimal
    import json
    import uuid

    import numpy as np
    from flask.json.provider import DefaultJSONProvider
    from markupsafe import Markup

    @dataclasses.dataclass
    class Row:
        name: str
        when: datetime.date

    flasks = DefaultJSONProvider(app)
    plain = {"b": [1, 2.5, None, True, (3, 4)], "a": {"z": "x", "y": -0.125}, "n": 10**15}
    assert app.json.response(plain).data == flasks.response(plain).data
    rich = {
        **plain,
        "when": datetime.datetime(2024, 1, 2, 3, 4, 5),
        "row": Row("Café", datetime.date(2024, 1, 2)),
        "price": decimal.Decimal("1.10"),
        "id": uuid.UUID(int=7),
        "html": Markup("<b>"),
        "tiny": 1e-7,
    }
    mine, theirs = app.json.response(rich), flasks.response(rich)
    assert mine.mimetype == theirs.mimetype == "application/json"
    assert json.loads(mine.data) == json.loads(theirs.data)
    assert json.loads(mine.data)["when"] == "Tue, 02 Jan 2024 03:04:05 GMT"  # Flask's HTTP date
    huge = {"n": 2**70}  # beyond orjson: Flask's provider writes it
    assert app.json.response(huge).data == flasks.response(huge).data
    assert json.loads(app.json.response(v=np.float32(0.5), i=np.int64(3)).data) == {
        "v": 0.5,
        "i": 3,
    }


def test_stage_sizes_come_from_the_environment_and_bad_values_are_named(tmp_path, monkeypatch):
    from webapp import create_app

    config = {"TESTING": True, "VESPA_URL": "http://127.0.0.1:9"}
    monkeypatch.setenv("TARGET_HITS", "2000")
    monkeypatch.setenv("RANK_HITS", "200")
    app = create_app({**config, "EVENTS_DB": str(tmp_path / "e.sqlite3")})
    cfg = app.config["PIPELINE"].config
    assert (cfg.target_hits, cfg.rank_hits, cfg.rerank_count) == (2000, 200, 200)
    close_app(app)
    monkeypatch.setenv("RANK_HITS", "lots")
    with pytest.raises(ValueError, match="RANK_HITS must be an integer, got 'lots'"):
        create_app({**config, "EVENTS_DB": str(tmp_path / "f.sqlite3")})
    monkeypatch.setenv("RANK_HITS", "0")
    with pytest.raises(ValueError, match="rank_hits must be a positive integer"):
        create_app({**config, "EVENTS_DB": str(tmp_path / "g.sqlite3")})
