"""Ranking expressions (§6.4): parsing, scalar math, tensor functions, features, once-per-query
caching; every number is checked against a numpy reference."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from vespa_app.engine.schema import parse_schema, parse_tensor_type
from vespa_app.engine.search.expression import ExpressionError, parse_expression
from vespa_app.engine.search.index import Segment
from vespa_app.engine.search.ranking import Ctx, OnnxRunner, ProfileCompiler, QueryState
from vespa_app.engine.search.tensors import Tensor, parse_tensor_literal

SD = """schema t {
    document t {
        field n type int { indexing: attribute }
        field price type float { indexing: attribute }
        field created type long { indexing: attribute }
        field v type tensor<float>(x[3]) { indexing: attribute }
        field m type tensor<float>(k{}) { indexing: attribute }
    }
    rank-profile p {
        inputs {
            query(q) tensor<float>(x[3])
            query(w) double: 2
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
        first-phase { expression: dot }
    }
}
"""
NOW = 10_000.0


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d: Path = tmp_path_factory.mktemp("expr")
    (d / "t.sd").write_text(SD)
    schema = parse_schema(d / "t.sd", d)
    seg = Segment(schema)
    seg.put(
        "d0",
        {
            "n": 7,
            "price": float(np.float32(19.99)),
            "created": 9_500,
            "v": np.array([1.0, 2.0, 3.0], np.float32),
            "m": {"a": 1.5, "b": -2.0},
        },
    )
    compiler = ProfileCompiler(schema, schema.rank_profiles["p"], OnnxRunner())
    return schema, seg, compiler


def evaluate(env, text: str, q=(0.5, -1.0, 2.0)):
    _schema, seg, compiler = env
    qt = parse_tensor_type("tensor<float>(x[3])")
    qs = QueryState(
        segment=seg, inputs={"q": Tensor.from_dense(qt, np.array(q)), "w": 2.0}, now=NOW
    )
    fn = compiler.compile_text(text)
    return fn(Ctx(qs).at(0, seg.row_of["d0"])), qs


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 + 2 * 3 - 4 / 8", 1 + 2 * 3 - 4 / 8),
        ("2 ^ 3 ^ 2", 2.0**9),
        ("-2 ^ 2", 4.0),
        ("7 % 3", 1.0),
        ("(1 < 2) + (2 <= 2) + (3 > 4) + (1 == 1) + (1 != 1)", 3.0),
        ("1 && 0 || 1", 1.0),
        ("!0 + !3", 1.0),
        ("if(attribute(n) > 5, 10, 20)", 10.0),
        ("exp(1) + log(2) + log10(1000) + sqrt(16) + abs(-3)", math.e + math.log(2) + 3 + 4 + 3),
        ("pow(2, 10) + min(3, 4) + max(3, 4)", 1024 + 3 + 4),
        ("sigmoid(0) + tanh(0) + cos(0) + acos(1)", 1.5),
        ("isNan(0/0) + isNan(1)", 1.0),
        ("attribute(n) * query(w)", 14.0),
        ("attribute(price)", float(np.float32(19.99))),
        ("twice(attribute(n)) + twice(1)", 16.0),
        ("constant(s) + sum(constant(c))", 5.0),
        ("now", NOW),
        ("age(created)", 500.0),
        ("freshness(created)", 0.5),
        ("closeness(field, v) + distance(field, v)", 1.7976931348623157e308),
    ],
)
def test_scalar_expressions(env, text, expected):
    value, _ = evaluate(env, text)
    assert value == pytest.approx(expected, rel=1e-12)


def test_tensor_functions_match_numpy(env):
    v = np.array([1.0, 2.0, 3.0])
    q = np.array([0.5, -1.0, 2.0], np.float32).astype(np.float64)
    value, _ = evaluate(env, "sum(attribute(v) * query(q))")
    assert value == pytest.approx(float(v @ q))
    value, _ = evaluate(env, "reduce(attribute(v) * query(q), max, x)")
    assert value == pytest.approx(float((v * q).max()))
    t, _ = evaluate(env, "rename(attribute(v), x, d1) * tensor<float>(d0[1]):[1]")
    assert t.type.spec == "tensor<float>(d0[1],d1[3])" and t.dense.tolist() == [[1.0, 2.0, 3.0]]
    t, _ = evaluate(env, "map(attribute(v), f(x)(x * x + 1))")
    assert t.dense.tolist() == [2.0, 5.0, 10.0]
    t, _ = evaluate(env, "join(attribute(v), query(q), f(a,b)(a - b))")
    np.testing.assert_allclose(t.dense, v - q)
    value, _ = evaluate(env, "attribute(v){x:2} + attribute(v){x:(1+0)}")
    assert value == 5.0
    value, _ = evaluate(env, "cosine_similarity(attribute(v), query(q), x)")
    assert value == pytest.approx(float(v @ q / np.linalg.norm(v) / np.linalg.norm(q)), rel=1e-6)
    value, _ = evaluate(env, "euclidean_distance(attribute(v), query(q), x)")
    assert value == pytest.approx(float(np.linalg.norm(v - q)), rel=1e-6)
    t, _ = evaluate(env, "l2_normalize(attribute(v), x)")
    np.testing.assert_allclose(t.dense, v / np.linalg.norm(v), rtol=1e-6)
    t, _ = evaluate(env, "concat(attribute(v), query(q), x)")
    assert t.type.spec == "tensor<float>(x[6])"
    t, _ = evaluate(env, "cell_cast(attribute(v), double)")
    assert t.type.spec == "tensor(x[3])"
    value, _ = evaluate(env, "sum(attribute(m)) + attribute(m){k:b}")
    assert value == -2.5
    t, _ = evaluate(env, "tensor(x[2],y[2]):[[1,2],[3,4]]")
    assert t.dense.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    value, _ = evaluate(env, 'sum(tensor<float>(k{}):{a:1, "b/c":2.5} * attribute(m))')
    assert value == 1.5


def test_float_cells_stay_float32(env):
    t, _ = evaluate(env, "attribute(v) * 0.1")
    assert t.type.cell_type == "float" and t.dense.dtype == np.float32
    assert t.dense[0] == np.float32(np.float32(1.0) * 0.1)


def test_query_only_subexpressions_are_evaluated_once(env):
    _schema, _seg, compiler = env
    _, qs = evaluate(env, "qnorm")
    fn = compiler.compile_text("qnorm * attribute(n)")
    ctx = Ctx(qs)
    before = len(qs.qcache)
    for _ in range(3):
        fn(ctx.at(0, 0))
    assert len(qs.qcache) > before  # the query-only part was cached once, then reused


@pytest.mark.parametrize(
    "text",
    ["nativeRank", "fieldMatch(title)", "random", "1 +", "sum(", "unknownfn", "attribute(nope)"],
)
def test_bad_or_unsupported_expressions_raise(env, text):
    with pytest.raises(ExpressionError):
        evaluate(env, text)


def test_tensor_literal_forms():
    tt = parse_tensor_type("tensor<float>(d0[1],d1[3])")
    assert parse_tensor_literal("[[3, 17, 0]]", tt).dense.tolist() == [[3.0, 17.0, 0.0]]
    assert parse_tensor_literal("[3, 17, 0]", tt).dense.shape == (1, 3)
    mt = parse_tensor_type("tensor<float>(category{})")
    assert parse_tensor_literal('{shoes: 0.5, "home/kitchen": 0.25}', mt).cells == {
        ("shoes",): 0.5,
        ("home/kitchen",): 0.25,
    }
    assert parse_tensor_literal("{{category:shoes}:0.5}", mt).cells == {("shoes",): 0.5}
    explicit = parse_tensor_literal("tensor<float>(x[3]):[1,2,3]", None)
    assert explicit.type.spec == "tensor<float>(x[3])"
    with pytest.raises(ValueError):
        parse_tensor_literal("[1, 2]", parse_tensor_type("tensor<float>(x[3])"))
    assert parse_expression("onnx(m).out").canonical == "onnx(m).out"
