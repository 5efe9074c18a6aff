"""/document/v1 behaviour over HTTP (spec §3; conformance cases 3-19)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator

import httpx
import pytest

from .conftest import DOCS_PACKAGE

DOC = "/document/v1/product/product/docid/"


@pytest.fixture
def client(docs_engine_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=docs_engine_url, timeout=30) as c:
        yield c


def new_id(prefix: str = "P") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def put(client: httpx.Client, local_id: str, fields: dict, path: str = DOC) -> httpx.Response:
    return client.post(path + local_id, json={"fields": fields})


def test_health_and_status(client: httpx.Client) -> None:
    assert client.get("/ApplicationStatus").status_code == 200
    health = client.get("/state/v1/health")
    assert health.status_code == 200 and health.json()["status"]["code"] == "up"
    assert health.headers["content-type"] == "application/json;charset=utf-8"


def test_unknown_path_and_wrong_method(client: httpx.Client) -> None:
    assert client.get("/nothing").status_code == 404
    r = client.request("PATCH", DOC + "P1")
    assert r.status_code == 405
    assert set(r.json()) == {"pathId", "message"}
    assert r.json()["message"].startswith(
        "'PATCH' not allowed at '/document/v1/product/product/docid/P1'"
    )
    r = client.get("/document/v1/product/product/nothing/x")
    assert r.status_code == 404 and r.json()["message"].startswith(
        "Nothing at '/document/v1/product/product/"
    )
    assert client.post("/state/v1/health").status_code == 405


def test_put_get_roundtrip_renders_like_vespa(client: httpx.Client) -> None:
    pid = new_id()
    r = put(
        client,
        pid,
        {
            "product_id": pid,
            "title": "Chef knife",
            "price": 0.4,
            "weight": 0.4,
            "views": 7,
            "created_at": 1_700_000_000_123,
            "in_stock": True,
            "category_path": ["home", "home/kitchen"],
            "category_scores": {"shoes": 0.7},
            "embedding": [0.1, 0.2, 0.3, 0.4],
        },
    )
    assert r.status_code == 200
    assert r.json() == {"pathId": DOC + pid, "id": f"id:product:product::{pid}"}
    got = client.get(DOC + pid)
    assert got.status_code == 200
    body = got.json()
    assert set(body) == {"pathId", "id", "fields"}
    fields = body["fields"]
    assert fields["price"] == 0.4000000059604645  # float32 widened
    assert fields["weight"] == 0.4  # double unchanged
    assert fields["views"] == 7 and fields["created_at"] == 1_700_000_000_123
    assert fields["in_stock"] is True
    assert fields["category_path"] == ["home", "home/kitchen"]
    assert fields["embedding"] == {
        "type": "tensor<float>(x[4])",
        "values": [
            0.10000000149011612,
            0.20000000298023224,
            0.30000001192092896,
            0.4000000059604645,
        ],
    }
    assert fields["category_scores"] == {
        "type": "tensor<float>(category{})",
        "cells": {"shoes": 0.699999988079071},
    }
    assert "margin" not in fields  # unset fields are omitted


def test_get_missing_is_404_without_fields(client: httpx.Client) -> None:
    r = client.get(DOC + "no-such-doc")
    assert r.status_code == 404
    assert r.json() == {"pathId": DOC + "no-such-doc", "id": "id:product:product::no-such-doc"}


def test_local_id_with_slash_hash_and_colon(client: httpx.Client) -> None:
    r = client.post(DOC + "a/b%231:x", json={"fields": {"title": "odd id"}})
    assert r.status_code == 200
    assert r.json()["id"] == "id:product:product::a/b#1:x"
    assert client.get(DOC + "a/b%231:x").json()["id"] == "id:product:product::a/b#1:x"
    assert client.get(DOC + "a%2Fb%231%3Ax").json()["fields"]["title"] == "odd id"


def test_validation_errors_store_nothing(client: httpx.Client) -> None:
    pid = new_id()
    r = put(client, pid, {"title": "t", "foo": 1})
    assert r.status_code == 400
    assert r.json()["message"].startswith(
        "No field 'foo' in the structure of type 'product', which has the fields: ["
    )
    assert client.get(DOC + pid).status_code == 404
    r = put(client, pid, {"embedding": [0.1, 0.2, 0.3]})
    assert r.status_code == 400 and "embedding" in r.json()["message"]
    assert client.get(DOC + pid).status_code == 404
    for field, value in [
        ("title", 3),
        ("views", "7"),
        ("views", 2**31),
        ("views", 1.5),
        ("price", "1.0"),
        ("in_stock", 1),
        ("category_path", "home"),
        ("category_path", [1]),
        ("category_scores", {"shoes": "x"}),
    ]:
        r = put(client, pid, {field: value})
        assert r.status_code == 400, (field, value)
        assert field in r.json()["message"]
    assert client.get(DOC + pid).status_code == 404
    r = client.post("/document/v1/nosuch/nosuch/docid/x", json={"fields": {}})
    assert r.status_code == 400 and "nosuch" in r.json()["message"]
    bad = client.post(DOC + pid, content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 400 and set(bad.json()) == {"pathId", "message"}


def test_put_replaces_and_drops_id_keys(client: httpx.Client) -> None:
    pid = new_id()
    r = client.post(DOC + pid, json={"put": "id:x:y::z", "fields": {"title": "a", "margin": 0.5}})
    assert r.status_code == 200 and r.json()["id"] == f"id:product:product::{pid}"
    assert client.get("/document/v1/y/y/docid/z").status_code == 400  # type y does not exist
    put(client, pid, {"title": "b"})
    fields = client.get(DOC + pid).json()["fields"]
    assert fields == {"title": "b"}


def test_update_operations(client: httpx.Client) -> None:
    pid = new_id()
    put(
        client,
        pid,
        {
            "title": "t",
            "price": 10.0,
            "popularity": 1.0,
            "views": 3,
            "category_path": ["a", "b", "a"],
        },
    )
    upd = client.put(DOC + pid, json={"fields": {"price": {"assign": 12.5}}})
    assert upd.status_code == 200 and upd.json() == {
        "pathId": DOC + pid,
        "id": f"id:product:product::{pid}",
    }
    assert client.get(DOC + pid).json()["fields"]["price"] == 12.5
    client.put(DOC + pid, json={"fields": {"popularity": {"increment": 1.5}}})
    client.put(
        DOC + pid, json={"fields": {"popularity": {"multiply": 2}, "views": {"decrement": 5}}}
    )
    fields = client.get(DOC + pid).json()["fields"]
    assert fields["popularity"] == 5.0 and fields["views"] == -2
    client.put(DOC + pid, json={"fields": {"category_path": {"add": ["c", "a"]}}})
    assert client.get(DOC + pid).json()["fields"]["category_path"] == ["a", "b", "a", "c", "a"]
    client.put(DOC + pid, json={"fields": {"category_path": {"remove": ["a"]}}})
    assert client.get(DOC + pid).json()["fields"]["category_path"] == ["b", "c"]
    client.put(DOC + pid, json={"fields": {"title": {"assign": None}}})
    assert "title" not in client.get(DOC + pid).json()["fields"]
    client.put(DOC + pid, json={"fields": {"embedding": {"assign": {"values": [1, 2, 3, 4]}}}})
    assert client.get(DOC + pid).json()["fields"]["embedding"]["values"] == [1.0, 2.0, 3.0, 4.0]
    client.put(
        DOC + pid, json={"fields": {"category_scores": {"add": {"cells": {"a": 1.0, "b": 2.0}}}}}
    )
    client.put(
        DOC + pid,
        json={"fields": {"category_scores": {"remove": {"addresses": [{"category": "a"}]}}}},
    )
    assert client.get(DOC + pid).json()["fields"]["category_scores"]["cells"] == {"b": 2.0}


def test_update_missing_document_and_create(client: httpx.Client) -> None:
    pid = new_id()
    r = client.put(
        DOC + pid, params={"create": "false"}, json={"fields": {"price": {"assign": 1.0}}}
    )
    assert r.status_code == 200
    assert client.get(DOC + pid).status_code == 404
    r = client.put(
        DOC + pid, params={"create": "true"}, json={"fields": {"price": {"assign": 1.0}}}
    )
    assert r.status_code == 200
    assert client.get(DOC + pid).json()["fields"] == {"price": 1.0}


def test_update_errors(client: httpx.Client) -> None:
    pid = new_id()
    put(client, pid, {"title": "t"})
    r = client.put(DOC + pid, json={"fields": {"foo": {"assign": 1}}})
    assert r.status_code == 400 and r.json()["message"].startswith("No field 'foo'")
    r = client.put(
        DOC + pid, json={"fields": {"price": {"modify": {"operation": "add", "cells": []}}}}
    )
    assert r.status_code == 400 and r.json()["message"].startswith("Unsupported by local engine:")
    r = client.put(DOC + pid, json={"fields": {"title": {"increment": 1}}})
    assert r.status_code == 400 and "title" in r.json()["message"]
    r = client.put(DOC + pid, params={"condition": "product.price > 1"}, json={"fields": {}})
    assert r.status_code == 400 and r.json()["message"] == "Unsupported by local engine: condition"


def test_remove(client: httpx.Client) -> None:
    pid = new_id()
    put(client, pid, {"title": "t"})
    r = client.delete(DOC + pid)
    assert r.status_code == 200 and r.json() == {
        "pathId": DOC + pid,
        "id": f"id:product:product::{pid}",
    }
    assert client.get(DOC + pid).status_code == 404
    assert client.delete(DOC + pid).status_code == 200


def test_field_sets(client: httpx.Client) -> None:
    pid = new_id()
    put(client, pid, {"title": "t", "price": 2.0, "views": 1})
    assert set(client.get(DOC + pid, params={"fieldSet": "[id]"}).json()) == {"pathId", "id"}
    part = client.get(DOC + pid, params={"fieldSet": "product:title,views"}).json()
    assert part["fields"] == {"title": "t", "views": 1}
    assert client.get(DOC + pid, params={"fieldSet": "[summary]"}).status_code == 400


def test_namespace_other_than_type_is_refused(client: httpx.Client) -> None:
    r = client.post("/document/v1/shop/product/docid/P1", json={"fields": {}})
    assert r.status_code == 400 and r.json()["message"].startswith("Unsupported by local engine:")
    r = client.get("/document/v1/product/product/group/g/P1")
    assert r.status_code == 400 and r.json()["message"].startswith("Unsupported by local engine:")


def test_visit_continuation_slices_selection_and_delete_where(engine_factory) -> None:
    engine = engine_factory()
    with httpx.Client(base_url=engine.url, timeout=30) as client:
        for i in range(60):
            put(client, f"V{i:03d}", {"title": f"t{i}", "in_stock": i % 3 == 0, "price": float(i)})
        put(client, "U1", {"user_id": "U1"}, path="/document/v1/user/user/docid/")
        seen: list[str] = []
        params = {"cluster": "shop", "wantedDocumentCount": "7"}
        while True:
            page = client.get(DOC, params=params).json()
            assert page["documentCount"] == len(page["documents"]) <= 7
            seen += [d["id"] for d in page["documents"]]
            if "continuation" not in page:
                break
            params["continuation"] = page["continuation"]
        assert sorted(seen) == sorted(f"id:product:product::V{i:03d}" for i in range(60))
        parts = []
        for slice_id in range(4):
            page = client.get(
                DOC,
                params={
                    "cluster": "shop",
                    "wantedDocumentCount": "1000",
                    "slices": "4",
                    "sliceId": str(slice_id),
                },
            ).json()
            parts.append({d["id"] for d in page["documents"]})
        assert sum(len(p) for p in parts) == 60 and len(set().union(*parts)) == 60
        page = client.get(
            DOC,
            params={
                "cluster": "shop",
                "selection": "product.in_stock==true",
                "wantedDocumentCount": "1000",
            },
        ).json()
        assert {d["id"] for d in page["documents"]} == {
            f"id:product:product::V{i:03d}" for i in range(0, 60, 3)
        }
        page = client.get(
            DOC,
            params={"cluster": "shop",
                    "selection": 'product.price >= 50 and not product.title == "t55"',
                    "wantedDocumentCount": "1000", "fieldSet": "[id]"},
        ).json()  # fmt: skip
        assert len(page["documents"]) == 9 and all("fields" not in d for d in page["documents"])
        root = client.get(
            "/document/v1/", params={"cluster": "shop", "wantedDocumentCount": "1000"}
        ).json()
        assert root["documentCount"] == 61
        r = client.get("/document/v1/")
        assert r.status_code == 400 and "cluster" in r.json()["message"]
        assert client.get(DOC, params={"cluster": "nope"}).status_code == 400
        assert (
            client.get(
                DOC, params={"cluster": "shop", "selection": "product.nope == 1"}
            ).status_code
            == 400
        )
        r = client.delete(DOC, params={"cluster": "shop", "selection": "product.in_stock==false"})
        assert r.status_code == 200 and r.json()["documentCount"] == 40
        r = client.delete(DOC, params={"cluster": "shop", "selection": "true"})
        assert r.status_code == 200 and r.json()["documentCount"] == 20
        assert client.get(DOC + "V000").status_code == 404
        assert client.get("/document/v1/user/user/docid/U1").status_code == 200


def test_ignore_undefined_fields(engine_factory, tmp_path) -> None:
    package = tmp_path / "package"
    shutil.copytree(DOCS_PACKAGE, package)
    services = package / "services.xml"
    services.write_text(
        services.read_text().replace(
            "<document-api/>",
            "<document-api><ignore-undefined-fields>true</ignore-undefined-fields></document-api>",
        )
    )
    engine = engine_factory(package_dir=package)
    with httpx.Client(base_url=engine.url) as client:
        r = put(client, "I1", {"title": "kept", "foo": 1})
        assert r.status_code == 200 and r.headers["x-vespa-ignored-fields"] == "true"
        assert client.get(DOC + "I1").json()["fields"] == {"title": "kept"}
        r = client.put(DOC + "I1", json={"fields": {"bar": {"assign": 2}}})
        assert r.status_code == 200 and r.headers["x-vespa-ignored-fields"] == "true"
        assert "x-vespa-ignored-fields" not in put(client, "I2", {"title": "x"}).headers


def test_write_that_outlives_its_timeout_is_504() -> None:
    import asyncio
    import concurrent.futures

    from vespa_app.engine.documents import DocumentApi, RequestError, parse_timeout

    never = concurrent.futures.Future()
    with pytest.raises(RequestError) as err:
        asyncio.run(DocumentApi._await(never, 0.01))
    assert err.value.status == 504
    assert not never.cancelled()  # the writer may still complete it
    assert (
        parse_timeout("180") == 180.0 and parse_timeout("500ms") == 0.5 and parse_timeout("2s") == 2
    )
