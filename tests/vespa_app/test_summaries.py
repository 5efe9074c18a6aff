"""Rendered-summary cache: an entry serves only the very stored dict it was rendered from."""

from __future__ import annotations

import gc

import pytest

from tests.vespa_app.system.support import make_engine
from vespa_app.engine.search.summaries import SummaryCache


def test_entry_is_used_only_for_the_same_stored_dict():
    cache = SummaryCache()
    plan = cache.plan(("product", ("title",), True, True, True))
    stored = {"title": "a", "tags": ["x", "y"]}
    cache.remember(plan, "P1", stored, {"title": "a", "tags": ["x", "y"]}, "id1")
    fields, hit_id = cache.lookup(plan, "P1", stored)
    assert (fields, hit_id) == ({"title": "a", "tags": ["x", "y"]}, "id1")
    assert list(fields) == ["title", "tags"]  # the summary's field order is kept
    fields["tags"].append("z")  # each lookup returns new dicts and lists
    assert cache.lookup(plan, "P1", stored)[0]["tags"] == ["x", "y"]
    # an equal but new dict is a new version of the document: stale
    assert cache.lookup(plan, "P1", {"title": "a", "tags": ["x", "y"]}) is None
    assert cache.lookup(plan, "P2", stored) is None


def test_only_plain_values_are_cached_and_entries_leave_the_collector_alone():
    cache = SummaryCache()
    plan = cache.plan("p")
    tensor = {"v": {"type": "tensor<float>(x[2])", "values": [1.0, 2.0]}}
    cache.remember(plan, "T", tensor, dict(tensor), "id")
    assert cache.lookup(plan, "T", tensor) is None
    nested = {"v": [["a"]]}
    cache.remember(plan, "N", nested, {"v": [["a"]]}, "id")
    assert cache.lookup(plan, "N", nested) is None
    plain = {"n": 1.5, "s": "x", "b": True, "a": ["p", "q"]}
    cache.remember(plan, "P", plain, dict(plain), "id")
    for _ in range(2):  # each pass untracks the tuples whose items are all untracked:
        gc.collect()  # the array values, then the entry
    assert not gc.is_tracked(plan.plain["P"]) and not gc.is_tracked(plan.rest["P"])
    assert cache.lookup(plan, "P", plain) == (plain, "id")


def test_plans_are_separate_and_capacity_bounds_each():
    cache = SummaryCache(capacity=2)
    a, b = cache.plan("a"), cache.plan("b")
    assert cache.plan("a") is a and a is not b
    docs = [{"n": i} for i in range(3)]
    for i, doc in enumerate(docs):
        cache.remember(a, f"P{i}", doc, {"n": i}, f"id{i}")
    assert len(a.stored) <= 2 and cache.lookup(a, "P2", docs[2]) == ({"n": 2}, "id2")
    assert cache.lookup(b, "P2", docs[2]) is None
    with pytest.raises(ValueError, match="capacity"):
        SummaryCache(capacity=0)


def _hit(engine, pid: str, summary: str | None = None) -> dict:
    body = {"yql": f'select * from product where product_id contains "{pid}"', "hits": 1}
    if summary:
        body["presentation.summary"] = summary
    status, out = engine.search({}, body)
    assert status == 200, out
    return out["root"]["children"][0]


def test_search_renders_a_document_written_after_it_was_cached():
    engine, store, docs = make_engine(50)
    pid, fields = docs[3]
    first = _hit(engine, pid)
    assert _hit(engine, pid) == first  # served from the cache, identical
    store.put("product", pid, {**fields, "title": "renamed product", "price": 12.5})
    again = _hit(engine, pid)
    assert again["fields"]["title"] == "renamed product"
    assert again["fields"]["price"] == 12.5
    assert again["id"] == first["id"]
    # the cached hit dicts are copies: changing one reply never leaks into the next
    again["fields"]["title"] = "tampered"
    assert _hit(engine, pid)["fields"]["title"] == "renamed product"


def test_each_summary_plan_renders_its_own_fields():
    engine, _, docs = make_engine(50)
    pid = docs[5][0]
    full = _hit(engine, pid)
    assert "title" in full["fields"] and "documentid" in full["fields"]
    body = {"yql": f'select product_id from product where product_id contains "{pid}"', "hits": 1}
    status, out = engine.search({}, body)
    assert status == 200, out
    narrow = out["root"]["children"][0]
    assert set(narrow["fields"]) == {"product_id"}
    assert narrow["id"].startswith("index:") and full["id"].startswith("id:")
    assert _hit(engine, pid) == full
