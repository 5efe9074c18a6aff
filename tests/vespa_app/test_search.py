"""/search/ conformance (spec §10 cases 22-32, 38-55) against the project package, served by
SearchEngine over an in-memory store. Reference numbers are recomputed with numpy/onnxruntime."""

from __future__ import annotations

import shutil

import numpy as np
import onnxruntime as ort
import pytest

from benchmarks.vespa_fixtures import NOW
from tests.vespa_app.system.support import PACKAGE, make_engine

MAX_AGE = 2592000


@pytest.fixture(scope="module")
def world():
    engine, store, docs = make_engine(2000)
    return engine, store, {d: f for d, f in docs}


def search(world, params=None, body=None):
    engine = world[0]
    return engine.search({k: str(v) for k, v in (params or {}).items()}, body)


def ok(world, params=None, body=None) -> dict:
    status, out = search(world, params, body)
    assert status == 200, out
    return out


def error(world, params=None, body=None) -> tuple[int, dict]:
    status, out = search(world, params, body)
    assert status != 200, out
    return status, out["root"]["errors"][0]


def ids(out) -> list[str]:
    return [h["fields"]["product_id"] for h in out["root"].get("children", [])]


def qvec(world, pid="P7"):
    return world[2][pid]["embedding"].tolist()


def nn_body(world, profile="retrieval", target=400, extra="", **kw):
    body = {
        "yql": f"select * from product where ({{targetHits:{target}}}"
        f"nearestNeighbor(embedding, q_user)) and in_stock = true{extra}",
        "input.query(q_user)": qvec(world),
        "ranking.profile": profile,
        "ranking.freshness": str(NOW),
        "hits": 10,
    }
    if profile in ("ranking", "features"):
        hist = [[0.0] * 50]
        hist[0][:4] = [11, 250, 3, 1999]
        body["input.query(hist)"] = hist
        body["input.query(ctx)"] = [[(i - 8) / 10 for i in range(16)]]
    body.update(kw)
    return body


# -- request handling and limits (22-32) -------------------------------------------------------


def test_22_hits_0_counts_everything_without_children(world):
    out = ok(world, {"yql": "select * from product where true", "hits": 0})
    root = out["root"]
    assert root["fields"]["totalCount"] == 2000 and root["coverage"]["documents"] == 2000
    assert "children" not in root
    assert root["coverage"] == {
        "coverage": 100,
        "documents": 2000,
        "full": True,
        "nodes": 1,
        "results": 1,
        "resultsFull": 1,
    }


def test_23_default_hits_and_offset(world):
    yql = "select * from product where true"
    ten = ids(ok(world, {"yql": yql}))
    assert len(ten) == 10
    assert ids(ok(world, {"yql": yql, "hits": 5, "offset": 5})) == ten[5:]
    pops = [world[2][p]["popularity"] for p in ten]
    assert pops == sorted(pops, reverse=True)


def test_24_url_beats_body_and_nested_body_equals_flat(world):
    yql = "select * from product where true"
    assert len(ids(ok(world, {"yql": yql, "hits": 2}, {"hits": 5}))) == 2
    nested = nn_body(world)
    nested.pop("ranking.profile")
    nested["ranking"] = {"profile": "retrieval"}
    assert ok(world, None, nested) == ok(world, None, nn_body(world))


def test_25_aliases(world):
    body = nn_body(world)
    ref = ok(world, None, body)
    alias = dict(body)
    del alias["ranking.profile"], alias["hits"], alias["input.query(q_user)"]
    alias.update(
        {
            "ranking": "retrieval",
            "count": 10,
            "ranking.features.query(q_user)": body["input.query(q_user)"],
        }
    )
    assert ok(world, None, alias) == ref
    assert (
        ok(world, {"start": 3, "COUNT": 2}, body)["root"]["children"]
        == ref["root"]["children"][3:5]
    )
    card = ok(world, {"summary": "card"}, body)["root"]["children"][0]["fields"]
    assert set(card) == {"product_id", "title", "price", "seller_id", "matchfeatures"}


def test_26_hits_and_offset_limits(world):
    status, err = error(world, {"yql": "select * from product where true", "hits": 401})
    assert status == 400 and err["code"] == 3
    assert err["message"].startswith("401 hits requested, configured limit: 400")
    status, err = error(world, {"yql": "select * from product where true", "offset": 1001})
    assert status == 400 and err["code"] == 3 and err["message"].startswith("Offset of 1001")


def test_27_bad_yql(world):
    status, err = error(world, {"yql": "select * from product where"})
    assert status == 400 and err["code"] == 4
    assert err["message"].startswith("Could not create query from YQL:")
    assert err["summary"] == "Invalid query parameter"


def test_28_unknown_rank_profile(world):
    status, err = error(
        world, {"yql": "select * from product where true", "ranking.profile": "nope"}
    )
    assert status == 400 and err["code"] == 4
    assert err["message"].startswith(
        "schema 'product' does not contain requested rank profile 'nope'"
    )


def test_29_unknown_source(world):
    status, err = error(world, {"yql": "select * from nosuch where true"})
    assert (status, err["code"]) == (400, 4) and err["message"].startswith(
        "Could not resolve source ref 'nosuch'"
    )


def test_30_wrong_tensor_size(world):
    body = nn_body(world)
    body["input.query(q_user)"] = [0.1, 0.2, 0.3]
    status, err = error(world, None, body)
    assert (status, err["code"]) == (400, 3) and err["message"].startswith("Could not set '")
    assert "ranking.features.query(q_user)" in err["message"]


def test_30b_tensor_for_undeclared_input(world):
    body = nn_body(world, **{"input.query(other)": "[1,2]"})
    _status, err = error(world, None, body)
    assert err["message"] == "Expected 'query(other)' to be a tensor, but it is the string '[1,2]'"


def test_31_only_negative(world):
    status, err = error(world, {"yql": 'select * from product where !(product_id in ("P1"))'})
    assert (status, err["code"]) == (400, 3) and err["message"].startswith(
        "Can not search for only negative items"
    )


@pytest.mark.parametrize(
    "params",
    [
        {"yql": "select * from product where true | all(group(seller_id) each(output(count())))"},
        {"yql": "select * from product where true", "collapsefield": "seller_id"},
        {"yql": 'select * from product where wand(title, {"a": 1})'},
        {"yql": "select * from product where true", "ranking.properties.foo": "1"},
        {"yql": "select * from product where true", "presentation.format": "cbor"},
        {"yql": "select * from product where true", "sorting": "-price"},
    ],
)
def test_32_unsupported(world, params):
    status, err = error(world, params)
    assert (status, err["code"]) == (400, 4)
    assert err["message"].startswith("Unsupported by local engine:")


def test_unknown_params_are_inert(world):
    assert ok(world, {"yql": "select * from product where true", "hits": 1, "whatever.x": "1"})


# -- filters (38-41) ------------------------------------------------------------------------------


def test_38_seen_parameter_excludes(world):
    base = nn_body(world)
    top = ids(ok(world, None, base))[:2]
    body = nn_body(world, extra=" and !(product_id in (@seen))", seen=",".join(top))
    body["hits"] = 400
    out = ok(world, None, body)
    got = ids(out)
    assert not set(top) & set(got)
    assert len(got) == 400  # the seen items are filtered before targetHits is spent
    quoted = nn_body(
        world, extra=" and !(product_id in (@seen))", seen='"{}", "{}"'.format(*tuple(top))
    )
    assert not set(top) & set(ids(ok(world, None, quoted)))


def _all_ids(world, where: str) -> set[str]:
    out = ok(world, {"yql": f"select * from product where {where}", "hits": 400})
    assert out["root"]["fields"]["totalCount"] <= 400
    return set(ids(out))


def test_39_numeric_and_bool_filters(world):
    docs = world[2]
    f32 = np.float32
    assert _all_ids(world, "range(price, 10, 20) and in_stock = True") == {
        p for p, f in docs.items() if f32(10) <= f32(f["price"]) <= f32(20) and f["in_stock"]
    }
    assert _all_ids(world, "price < 8 and created_at > 1759000000L") == {
        p for p, f in docs.items() if f32(f["price"]) < f32(8) and f["created_at"] > 1759000000
    }
    edge = next(f["price"] for f in docs.values() if f["price"] > 30)
    assert any(docs[p]["price"] == edge for p in _all_ids(world, f"range(price, {edge}, {edge})"))


def test_40_attribute_contains_is_case_folded(world):
    got = _all_ids(world, 'category_path contains "HOME/KITCHEN" and price < 30')
    expected = {
        p
        for p, f in world[2].items()
        if "home/kitchen" in f["category_path"] and np.float32(f["price"]) < 30
    }
    assert got == expected and got


def test_41_order_by_and_limit_offset(world):
    out = ok(
        world,
        None,
        nn_body(world, yql=None)
        | {
            "yql": "select * from product where "
            "({targetHits:400}nearestNeighbor(embedding, q_user)) order by price desc limit 10"
        },
    )
    prices = [h["fields"]["price"] for h in out["root"]["children"]]
    assert len(prices) == 10 and prices == sorted(prices, reverse=True)
    first = out["root"]["children"][0]
    assert first["relevance"] == pytest.approx(
        first["fields"]["matchfeatures"]["ann"]
        + 0.1 * first["fields"]["matchfeatures"]["fresh"]
        + 0.05 * first["fields"]["matchfeatures"]["pop"]
    )
    body = nn_body(world, "ranking")
    body["yql"] += " order by price desc"
    status, err = error(world, None, body)
    assert (status, err["code"]) == (400, 3) and err["message"].startswith(
        "Sorting is not supported with global phase"
    )
    two = ok(world, {"yql": "select * from product where true limit 31 offset 29"})
    assert len(two["root"]["children"]) == 2


# -- ranking phases (42-49) ------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_reference():
    enc = ort.InferenceSession(str(PACKAGE / "models" / "history_encoder.onnx"))
    ranker = ort.InferenceSession(str(PACKAGE / "models" / "ranker.onnx"))
    return enc, ranker


def _reference_global(world, onnx_reference, body, pid) -> float:
    enc, ranker = onnx_reference
    (state,) = enc.run(
        None,
        {
            "hist": np.asarray(body["input.query(hist)"], np.float32).astype(np.int64),
            "ctx": np.asarray(body["input.query(ctx)"], np.float32),
        },
    )
    doc = world[2][pid]
    (score,) = ranker.run(None, {"user_state": state, "cand": doc["embedding"].reshape(1, -1)})
    fresh = max(1 - (NOW - doc["created_at"]) / MAX_AGE, 0.0)
    return float(score[0, 0]) + 0.05 * fresh


def _first_phase_reference(world, pid) -> float:
    doc, q = world[2][pid], np.asarray(qvec(world), np.float32).astype(np.float64)
    a = doc["embedding"].astype(np.float64)
    ann = 1 / (1 + (1 - a @ q / (q @ q)))
    fresh = max(1 - (NOW - doc["created_at"]) / MAX_AGE, 0.0)
    return ann + 0.1 * fresh + 0.05 * np.log10(1 + float(np.float32(doc["popularity"])))


def test_42_global_phase_onnx_relevance_matches_onnxruntime(world, onnx_reference):
    body = nn_body(world, "ranking")
    out = ok(world, None, body)
    hits = out["root"]["children"]
    assert len(hits) == 10
    for h in hits:
        assert h["relevance"] == pytest.approx(
            _reference_global(world, onnx_reference, body, h["fields"]["product_id"]), rel=1e-5
        )
    # the reranked window is the top rerank-count by first phase; its best 10 by the global score
    # come back
    rerank = world[0].schemas["product"].rank_profiles["ranking"].global_phase.rerank_count
    matched = ids(ok(world, None, nn_body(world, hits=400)))
    window = sorted(matched, key=lambda p: -_first_phase_reference(world, p))[:rerank]
    best = sorted(window, key=lambda p: -_reference_global(world, onnx_reference, body, p))[:10]
    assert ids(out) == best


def test_43_rerank_count_rescales_the_rest(world):
    body = nn_body(world, "ranking", **{"ranking.globalPhase.rerankCount": 5})
    out = ok(world, None, body)
    first = ok(world, None, nn_body(world, "retrieval"))
    f_scores = {h["fields"]["product_id"]: h["relevance"] for h in first["root"]["children"]}
    top5 = list(f_scores)[:5]
    new = [h["relevance"] for h in out["root"]["children"] if h["fields"]["product_id"] in top5]
    i_low, i_high = min(f_scores[p] for p in top5), max(f_scores[p] for p in top5)
    n_low, n_high = min(new), max(new)
    rest = [h for h in out["root"]["children"] if h["fields"]["product_id"] not in top5]
    assert [h["fields"]["product_id"] for h in rest] == list(f_scores)[5:10]  # keep their order
    for h in rest:
        f = f_scores[h["fields"]["product_id"]]
        if i_low > n_low:
            scale = max(n_high - n_low, 1) / max(i_high - i_low, 1)
            assert h["relevance"] == pytest.approx(f * scale + (n_low - i_low * scale), rel=1e-9)
        else:
            assert h["relevance"] == pytest.approx(f, rel=1e-12)


def test_44_rerank_count_zero_is_first_phase(world):
    out = ok(world, None, nn_body(world, "ranking", **{"ranking.globalPhase.rerankCount": 0}))
    ref = ok(world, None, nn_body(world, "retrieval"))
    assert [(h["id"], h["relevance"]) for h in out["root"]["children"]] == [
        (h["id"], h["relevance"]) for h in ref["root"]["children"]
    ]


def test_45_global_drop_limit(world):
    base = ok(world, None, nn_body(world, "ranking"))
    scores = [h["relevance"] for h in base["root"]["children"]]
    limit = (scores[3] + scores[4]) / 2
    out = ok(
        world, None, nn_body(world, "ranking", **{"ranking.globalPhase.rankScoreDropLimit": limit})
    )
    dropped_total = base["root"]["fields"]["totalCount"] - out["root"]["fields"]["totalCount"]
    assert ids(out)[:4] == ids(base)[:4] and all(
        h["relevance"] > limit for h in out["root"]["children"]
    )
    # only the fetched window (max(offset + hits, R) hits of the matched) takes part; 4 of it
    # stay above
    rerank = world[0].schemas["product"].rank_profiles["ranking"].global_phase.rerank_count
    window = min(rerank, base["root"]["fields"]["totalCount"])
    assert len(ids(out)) == 4 and dropped_total == window - 4


def test_first_phase_drop_limit_reduces_total_count(world):
    all_ = ok(world, {"yql": "select * from product where true", "hits": 0})["root"]["fields"][
        "totalCount"
    ]
    out = ok(
        world,
        {"yql": "select * from product where true", "hits": 0, "ranking.rankScoreDropLimit": 100},
    )
    expected = sum(1 for f in world[2].values() if np.float32(f["popularity"]) > 100)
    assert out["root"]["fields"]["totalCount"] == expected < all_


SECOND_PHASE_PROFILE = """
    rank-profile second {
        first-phase { expression: attribute(popularity) }
        second-phase {
            expression: attribute(price)
            rerank-count: 10
            rank-score-drop-limit: %s
        }
    }
}
"""


def _second_phase_engine(tmp_path, limit: float):
    pkg = tmp_path / "pkg"
    shutil.copytree(PACKAGE, pkg)
    sd = pkg / "schemas" / "product.sd"
    text = sd.read_text()
    sd.write_text(text[: text.rstrip().rindex("}")] + SECOND_PHASE_PROFILE % limit)
    return make_engine(200, pkg)


@pytest.mark.parametrize("cut", [5, 15])
def test_second_phase_drop_limit_applies_to_every_hit_and_reduces_total_count(tmp_path, cut):
    # proton (match_thread.cpp, HitCollector::get_result_set with a second-phase drop limit):
    # every hit it keeps scores for is judged on its final score - second-phase for the
    # reranked, rescaled first-phase for the rest - and the result set, hence totalCount,
    # holds only the survivors.
    _engine, _store, docs = make_engine(200)
    pop = np.array([np.float32(f["popularity"]) for _, f in docs], dtype=np.float64)
    price = np.array([np.float32(f["price"]) for _, f in docs], dtype=np.float64)
    order = np.argsort(-pop)
    top, rest = order[:10], order[10:]
    final = pop.copy()
    final[top] = price[top]
    f_low, f_high, s_low, s_high = (
        pop[top].min(),
        pop[top].max(),
        price[top].min(),
        price[top].max(),
    )
    if f_low > s_low:
        scale = max(s_high - s_low, 1) / max(f_high - f_low, 1)
        final[rest] = pop[rest] * scale + (s_low - f_low * scale)
    ranked = np.argsort(-final)
    limit = float((final[ranked[cut - 1]] + final[ranked[cut]]) / 2)
    # cut 5 drops reranked hits; cut 15 keeps some rescaled first-phase hits and drops the rest
    assert (cut < 10) == any(r in set(top) for r in ranked[cut:])
    engine, _store, _docs = _second_phase_engine(tmp_path, limit)
    status, out = engine.search(
        {"yql": "select * from product where true", "ranking.profile": "second", "hits": "20"},
        None,
    )
    assert status == 200, out
    assert out["root"]["fields"]["totalCount"] == cut
    assert ids(out) == [docs[i][0] for i in ranked[:cut]]
    got = [h["relevance"] for h in out["root"]["children"]]
    assert got == pytest.approx(final[ranked[:cut]].tolist(), rel=1e-9)


def test_46_match_and_summary_features(world):
    hit = ok(world, None, nn_body(world, "ranking"))["root"]["children"][0]
    assert list(hit["fields"]["matchfeatures"]) == ["ann", "fresh", "pop"]
    assert "summaryfeatures" not in hit["fields"]
    body = nn_body(world, "features")
    fhit = ok(world, None, body)["root"]["children"][0]
    assert fhit["id"] == hit["id"] and fhit["relevance"] == hit["relevance"]
    mf = fhit["fields"]["matchfeatures"]
    assert list(mf) == [
        "ann",
        "fresh",
        "pop",
        "attribute(price)",
        "attribute(margin)",
        "attribute(popularity)",
        "attribute(created_at)",
    ]
    doc = world[2][fhit["fields"]["product_id"]]
    assert mf["attribute(margin)"] == float(np.float32(doc["margin"]))
    sf = fhit["fields"]["summaryfeatures"]
    assert (
        set(sf) == {"model_score", "vespa.summaryFeatures.cached"}
        and sf["vespa.summaryFeatures.cached"] == 0.0
    )
    fresh = max(1 - (NOW - doc["created_at"]) / MAX_AGE, 0.0)
    assert sf["model_score"] + 0.05 * fresh == pytest.approx(fhit["relevance"], rel=1e-9)


def test_47_history_encoder_runs_once_per_query(world):
    out = ok(world, None, nn_body(world, "ranking", **{"trace.level": 1}))
    message = out["trace"]["children"][0]["message"]
    rerank = world[0].schemas["product"].rank_profiles["ranking"].global_phase.rerank_count
    window = min(rerank, out["root"]["fields"]["totalCount"])
    assert "history_encoder=1," in message and f"ranker={window}" in message


def test_48_field_selection_summary_and_timing(world):
    body = nn_body(world, "retrieval", **{"presentation.timing": True})
    body["yql"] = body["yql"].replace("select *", "select product_id, title")
    out = ok(world, None, body)
    hit = out["root"]["children"][0]
    assert set(hit["fields"]) == {"product_id", "title", "matchfeatures"}
    assert hit["id"].startswith("index:shop/0/") and len(hit["id"]) == len("index:shop/0/") + 24
    assert set(out["timing"]) == {"querytime", "summaryfetchtime", "searchtime"}
    full = ok(world, None, nn_body(world))["root"]["children"][0]
    assert full["id"] == "id:product:product::" + full["fields"]["product_id"]
    assert full["fields"]["sddocname"] == "product" and full["fields"]["documentid"] == full["id"]
    # the default summary holds the fields with `summary` in their indexing, nothing else
    product = world[0].schemas["product"]
    assert "embedding" not in full["fields"]
    assert ("margin" in full["fields"]) == product.fields["margin"].is_summary
    assert full["fields"]["price"] == float(
        np.float32(world[2][full["fields"]["product_id"]]["price"])
    )
    assert full["source"] == "shop"


def test_49_timeout(world):
    status, err = error(world, None, nn_body(world, "ranking", timeout="1ms"))
    assert status == 504 and err["code"] == 12


# -- lexical (50-55) ------------------------------------------------------------


@pytest.fixture
def small(tmp_path):
    engine, store, docs = make_engine(40)
    store.put(
        "product",
        "T1",
        {
            "product_id": "T1",
            "title": "lavender face serum",
            "popularity": 1.0,
            "created_at": NOW,
            "price": 9.0,
            "in_stock": True,
        },
    )
    store.put(
        "product",
        "T2",
        {
            "product_id": "T2",
            "title": "Lavenders soap",
            "popularity": 2.0,
            "created_at": NOW,
            "price": 9.0,
            "in_stock": True,
        },
    )
    store.put(
        "product",
        "T3",
        {
            "product_id": "T3",
            "title": "night serum",
            "description": "for the face",
            "popularity": 3.0,
            "created_at": NOW,
            "price": 9.0,
            "in_stock": True,
        },
    )
    return engine, store, {d: f for d, f in docs}


def test_50_text_contains_case_folded_no_stemming(small):
    got = set(ids(ok(small, {"yql": 'select * from product where title contains "Lavender"'})))
    assert "T1" in got and "T2" not in got
    phrase = set(
        ids(
            ok(
                small,
                {"yql": 'select * from product where title contains "FACE serum"', "hits": 50},
            )
        )
    )
    expected = {
        p
        for p, f in small[1].iter_documents("product")
        if " face serum" in " " + f.get("title", "").lower()
    }
    assert "T1" in phrase and phrase == expected


def test_51_user_query_types(small):
    yql = "select * from product where userQuery()"
    both = set(ids(ok(small, {"yql": yql, "query": "face serum", "type": "all", "hits": 100})))
    either = set(ids(ok(small, {"yql": yql, "query": "face serum", "type": "any", "hits": 100})))
    assert {"T1", "T3"} <= both  # T3 has serum in title, face in description (default fieldset)
    assert both <= either and "T2" not in either
    for pid in either:
        doc = small[1].get("product", pid)
        text = (doc.get("title", "") + " " + doc.get("description", "")).lower().split()
        assert "face" in text or "serum" in text


def _bm25_reference(store, field, terms, pid):
    docs = list(store.iter_documents("product"))
    n = len(docs)
    toks = {d: f.get(field, "").lower().split() for d, f in docs}
    lengths = [len(t) for t in toks.values() if t]
    avgdl = sum(lengths) / len(lengths)
    score = 0.0
    for t in terms:
        n_t = sum(1 for tk in toks.values() if t in tk)
        idf = np.log(1 + (n - n_t + 0.5) / (n_t + 0.5))
        tf = toks[pid].count(t)
        score += idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * len(toks[pid]) / avgdl))
    return score


def test_52_bm25_matches_reference(small, tmp_path):
    _engine, store, _ = small
    out = ok(
        small,
        {
            "yql": 'select * from product where title contains "serum" or title contains "face"',
            "ranking.profile": "text",
            "hits": 100,
        },
    )
    assert len(out["root"]["children"]) >= 2
    for h in out["root"]["children"]:
        pid = h["fields"]["product_id"]
        ref = _bm25_reference(store, "title", ["serum", "face"], pid)
        assert h["fields"]["matchfeatures"]["bm25(title)"] == pytest.approx(ref, rel=1e-9)
        assert h["fields"]["matchfeatures"]["bm25(description)"] == 0.0  # no term searched there
        assert h["relevance"] == pytest.approx(ref, rel=1e-9)


def test_53_user_query_without_query(small):
    # Vespa: no `query` parses to a NullItem; QueryCanonicalizer leaves an empty tree and
    # GroupingExecutor answers ErrorMessage.createIllegalQuery("No query") (code 3, HTTP 400)
    for params in ({}, {"query": "  "}):
        status, err = error(small, {"yql": "select * from product where userQuery()", **params})
        assert status == 400
        assert err == {"code": 3, "summary": "Illegal query", "message": "No query"}


def test_empty_user_query_is_removed_from_its_parent(small):
    # the NullItem is removed from AND/OR/RANK, so the rest of the tree alone decides matching
    yql = "select * from product where userQuery() and price < 10"
    got = set(ids(ok(small, {"yql": yql, "hits": 100})))
    expected = {p for p, f in small[1].iter_documents("product") if np.float32(f["price"]) < 10}
    assert got == expected and {"T1", "T2"} <= got
    ranked = "select * from product where rank(userQuery(), price < 10)"
    assert set(ids(ok(small, {"yql": ranked, "hits": 100}))) == expected


@pytest.mark.parametrize(
    "text", ["face -serum", "+face serum", '"face serum"', "title:face", "face*", "t-shirt", "a.b"]
)
def test_simple_query_syntax_is_refused(small, text):
    # Vespa's simple query language gives these characters meaning (exclude, require, phrase,
    # field, prefix, compound words); the engine refuses instead of reading them as words
    for yql, params in (
        ("select * from product where userQuery()", {"query": text, "type": "all"}),
        ("select * from product where userInput(@q)", {"q": text}),
    ):
        status, err = error(small, {"yql": yql, **params})
        assert status == 400 and err["code"] == 4
        assert err["message"].startswith("Unsupported by local engine: the character")


def test_54_hybrid_text_or_nn(small):
    q = small[2]["P3"]["embedding"].tolist()
    body = {
        "yql": "select * from product where userQuery() or "
        "({targetHits:5}nearestNeighbor(embedding, q_user))",
        "query": "serum",
        "input.query(q_user)": q,
        "ranking.profile": "hybrid",
        "hits": 100,
    }
    hits = ok(small, None, body)["root"]["children"]
    by_id = {h["fields"]["product_id"]: h["fields"]["matchfeatures"] for h in hits}
    assert {"T1", "T3"} <= set(by_id) and "P3" in by_id
    assert by_id["T1"]["closeness(field,embedding)"] == 0.0  # T1 has no embedding
    text_only = [p for p, mf in by_id.items() if mf["bm25(title)"] > 0 and p.startswith("P")]
    for p in text_only:
        assert by_id[p]["closeness(field,embedding)"] > 0
    assert by_id["P3"]["bm25(title)"] == 0 or "serum" in small[2]["P3"]["title"]


def test_55_put_changes_text_visibility(small):
    _engine, store, _ = small
    yql = 'select * from product where title contains "%s"'
    assert "T1" in ids(ok(small, {"yql": yql % "lavender"}))
    store.put(
        "product",
        "T1",
        {
            "product_id": "T1",
            "title": "rose oil",
            "popularity": 1.0,
            "created_at": NOW,
            "price": 9.0,
            "in_stock": True,
        },
    )
    assert "T1" not in ids(ok(small, {"yql": yql % "lavender"}))
    assert ids(ok(small, {"yql": yql % "rose"})) == ["T1"]
    store.remove("product", "T1")
    assert ids(ok(small, {"yql": yql % "rose"})) == []
