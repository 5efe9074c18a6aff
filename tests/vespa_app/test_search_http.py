"""/search/ end to end: the engine process serving the project package, fed and queried with
pyvespa over HTTP/1.1 and h2c (spec §10 cases 2, 11, 13, 17, 20 as seen from search)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from vespa.application import Vespa

from benchmarks.vespa_fixtures import NOW, catalogue
from tests.vespa_app.conftest import PROJECT_PACKAGE

N = 60


def _feed(app: Vespa, docs) -> None:
    for local_id, fields in docs:
        body = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in fields.items()}
        assert app.feed_data_point("product", local_id, body).is_successful()


def _body(q, profile="ranking", extra="", hits=10):
    body = {
        "yql": "select * from product where "
        f"({{targetHits:100}}nearestNeighbor(embedding, q_user)){extra}",
        "input.query(q_user)": q,
        "ranking.profile": profile,
        "ranking.freshness": str(NOW),
        "hits": hits,
    }
    if profile == "ranking":  # undeclared tensor inputs are an error (§4.3)
        hist = [[0.0] * 50]
        hist[0][:3] = [4, 9, 31]
        body["input.query(hist)"] = hist
        body["input.query(ctx)"] = [[0.1] * 16]
    return body


@pytest.fixture
def served(engine_factory, tmp_path):
    engine = engine_factory(PROJECT_PACKAGE, tmp_path / "data")
    app = Vespa(url="http://127.0.0.1", port=engine.port)
    docs = catalogue(N)
    _feed(app, docs)
    return engine, app, dict(docs)


def test_search_over_http_sync_async_and_writes(served):
    _engine, app, docs = served
    q = docs["P3"]["embedding"].tolist()
    res = app.query(body=_body(q))
    assert res.is_successful()
    hits = res.hits
    assert len(hits) == 10 and hits[0]["id"].startswith("id:product:product::")
    assert list(hits[0]["fields"]["matchfeatures"]) == ["ann", "fresh", "pop"]
    assert res.json["root"]["fields"]["totalCount"] == N

    async def run_async():
        async with app.asyncio() as session:
            return await session.query(body=_body(q))

    async_res = asyncio.run(run_async())
    assert async_res.json["root"]["children"] == res.json["root"]["children"]

    # case 11: an assigned price is visible to range() at once
    assert app.update_data("product", "P3", {"price": 1234.5}).is_successful()
    found = app.query(body=_body(q, "retrieval", " and range(price, 1234, 1235)"))
    assert [h["fields"]["product_id"] for h in found.hits] == ["P3"]

    # case 13: a new embedding changes closeness accordingly
    new = (-docs["P3"]["embedding"]).tolist()
    assert app.update_data("product", "P3", {"embedding": {"values": new}}).is_successful()
    top = app.query(body=_body(new, "retrieval", hits=1)).hits[0]
    assert top["fields"]["product_id"] == "P3"
    assert top["fields"]["matchfeatures"]["ann"] == pytest.approx(1.0, rel=1e-6)

    # case 17: a removed document is no longer returned
    assert app.delete_data("product", "P3").is_successful()
    after = app.query(body=_body(new, "retrieval", hits=N))
    assert "P3" not in [h["fields"]["product_id"] for h in after.hits]
    assert after.json["root"]["fields"]["totalCount"] == N - 1


def test_search_errors_over_http(served):
    _, app, _ = served
    with pytest.raises(Exception) as exc:
        app.query(body={"yql": "select * from product where", "hits": 1})
    assert "Could not create query from YQL" in str(exc.value)


def test_indexes_rebuilt_after_restart(engine_factory, served, tmp_path):
    engine, app, docs = served
    q = docs["P10"]["embedding"].tolist()
    before = app.query(body=_body(q, "retrieval")).json["root"]["children"]
    engine.stop()
    restarted = engine_factory(PROJECT_PACKAGE, tmp_path / "data")
    again = Vespa(url="http://127.0.0.1", port=restarted.port)
    after = again.query(body=_body(q, "retrieval")).json["root"]["children"]
    assert [h["id"] for h in after] == [h["id"] for h in before]
    assert [h["relevance"] for h in after] == [h["relevance"] for h in before]
