"""Batch evaluation (vespa_app/engine/search/batch.py) against the per-hit reference.

Every expression is compiled both ways and evaluated over the same hits; the batch functions
are called directly, so a silent fallback to the per-hit path cannot hide a difference. The
served package is compared end to end too (responses with batch evaluation on and off), and a
model with a symbolic batch axis is checked to run once per phase."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from benchmarks.vespa_fixtures import NOW
from tests.vespa_app.system.support import make_engine
from vespa_app.engine.schema import parse_schema, parse_tensor_type
from vespa_app.engine.search.batch import BT, Batch, BatchCompiler, per_hit, scores
from vespa_app.engine.search.index import Segment
from vespa_app.engine.search.ranking import Ctx, OnnxRunner, ProfileCompiler, QueryState
from vespa_app.engine.search.tensors import Tensor

SD = """schema t {
    document t {
        field n type int { indexing: attribute }
        field price type float { indexing: attribute }
        field created type long { indexing: attribute }
        field v type tensor<float>(x[3]) { indexing: attribute }
        field w type tensor<bfloat16>(x[3]) { indexing: attribute }
        field m type tensor<float>(k{}) { indexing: attribute }
    }
    onnx-model scorer {
        file: models/scorer.onnx
        input "user_state": query(u)
        input "cand": cand
        output "score": score
    }
    onnx-model fixed {
        file: models/fixed.onnx
        input "user_state": query(u)
        input "cand": cand
        output "score": score
    }
    onnx-model pooled {
        file: models/pooled.onnx
        input "user_state": query(u)
        input "cand": cand
        output "score": score
    }
    rank-profile p {
        inputs {
            query(q) tensor<float>(x[3])
            query(u) tensor<float>(d0[1],d1[2])
            query(w) double: 2
            query(cw) tensor<float>(k{})
        }
        constants {
            c tensor<float>(x[3]): [0.5, 1.5, -1]
            s double: 4
        }
        rank-properties {
            freshness(created).maxAge: 1000
        }
        function twice(a) { expression: a * 2 }
        function dot() { expression: sum(attribute(v) * query(q)) }
        function qnorm() { expression: sqrt(sum(query(q) * query(q))) }
        function cand() { expression: rename(attribute(v), x, d1) * tensor<float>(d0[1]):[1] }
        first-phase { expression: dot }
    }
}
"""

EXPRESSIONS = [
    "1 + attribute(n) * 3 - attribute(price) / 8",
    "attribute(price) / (attribute(n) - 7)",  # 0 / 0 and x / 0 per hit
    "attribute(n) % 3 + attribute(n) ^ 0.5",
    "(attribute(n) < 5) + (attribute(n) >= 7) + (attribute(price) == 1) + !attribute(n)",
    "attribute(n) > 3 && attribute(price) < 30 || attribute(n) == 0",
    "if(attribute(n) > 5, attribute(price), -attribute(price))",
    "exp(attribute(price) / 100) + log(attribute(price)) + sqrt(attribute(n)) + abs(-attribute(n))",
    "pow(attribute(n), 2) + min(attribute(n), 4) + max(attribute(price), 9) + erf(attribute(n))",
    "sigmoid(attribute(price)) + tanh(attribute(n)) + relu(attribute(n) - 5) + isNan(attribute(n))",
    "attribute(n) * query(w) + constant(s) + sum(constant(c)) + now",
    "twice(attribute(n)) + twice(1) + qnorm * attribute(n)",
    "age(created) + freshness(created)",
    "closeness(field, v) + distance(field, v)",
    "dot",
    "sum(attribute(v) * query(q)) + reduce(attribute(v) * query(q), max, x)",
    "reduce(attribute(v), count) + reduce(attribute(v), avg, x) + reduce(attribute(v), prod)",
    "sum(map(attribute(v), f(x)(x * x + 1)))",
    "sum(join(attribute(v), query(q), f(a,b)(a - b)))",
    "sum(attribute(v) * constant(c)) + sum(attribute(w) * 0.1)",
    "attribute(v){x:2} + attribute(v){x:0} + attribute(v){x:7}",
    "sum(cell_cast(attribute(v), double) * 1.1)",
    "sum(rename(attribute(v), x, y) * attribute(v))",
    "sum(onnx(scorer).score)",
    "sum(onnx(fixed).score)",  # a fixed batch axis of 1: run hit by hit
    "onnx(scorer).score{d0:0, d1:0} * 2",
    "sum(query(cw) * attribute(m))",  # mapped: only labels both have
    "sum(attribute(m) * query(cw)) + reduce(attribute(m), max) + reduce(attribute(m), count)",
    "reduce(attribute(m) * 2, min, k) + reduce(attribute(m), avg) + reduce(attribute(m), prod)",
    "sum(map(attribute(m), f(x)(x * x)) - 1) + sum(attribute(m) + attribute(n))",
]

TENSORS = [
    "attribute(v) * 0.1",
    "cand",
    "attribute(w) + attribute(v)",
    "onnx(scorer).score",
    # the ranker-with-features candidate: the embedding and per-hit scalars along d1
    "concat(concat(rename(attribute(v), x, d1), attribute(price) / 100, d1), freshness(created),"
    " d1) * tensor<float>(d0[1]):[1]",
    "concat(attribute(n), 2, x)",
    "concat(attribute(v), query(q), x)",
    "concat(query(w), attribute(v), x)",
]
MAPPED = ["attribute(m) * query(cw)", "attribute(m) * 0.5", "query(cw) - attribute(m)"]


def _model(path: Path, batch: object, pooled: bool = False) -> None:
    """score = cand @ a + user_state @ b; `pooled` sums over the batch (not row-wise)."""
    a = helper.make_tensor("a", TensorProto.FLOAT, [3, 1], [0.5, -1.0, 2.0])
    b = helper.make_tensor("b", TensorProto.FLOAT, [2, 1], [1.5, 0.25])
    nodes = [
        helper.make_node("MatMul", ["cand", "a"], ["ca"]),
        helper.make_node("MatMul", ["user_state", "b"], ["ub"]),
        helper.make_node("Add", ["ca", "ub"], ["s"] if pooled else ["score"]),
    ]
    if pooled:
        axes = helper.make_tensor("axes", TensorProto.INT64, [1], [0])
        nodes.append(helper.make_node("ReduceSum", ["s", "axes"], ["score"], keepdims=1))
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("user_state", TensorProto.FLOAT, [batch, 2]),
            helper.make_tensor_value_info("cand", TensorProto.FLOAT, [batch, 3]),
        ],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 1])],
        initializer=[a, b] + ([axes] if pooled else []),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d: Path = tmp_path_factory.mktemp("batch")
    (d / "models").mkdir()
    _model(d / "models" / "scorer.onnx", "batch")
    _model(d / "models" / "fixed.onnx", 1)
    _model(d / "models" / "pooled.onnx", "batch", pooled=True)
    (d / "t.sd").write_text(SD)
    schema = parse_schema(d / "t.sd", d)
    seg = Segment(schema)
    rng = np.random.default_rng(3)
    for i in range(40):
        fields = {
            "n": i % 11,
            "price": float(np.float32(rng.uniform(0, 50))),
            "created": 9_000 + 50 * i,
        }
        if i % 5:  # some documents have no cells, others a few of the labels
            labels = ["a", "b", "c", "d:x"][: 1 + i % 4]
            fields["m"] = {k: float(np.float32(rng.normal())) for k in labels}
        if i % 7:  # every 7th document has no vectors: zeros per Vespa
            fields["v"] = rng.normal(size=3).astype(np.float32)
            fields["w"] = rng.normal(size=3).astype(np.float32)
        if i == 5:
            fields["price"] = None  # a missing attribute reads NaN
        seg.put(f"d{i}", fields)
    compiler = ProfileCompiler(schema, schema.rank_profiles["p"], OnnxRunner())
    return seg, compiler, BatchCompiler(compiler)


def _state(seg, n_hits: int) -> tuple[QueryState, np.ndarray, np.ndarray]:
    qt = parse_tensor_type("tensor<float>(x[3])")
    ut = parse_tensor_type("tensor<float>(d0[1],d1[2])")
    qs = QueryState(
        segment=seg,
        inputs={
            "q": Tensor.from_dense(qt, np.array([0.5, -1.0, 2.0])),
            "u": Tensor.from_dense(ut, np.array([[0.3, -0.7]])),
            "w": 2.0,
            "cw": Tensor.from_cells(
                parse_tensor_type("tensor<float>(k{})"), {("a",): 0.5, ("d:x",): 2.0, ("z",): 9}
            ),
        },
        now=10_000.0,
    )
    rows = np.arange(seg.n_rows)[::-1][:n_hits].copy()  # not in row order
    pos = np.arange(len(rows))
    qs.closeness[("field", "v")] = np.linspace(0.1, 0.9, len(rows))
    qs.distance[("field", "v")] = np.linspace(5.0, 1.0, len(rows))
    return qs, rows, pos


def _both(env, text: str, n_hits: int = 40):
    seg, compiler, bc = env
    qs, rows, pos = _state(seg, n_hits)
    fn = compiler.compile_text(text)
    bfn = bc.compile_text(text)
    assert bfn is not None, f"{text} is not batchable"
    ctx = Ctx(qs)
    reference = [fn(ctx.at(int(p), int(rows[p]))) for p in pos]
    batched = bfn(Batch(qs, Ctx(qs), pos, rows[pos]))
    return reference, batched, qs


def _close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == pytest.approx(b, rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("text", EXPRESSIONS)
def test_scalar_expressions_equal_the_per_hit_path(env, text):
    reference, batched, _ = _both(env, text)
    got = scores(batched, len(reference))
    for i, (want, have) in enumerate(zip(reference, got, strict=True)):
        assert _close(float(want), float(have)), f"hit {i}: {want} != {have}"


@pytest.mark.parametrize("text", TENSORS)
def test_tensor_expressions_equal_the_per_hit_path(env, text):
    reference, batched, _ = _both(env, text)
    assert isinstance(batched, BT)
    for i, want in enumerate(reference):
        have = per_hit(batched, i)
        assert have.type == want.type
        assert have.dense.dtype == want.dense.dtype
        np.testing.assert_allclose(have.dense, want.dense, rtol=1e-6)


@pytest.mark.parametrize("text", MAPPED)
def test_mapped_tensor_expressions_equal_the_per_hit_path(env, text):
    reference, batched, _ = _both(env, text)
    for i, want in enumerate(reference):
        have = per_hit(batched, i)
        assert have.type == want.type
        assert have.cells.keys() == want.cells.keys()
        for key, value in want.cells.items():
            assert have.cells[key] == pytest.approx(value, rel=1e-6)


def test_onnx_with_a_batch_axis_runs_once_per_phase(env):
    seg, compiler, _bc = env
    qs, rows, pos = _state(seg, 40)
    runs = []
    sess = compiler.onnx.session(compiler.profile.onnx_models["scorer"])
    real = sess.run

    def counting(*args, **kwargs):
        runs.append(1)
        return real(*args, **kwargs)

    sess.run = counting
    try:
        bfn = BatchCompiler(compiler).compile_text("sum(onnx(scorer).score)")
        bfn(Batch(qs, Ctx(qs), pos, rows[pos]))
    finally:
        del sess.run
    assert len(runs) == 1
    assert qs.onnx_runs["scorer"] == 40  # evaluations are still counted per hit


def test_a_model_that_mixes_the_batch_falls_back_to_per_hit(env):
    """A symbolic first axis that the model reduces over is not a batch axis: the executor
    notices the output's shape and evaluates hit by hit, as Vespa does."""
    from vespa_app.engine.search.batch import Fallback
    from vespa_app.engine.search.executor import Deadline, _evaluate

    seg, compiler, bc = env
    text = "sum(onnx(pooled).score) + attribute(n)"
    qs, rows, pos = _state(seg, 40)
    with pytest.raises(Fallback):
        bc.compile_text(text)(Batch(qs, Ctx(qs), pos, rows[pos]))
    fn = compiler.compile_text(text)
    got = _evaluate(fn, qs, rows, pos, Deadline(10.0), bc.compile_text(text))
    ctx = Ctx(qs)
    want = [fn(ctx.at(int(p), int(rows[p]))) for p in pos]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_computed_slice_labels_stay_per_hit(env):
    _seg, _compiler, bc = env
    assert bc.compile_text("sum(attribute(v)){x:(attribute(n) - 1)}") is None


def test_zero_hits_fall_back_cleanly(env):
    seg, _compiler, bc = env
    qs, rows, _ = _state(seg, 40)
    empty = np.arange(0)
    out = bc.compile_text("attribute(n) + 1")(Batch(qs, Ctx(qs), empty, rows[empty]))
    assert scores(out, 0).shape == (0,)


# -- the served package, end to end -------------------------------------------------------------


@pytest.fixture(scope="module")
def world():
    engine, _store, docs = make_engine(2000)
    return engine, {d: f for d, f in docs}


def _per_hit_only(engine):
    saved = {name: dict(profiles) for name, profiles in engine.compiled.items()}
    for profiles in engine.compiled.values():
        for pname, cp in profiles.items():
            profiles[pname] = dataclasses.replace(
                cp,
                first_phase_batch=None,
                second_phase_batch=None,
                global_phase_batch=None,
                match_features_batch=None,
                summary_features_batch=None,
            )
    return saved


def _body(world, profile: str, pid: str = "P7", **extra) -> dict:
    body = {
        "yql": "select * from product where ({targetHits:300}nearestNeighbor(embedding, q_user)) "
        "and in_stock = true",
        "input.query(q_user)": world[1][pid]["embedding"].tolist(),
        "ranking.profile": profile,
        "ranking.freshness": str(NOW),
        "hits": 100,
        "timeout": "30s",  # the per-hit reference path is slow on a loaded machine
    }
    if profile in ("ranking", "features", "ranking_features"):
        # The package's ranking profile reads 50 events (spec section 9), ranking_features 100.
        hist = [[0.0] * (100 if profile == "ranking_features" else 50)]
        hist[0][:4] = [11, 250, 3, 1999]
        body["input.query(hist)"] = hist
        body["input.query(ctx)"] = [[(i - 8) / 10 for i in range(16)]]
    body.update(extra)
    return body


@pytest.mark.parametrize(
    ("profile", "pid"),
    [
        ("retrieval", "P7"),
        ("ranking", "P7"),
        ("ranking", "P1234"),
        ("features", "P42"),
        ("ranking_features", "P7"),
    ],
)
def test_served_package_responses_equal_the_per_hit_path(world, profile, pid):
    engine = world[0]
    if profile not in engine.compiled["product"]:
        pytest.skip(f"the package has no rank profile '{profile}'")
    assert engine.compiled["product"][profile].first_phase_batch is not None
    body = _body(world, profile, pid)
    status, batched = engine.search({}, body)
    assert status == 200, batched
    saved = _per_hit_only(engine)
    try:
        status, reference = engine.search({}, body)
    finally:
        engine.compiled = saved
    assert status == 200, reference
    got, want = batched["root"]["children"], reference["root"]["children"]
    assert [h["id"] for h in got] == [h["id"] for h in want]
    for g, w in zip(got, want, strict=True):
        assert g["relevance"] == pytest.approx(w["relevance"], rel=1e-6)
        for key in ("matchfeatures", "summaryfeatures"):
            gf, wf = g["fields"].get(key, {}), w["fields"].get(key, {})
            assert gf.keys() == wf.keys()
            for name in gf:
                assert gf[name] == pytest.approx(wf[name], rel=1e-6), name


def test_top_order_equals_the_full_order_with_ties():
    from vespa_app.engine.search.executor import _order, _top_order

    rng = np.random.default_rng(9)
    scores = np.round(rng.normal(size=5000), 1)  # many ties, broken by row
    rows = rng.permutation(5000)
    for m in (1, 10, 37, 400, 1300, 5000):
        np.testing.assert_array_equal(_top_order(scores, rows, m), _order(scores, rows)[:m])
    scores[7] = np.nan
    np.testing.assert_array_equal(_top_order(scores, rows, 10), _order(scores, rows)[:10])


def test_chunked_batches_equal_the_per_hit_path(env, monkeypatch):
    from vespa_app.engine.search import executor

    monkeypatch.setattr(executor, "BATCH_CHUNK", 7)
    seg, compiler, bc = env
    text = "sum(onnx(scorer).score) + freshness(created) + sum(query(cw) * attribute(m))"
    qs, rows, pos = _state(seg, 40)
    fn = compiler.compile_text(text)
    got = executor._evaluate(fn, qs, rows, pos, executor.Deadline(10.0), bc.compile_text(text))
    assert qs.onnx_runs["scorer"] == 40  # six chunks, every hit counted once
    ctx = Ctx(qs)
    want = [fn(ctx.at(int(p), int(rows[p]))) for p in pos]
    np.testing.assert_allclose(got, want, rtol=1e-6)
