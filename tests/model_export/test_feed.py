"""Feeding an export into the embedded engine through pyvespa, and querying it back."""

from __future__ import annotations

import itertools
import json
import urllib.request

import numpy as np
import pytest

from model_export.cli import DEFAULT_PACKAGE, main
from model_export.export import read_embeddings
from model_export.feed import category_paths, product_documents, user_documents
from model_export.manifest import Manifest
from trainer.data.loaders import load_dataset


def search(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url + "/search/", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def count(url: str, doc_type: str) -> int:
    out = search(url, {"yql": f"select * from {doc_type} where true", "hits": 0})
    return out["root"]["fields"]["totalCount"]


def get(url: str, doc_type: str, doc_id: str) -> dict:
    with urllib.request.urlopen(f"{url}/document/v1/{doc_type}/{doc_type}/docid/{doc_id}") as r:
        return json.loads(r.read())["fields"]


def nearest(url: str, vector: list[float], hits: int = 5) -> list[tuple[str, float]]:
    # Exact search: the assertions are about the fed vectors, not about HNSW recall.
    nn = f"{{targetHits:{max(hits, 50)}, approximate:false}}nearestNeighbor(embedding, q_user)"
    out = search(
        url,
        {
            "yql": f"select * from product where {nn}",
            "input.query(q_user)": vector,
            "ranking.profile": "retrieval",
            "hits": hits,
        },
    )
    return [
        (h["fields"]["product_id"], h["fields"]["matchfeatures"]["ann"])
        for h in out["root"].get("children", [])
    ]


def test_documents_are_data_with_the_schema_fields(exports, dataset):
    market = load_dataset(dataset)
    manifest = Manifest.read(exports["lightgcn"])
    ids, table = read_embeddings(exports["lightgcn"], manifest, "product")
    doc = next(product_documents(market, ids, table))
    fields = doc["fields"]
    assert doc["id"] == ids[0] == fields["product_id"]
    assert set(fields) <= {
        "product_id", "title", "description", "category_path", "seller_id", "price",
        "margin", "created_at", "in_stock", "consumable", "popularity", "embedding",
        "ctx_popularity", "seller_idx", "category_idx",
    }  # fmt: skip
    # Codes: the index in the dataset's sorted ids (the ranker's training maps), -1 unknown.
    product = market.products.set_index("product_id").loc[ids[0]]
    assert fields["seller_idx"] == sorted(market.sellers["seller_id"]).index(product["seller_id"])
    categories = sorted(market.categories["category_id"])
    assert fields["category_idx"] == categories.index(product["category_id"])
    assert np.linalg.norm(fields["embedding"]["values"]) == pytest.approx(1.0, abs=1e-6)
    path = fields["category_path"]
    assert path[-1] == market.products.set_index("product_id").loc[ids[0], "category_id"]
    assert all(child.startswith(parent) for parent, child in itertools.pairwise(path))
    assert isinstance(fields["created_at"], int)

    user_ids, users = read_embeddings(exports["lightgcn"], manifest, "user")
    docs = list(user_documents(market, user_ids, users, ids))
    # The ranker's history keeps 100 events; exclusions and walk seeds read the newest 50.
    assert all(len(d["fields"]["recent_item_idx"]) <= 100 for d in docs)
    assert all(len(d["fields"]["recent_product_ids"]) <= 50 for d in docs)
    with_history = next(d for d in docs if d["fields"]["recent_product_ids"])
    fields = with_history["fields"]
    assert [ids[i] for i in fields["recent_item_idx"]] == fields["history_product_ids"]
    assert fields["recent_product_ids"] == fields["history_product_ids"][:50]
    events = market.events[market.events["user_id"] == with_history["id"]]
    newest = events[events["event_type"].isin(market.info.positive_events)]["timestamp"].max()
    first = market.events[
        (market.events["user_id"] == with_history["id"])
        & (market.events["product_id"] == fields["recent_product_ids"][0])
    ]["timestamp"].max()
    assert first == newest  # newest first


def test_category_paths_walk_the_taxonomy():
    import pandas as pd

    frame = pd.DataFrame(
        {"category_id": ["home", "home/kitchen", "home/kitchen/knives"],
         "parent_id": [None, "home", "home/kitchen"]}
    )  # fmt: skip
    assert category_paths(frame)["home/kitchen/knives"] == [
        "home",
        "home/kitchen",
        "home/kitchen/knives",
    ]


def test_feed_query_refeed_and_partial_update(engine_factory, exports, dataset, tmp_path):
    engine = engine_factory(package_dir=DEFAULT_PACKAGE, data_dir=tmp_path / "engine")
    folder = exports["lightgcn"]
    argv = ["feed", "--export", str(folder), "--dataset", str(dataset), "--url", engine.url]
    assert main([*argv, "--no-progress", "--package", str(DEFAULT_PACKAGE)]) == 0
    market = load_dataset(dataset)
    counts = {t: count(engine.url, t) for t in ("product", "user", "seller")}
    assert counts == {"product": 300, "user": 200, "seller": len(market.sellers)}

    manifest = Manifest.read(folder)
    user_ids, users = read_embeddings(folder, manifest, "user")
    product_ids, products = read_embeddings(folder, manifest, "product")
    stored = get(engine.url, "user", user_ids[0])
    query = stored["embedding"]["values"]
    hits = nearest(engine.url, query)
    assert len(hits) == 5
    # The engine's closeness is the angular closeness of the exported (normalised) vectors.
    unit = products / np.linalg.norm(products, axis=1, keepdims=True)
    cosine = unit @ (users[0] / np.linalg.norm(users[0]))
    for product_id, ann in hits:
        want = 1.0 / (1.0 + (1.0 - cosine[product_ids.index(product_id)]))
        assert ann == pytest.approx(want, abs=1e-5)

    # Re-feeding changes nothing: same documents, same answers.
    assert main([*argv, "--no-progress"]) == 0
    assert {t: count(engine.url, t) for t in counts} == counts
    assert nearest(engine.url, query) == hits

    # An embedding refresh is a partial update: the top product's vector turns away from the
    # user; its other fields stay.
    top = hits[0][0]
    before = get(engine.url, "product", top)
    refreshed = tmp_path / "refreshed"
    refreshed.mkdir()
    for name in ("manifest.json", "product_ids.json", "user_ids.json", "user_embeddings.npy"):
        (refreshed / name).write_bytes((folder / name).read_bytes())
    changed = products.copy()
    changed[product_ids.index(top)] = -users[0]
    np.save(refreshed / "product_embeddings.npy", changed)
    refresh = [
        "feed",
        "--export",
        str(refreshed),
        "--dataset",
        str(dataset),
        "--url",
        engine.url,
        "--embeddings-only",
        "--types",
        "product",
        "--no-progress",
    ]
    assert main(refresh) == 0
    after = get(engine.url, "product", top)
    assert after["title"] == before["title"] and after["price"] == before["price"]
    stored = np.array(after["embedding"]["values"])
    np.testing.assert_allclose(stored, -users[0] / np.linalg.norm(users[0]), atol=1e-6)
    closeness = dict(nearest(engine.url, query, hits=300))
    assert closeness[top] == pytest.approx(1.0 / 3.0, abs=1e-5)  # cosine -1: distance 2
    assert closeness[top] < hits[0][1]
    assert top not in dict(nearest(engine.url, query))
    assert count(engine.url, "product") == 300
    # The sellers' vectors follow their products' new ones.
    from model_export.feed import seller_vectors

    seller = market.products.set_index("product_id").loc[top, "seller_id"]
    old_vector = get(engine.url, "seller", seller)["embedding"]["values"]
    assert main([*refresh[:-3], "--types", "seller", "--no-progress"]) == 0
    stored = get(engine.url, "seller", seller)
    expected = seller_vectors(market, product_ids, changed)[seller]
    np.testing.assert_allclose(stored["embedding"]["values"], expected, atol=1e-6)
    assert not np.allclose(old_vector, expected, atol=1e-3)
    assert stored["seller_id"] == seller  # a partial update: the rest of the document stays


def test_consumable_context_popularity_purchases_and_seller_vectors(exports, dataset):
    from model_export.feed import seller_documents, seller_vectors
    from model_export.popularity import context_popularity

    market = load_dataset(dataset)
    manifest = Manifest.read(exports["lightgcn"])
    ids, table = read_embeddings(exports["lightgcn"], manifest, "product")
    products = {d["id"]: d["fields"] for d in product_documents(market, ids, table)}
    flags = market.products.set_index("product_id")["consumable"]
    assert all(products[p]["consumable"] == bool(flags[p]) for p in ids)
    positives = market.events[market.events["event_type"].isin(market.info.positive_events)]
    lifts = context_popularity(positives, ids)
    with_events = [p for p, cells in zip(ids, lifts, strict=True) if cells]
    assert with_events and all("ctx_popularity" in products[p] for p in with_events)
    sample = products[with_events[0]]["ctx_popularity"]
    assert sample["all"] == pytest.approx(
        (positives["product_id"] == with_events[0]).sum() / len(positives) * len(ids), rel=1e-5
    )

    user_ids, users = read_embeddings(exports["lightgcn"], manifest, "user")
    docs = {d["id"]: d["fields"] for d in user_documents(market, user_ids, users, ids)}
    buys = market.events[market.events["event_type"] == "purchase"]
    buyer = buys["user_id"].iloc[0]
    newest = buys[buys["user_id"] == buyer].sort_values("timestamp")["product_id"].iloc[-1]
    assert docs[buyer]["recent_purchases"][0] == newest
    assert set(docs[buyer]["recent_purchases"]) == set(buys[buys["user_id"] == buyer]["product_id"])

    # Seller vectors: the normalised mean of normalised product vectors, weights 1 + purchases.
    vectors = seller_vectors(market, ids, table)
    seller = market.products["seller_id"].iloc[0]
    mine = market.products[market.products["seller_id"] == seller]["product_id"]
    unit = table / np.linalg.norm(table, axis=1, keepdims=True)
    sales = buys["product_id"].value_counts()
    expected = sum((1 + sales.get(p, 0)) * unit[ids.index(p)] for p in mine)
    np.testing.assert_allclose(vectors[seller], expected / np.linalg.norm(expected), atol=1e-6)
    docs = {d["id"]: d["fields"] for d in seller_documents(market, vectors)}
    assert np.linalg.norm(docs[seller]["embedding"]["values"]) == pytest.approx(1.0, abs=1e-6)


def test_users_keep_100_history_events_and_products_their_codes():
    """120 clicks: the ranker's history keeps the newest 100 (ids, rows and context aligned),
    recent_product_ids their newest 50; seller_idx / category_idx follow the given maps, -1
    for an id the maps lack or a missing one."""
    import pandas as pd

    from tests.trainer.data.builders import events, frames, marketplace

    tables = frames(num_products=130)
    products = tables["products"]
    products.loc[0, "seller_id"] = None
    clicks = events([("u1", f"p{i}", "click") for i in range(120)] + [("u2", "p0", "click")])
    market = marketplace(products=products, events=clicks)
    product_ids = products["product_id"].tolist()
    user_ids = ["u1", "u2", "u3"]
    docs = {
        d["id"]: d["fields"] for d in user_documents(market, user_ids, np.eye(3, 4), product_ids)
    }
    newest = [f"p{i}" for i in range(119, 19, -1)]
    fields = docs["u1"]
    assert fields["history_product_ids"] == newest
    assert fields["recent_product_ids"] == newest[:50]
    assert fields["recent_item_idx"] == [product_ids.index(p) for p in newest]
    assert len(fields["recent_hours"]) == len(fields["recent_devices"]) == 100
    assert docs["u2"]["recent_item_idx"] == [0]

    codes = {"seller": {"s2": 0}, "category": {"home": 0, "home/kitchen": 1}}
    table = np.eye(130, 4)
    got = {
        d["id"]: d["fields"]
        for d in product_documents(market, product_ids[:3], table[:3], codes=codes)
    }
    assert [got[p]["seller_idx"] for p in ("p0", "p1", "p2")] == [-1, 0, -1]  # None, s2, s1
    assert {got[p]["category_idx"] for p in got} == {1}
    assert pd.isna(market.products.loc[0, "seller_id"])
