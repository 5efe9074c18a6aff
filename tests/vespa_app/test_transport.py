"""Transport: HTTP/1.1 + h2c on one port, gzip, size limit, backpressure, kill -9 (spec §2, §8)."""

from __future__ import annotations

import asyncio
import gzip
import json

import httpx
import pytest
from vespa.application import Vespa
from vespa.io import VespaResponse

DOC = "/document/v1/product/product/docid/"


def test_http1_and_h2c_prior_knowledge_give_identical_bodies(docs_engine_url: str) -> None:
    with httpx.Client(base_url=docs_engine_url) as h1:
        assert (
            h1.post(DOC + "T-h2", json={"fields": {"title": "same", "price": 1.5}}).status_code
            == 200
        )
        r1 = h1.get(DOC + "T-h2")
    with httpx.Client(base_url=docs_engine_url, http1=False, http2=True) as h2:
        r2 = h2.get(DOC + "T-h2")
        health = h2.get("/state/v1/health")
    assert r1.http_version == "HTTP/1.1" and r2.http_version == "HTTP/2"
    assert r1.content == r2.content and r1.status_code == r2.status_code == 200
    assert health.status_code == 200


def test_gzip_request_bodies(docs_engine_url: str) -> None:
    body = json.dumps({"fields": {"title": "zipped " * 400}}).encode()
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    with httpx.Client(base_url=docs_engine_url) as client:
        r = client.post(DOC + "T-gz", content=gzip.compress(body), headers=headers)
        assert r.status_code == 200
        assert client.get(DOC + "T-gz").json()["fields"]["title"] == "zipped " * 400
        r = client.post(DOC + "T-br", content=body, headers={**headers, "Content-Encoding": "br"})
        assert r.status_code == 400 and "'br'" in r.json()["message"]
        r = client.post(DOC + "T-bad", content=b"not gzip at all", headers=headers)
        assert r.status_code == 400 and set(r.json()) == {"pathId", "message"}
        assert client.get(DOC + "T-bad").status_code == 404


def test_search_route_rejects_bad_json_in_search_error_shape(docs_engine_url: str) -> None:
    with httpx.Client(base_url=docs_engine_url) as client:
        r = client.post("/search/", content=b"{oops", headers={"Content-Type": "application/json"})
        assert r.status_code == 400
        error = r.json()["root"]["errors"][0]
        assert set(error) >= {"code", "summary", "message"}
        assert client.request("PATCH", "/search/").status_code == 405


def test_body_over_limit_is_413(engine_factory) -> None:
    engine = engine_factory(args=["--max-body-mb", "0.01"])  # about 10 kB
    with httpx.Client(base_url=engine.url) as client:
        big = {"fields": {"title": "x" * 20_000}}
        r = client.post(DOC + "big", json=big)
        assert r.status_code == 413 and set(r.json()) == {"pathId", "message"}
        bomb = gzip.compress(json.dumps(big).encode())  # small on the wire, big once decoded
        r = client.post(DOC + "big", content=bomb, headers={"Content-Encoding": "gzip"})
        assert r.status_code == 413
        assert client.post(DOC + "small", json={"fields": {"title": "ok"}}).status_code == 200


def test_write_queue_bound_gives_429_and_pyvespa_still_feeds_everything(engine_factory) -> None:
    engine = engine_factory(args=["--max-pending-writes", "2"])

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=engine.url, http1=False, http2=True) as client:
            return await asyncio.gather(
                *(client.post(DOC + f"B{i}", json={"fields": {"views": i}}) for i in range(100))
            )

    responses = asyncio.run(burst())
    statuses = {r.status_code for r in responses}
    assert statuses <= {200, 429} and 429 in statuses
    rejected = next(r for r in responses if r.status_code == 429)
    assert set(rejected.json()) == {"pathId", "message"}

    host, port = engine.url.rsplit(":", 1)
    app = Vespa(url=host, port=int(port))
    failures: list[VespaResponse] = []
    docs = [{"id": f"F{i}", "fields": {"views": i}} for i in range(150)]
    app.feed_iterable(
        docs,
        schema="product",
        namespace="product",
        max_workers=12,
        callback=lambda r, _id: failures.append(r) if not r.is_successful() else None,
    )
    assert not failures
    with httpx.Client(base_url=engine.url) as client:
        page = client.get(
            DOC, params={"cluster": "shop", "selection": "true", "wantedDocumentCount": "1024"}
        ).json()
    assert {f"id:product:product::F{i}" for i in range(150)} <= {d["id"] for d in page["documents"]}


def test_kill_9_after_last_ack_loses_nothing(engine_factory, tmp_path) -> None:
    data = tmp_path / "crash-data"
    engine = engine_factory(data_dir=data)

    async def feed() -> list[int]:
        async with httpx.AsyncClient(
            base_url=engine.url, http1=False, http2=True, timeout=60
        ) as client:
            sem = asyncio.Semaphore(64)

            async def one(i: int) -> int:
                async with sem:
                    fields = {
                        "title": f"doc {i}",
                        "views": i,
                        "embedding": [i, i + 1, i + 2, i + 3],
                    }
                    return (await client.post(DOC + f"K{i}", json={"fields": fields})).status_code

            return await asyncio.gather(*(one(i) for i in range(1000)))

    assert asyncio.run(feed()) == [200] * 1000
    engine.kill()  # right after the last 200: no shutdown, no snapshot

    restarted = engine_factory(data_dir=data)
    with httpx.Client(base_url=restarted.url) as client:
        seen = 0
        params = {"cluster": "shop", "wantedDocumentCount": "1024"}
        while True:
            page = client.get(DOC, params=params).json()
            seen += page["documentCount"]
            if "continuation" not in page:
                break
            params["continuation"] = page["continuation"]
        assert seen == 1000
        got = client.get(DOC + "K999").json()["fields"]
        assert got["views"] == 999 and got["embedding"]["values"] == [999.0, 1000.0, 1001.0, 1002.0]
        search = client.get(
            "/search/", params={"yql": "select * from product where true", "hits": "0"}
        )
        if search.status_code == 500 and "search module not installed" in search.text:
            pytest.skip("documents survived; /search/ not available yet to check searchability")
        assert search.status_code == 200 and search.json()["root"]["fields"]["totalCount"] == 1000


def search_available(url: str) -> bool:
    r = httpx.get(url + "/search/", params={"yql": "select * from product where true", "hits": "0"})
    return not (r.status_code == 500 and "search module not installed" in r.text)


def test_search_over_http1_h2c_and_gzip_gives_identical_bodies(docs_engine_url: str) -> None:
    if not search_available(docs_engine_url):
        pytest.skip("/search/ is not installed yet")
    with httpx.Client(base_url=docs_engine_url) as h1:
        for i in range(3):
            fields = {"product_id": f"S{i}", "title": f"search doc {i}", "popularity": 100.0 + i}
            assert h1.post(DOC + f"S{i}", json={"fields": fields}).status_code == 200
    query = {"yql": 'select * from product where product_id in ("S0", "S1", "S2")', "hits": 3}
    headers = {"Accept": "application/cbor"}  # what pyvespa sends; JSON is a correct answer
    with httpx.Client(base_url=docs_engine_url) as h1:
        plain = h1.post("/search/", json=query, headers=headers)
        zipped = h1.post(
            "/search/",
            content=gzip.compress(json.dumps(query).encode()),
            headers={**headers, "Content-Encoding": "gzip", "Content-Type": "application/json"},
        )
    with httpx.Client(base_url=docs_engine_url, http1=False, http2=True) as h2:
        over_h2 = h2.post("/search/", json=query, headers=headers)
    assert plain.status_code == 200, plain.text
    assert plain.headers["content-type"] == "application/json;charset=utf-8"
    assert over_h2.http_version == "HTTP/2"
    assert plain.content == zipped.content == over_h2.content
    ids = [hit["fields"]["product_id"] for hit in plain.json()["root"]["children"]]
    assert ids == ["S2", "S1", "S0"]


def test_pyvespa_sync_and_async_queries(docs_engine_url: str) -> None:
    if not search_available(docs_engine_url):
        pytest.skip("/search/ is not installed yet")
    host, port = docs_engine_url.rsplit(":", 1)
    app = Vespa(url=host, port=int(port))
    app.feed_data_point(
        "product", "Q1", {"product_id": "Q1", "title": "query me", "popularity": 5.0}
    )
    yql = 'select * from product where product_id in ("Q1")'
    sync = app.query(yql=yql, hits=2)
    assert sync.is_successful() and [h["id"] for h in sync.hits] == ["id:product:product::Q1"]

    async def run() -> list:
        async with app.asyncio() as session:
            result = await session.query(body={"yql": yql, "hits": 2})
            return result.hits

    assert asyncio.run(run()) == sync.hits


def test_project_package_is_served(engine_url: str) -> None:
    with httpx.Client(base_url=engine_url) as client:
        assert client.get("/state/v1/health").json()["status"]["code"] == "up"
        fields = {"product_id": "PP1", "title": "Chef knife", "price": 0.4, "in_stock": True}
        r = client.post("/document/v1/product/product/docid/PP1", json={"fields": fields})
        assert r.status_code == 200
        got = client.get("/document/v1/product/product/docid/PP1").json()["fields"]
        assert got["price"] == 0.4000000059604645
        seller = {"seller_id": "S1", "rating": 4.5, "is_blocked": False}
        assert client.post(
            "/document/v1/seller/seller/docid/S1", json={"fields": seller}
        ).is_success
