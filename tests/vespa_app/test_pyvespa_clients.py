"""pyvespa's sync (HTTP/1.1) and async (HTTP/2 only) clients against the engine (spec §2, §3)."""

from __future__ import annotations

import asyncio

import pytest
from vespa.application import Vespa
from vespa.io import VespaResponse


@pytest.fixture
def app(docs_engine_url: str) -> Vespa:
    host, port = docs_engine_url.rsplit(":", 1)
    return Vespa(url=host, port=int(port))


def long_title(i: int) -> str:
    return f"product {i} " + "lorem ipsum " * 120  # > 1024 bytes: pyvespa gzips the body


def test_sync_client_document_operations(app: Vespa) -> None:
    r = app.feed_data_point(
        "product", "sync-1", {"title": long_title(1), "price": 0.4, "embedding": [1, 2, 3, 4]}
    )
    assert r.is_successful() and r.get_json()["id"] == "id:product:product::sync-1"
    got = app.get_data("product", "sync-1")
    assert got.status_code == 200
    assert got.get_json()["fields"]["price"] == 0.4000000059604645
    assert got.get_json()["fields"]["title"] == long_title(1)

    upd = app.update_data("product", "sync-1", {"price": 2.5})
    assert upd.is_successful()
    assert app.get_data("product", "sync-1").get_json()["fields"]["price"] == 2.5
    created = app.update_data("product", "sync-new", {"views": 3}, create=True)
    assert created.is_successful()
    assert app.get_data("product", "sync-new").get_json()["fields"] == {"views": 3}
    assert app.update_data("product", "sync-none", {"views": 3}).is_successful()
    assert app.get_data("product", "sync-none").status_code == 404

    assert app.delete_data("product", "sync-1").is_successful()
    assert app.get_data("product", "sync-1").status_code == 404
    assert app.get_data("product", "odd/id#1").status_code == 404


def test_sync_feed_iterable_and_visit(app: Vespa) -> None:
    docs = [{"id": f"it-{i}", "fields": {"title": long_title(i), "views": i}} for i in range(40)]
    failures: list[VespaResponse] = []

    def callback(response: VespaResponse, doc_id: str) -> None:
        if not response.is_successful():
            failures.append(response)

    app.feed_iterable(docs, schema="product", namespace="product", callback=callback, max_workers=4)
    assert not failures
    ids = set()
    for slice_ in app.visit(
        content_cluster_name="shop",
        schema="product",
        selection="product.views >= 0",
        wanted_document_count=7,
    ):
        for page in slice_:
            ids.update(d["id"] for d in page.documents)
    assert {f"id:product:product::it-{i}" for i in range(40)} <= ids
    for i in range(40):
        app.delete_data("product", f"it-{i}")


def test_async_client_over_http2(app: Vespa) -> None:
    async def run() -> list[int]:
        async with app.asyncio() as session:
            put = await session.feed_data_point(
                "product", "async-1", {"title": long_title(2), "views": 1}
            )
            upd = await session.update_data("product", "async-1", {"views": 5})
            get = await session.get_data("product", "async-1")
            assert get.get_json()["fields"]["views"] == 5
            delete = await session.delete_data("product", "async-1")
            missing = await session.get_data("product", "async-1")
            return [
                put.status_code,
                upd.status_code,
                get.status_code,
                delete.status_code,
                missing.status_code,
            ]

    assert asyncio.run(run()) == [200, 200, 200, 200, 404]


def test_feed_async_iterable(app: Vespa) -> None:
    docs = [{"id": f"aiter-{i}", "fields": {"title": long_title(i), "views": i}} for i in range(60)]
    statuses: list[int] = []
    app.feed_async_iterable(
        docs,
        schema="product",
        namespace="product",
        callback=lambda r, _id: statuses.append(r.status_code),
    )
    assert statuses == [200] * 60
    assert app.get_data("product", "aiter-59").get_json()["fields"]["views"] == 59


def test_http2_connection_is_not_closed_after_many_requests(docs_engine_url: str) -> None:
    """pyvespa's async client sends everything over one HTTP/2 connection; hypercorn's default
    sends GOAWAY after 1,000 requests, which stalled feed_async_iterable mid-feed."""
    import socket

    import h2.config
    import h2.connection
    import h2.events

    host, port = docs_engine_url.removeprefix("http://").rsplit(":", 1)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    terminated = []
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        for _ in range(1100):
            stream = conn.get_next_available_stream_id()
            headers = [(":method", "GET"), (":path", "/state/v1/health"),
                       (":scheme", "http"), (":authority", f"{host}:{port}")]  # fmt: skip
            conn.send_headers(stream, headers, end_stream=True)
            sock.sendall(conn.data_to_send())
            ended = False
            while not ended and not terminated:
                for event in conn.receive_data(sock.recv(65536)):
                    if isinstance(event, h2.events.DataReceived):
                        conn.acknowledge_received_data(event.flow_controlled_length, stream)
                    ended |= isinstance(event, h2.events.StreamEnded)
                    if isinstance(event, h2.events.ConnectionTerminated):
                        terminated.append(event)
                sock.sendall(conn.data_to_send())
            assert not terminated, f"server closed the connection: {terminated[0]}"
