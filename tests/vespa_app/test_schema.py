"""The .sd parser: the project package, inheritance, and refusal of constructs outside §7."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from vespa_app import build_baseline_models as bbm
from vespa_app.engine.schema import PackageError, load_schemas, parse_schema, parse_tensor_type

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "vespa_app" / "package"


@pytest.fixture(scope="module")
def schemas():
    return load_schemas(PACKAGE)


def test_package_schemas_parse(schemas):
    assert set(schemas) == {"product", "user", "seller"}
    product = schemas["product"]
    emb = product.fields["embedding"]
    assert emb.type.tensor.spec == f"tensor<float>(x[{bbm.EMBEDDING_DIM}])"
    assert emb.distance_metric == "prenormalized-angular"
    assert emb.hnsw.max_links_per_node == 16 and emb.hnsw.neighbors_to_explore_at_insert == 200
    assert product.fields["product_id"].match == "word" and product.fields["product_id"].rank_filter
    assert product.fields["category_path"].type.spec == "array<string>"
    assert product.fields["title"].is_text_index and product.fields["title"].stemming == "none"
    assert product.fields["margin"].is_summary  # the re-ranker's margin rule reads it
    assert product.fields["consumable"].type.kind == "bool"
    assert product.fieldsets["default"].fields == ("title", "description")
    assert product.document_summaries["card"].fields == (
        "product_id",
        "title",
        "price",
        "seller_id",
    )
    assert "embedding" not in product.document_summaries["default"].fields
    assert schemas["user"].fields["recent_item_idx"].type.spec == "array<int>"


def test_rank_profile_inheritance_is_resolved(schemas):
    profiles = schemas["product"].rank_profiles
    ranking, features = profiles["ranking"], profiles["features"]
    assert set(ranking.inputs) == {"q_user", "hist", "ctx"}
    assert {"ann", "fresh", "pop", "user_vec", "cand", "model_score"} <= set(ranking.functions)
    assert ranking.first_phase.expression == "ann + 0.1 * fresh + 0.05 * pop"
    assert ranking.match_features == ("ann", "fresh", "pop")
    assert ranking.rank_properties == {"freshness(created_at).maxAge": "2592000"}
    assert ranking.global_phase.rerank_count == 500
    assert features.global_phase.expression == "model_score + 0.05 * fresh"
    assert features.match_features[-1] == "attribute(created_at)"
    assert features.summary_features == ("model_score",)
    assert set(features.onnx_models) == {"history_encoder", "ranker"}
    assert dict(ranking.onnx_models["ranker"].inputs) == {"user_state": "user_vec", "cand": "cand"}


def test_dimensions_agree_between_schema_builder_and_onnx_files(schemas):
    """One source of truth: build_baseline_models constants == .sd types == ONNX shapes."""
    ranking = schemas["product"].rank_profiles["ranking"]
    assert ranking.inputs["q_user"].type.spec == f"tensor<float>(x[{bbm.EMBEDDING_DIM}])"
    assert ranking.inputs["hist"].type.spec == f"tensor<float>(d0[1],d1[{bbm.HISTORY_LEN}])"
    assert ranking.inputs["ctx"].type.spec == f"tensor<float>(d0[1],d1[{bbm.CONTEXT_DIM}])"
    assert schemas["user"].fields["embedding"].type.tensor.shape == (bbm.EMBEDDING_DIM,)
    enc = ort.InferenceSession(str(PACKAGE / "models" / "history_encoder.onnx"))
    assert {i.name: i.shape for i in enc.get_inputs()} == {
        "hist": [1, bbm.HISTORY_LEN],
        "ctx": [1, bbm.CONTEXT_DIM],
    }
    assert [(o.name, o.shape) for o in enc.get_outputs()] == [
        ("user_state", [1, bbm.USER_STATE_DIM])
    ]
    ranker = ort.InferenceSession(str(PACKAGE / "models" / "ranker.onnx"))
    assert {i.name: i.shape for i in ranker.get_inputs()} == {
        "user_state": [1, bbm.USER_STATE_DIM],
        "cand": [1, bbm.EMBEDDING_DIM],
    }
    assert [(o.name, o.shape) for o in ranker.get_outputs()] == [("score", [1, 1])]


def test_baseline_models_are_reproducible_and_match_numpy(tmp_path):
    paths = bbm.build(tmp_path)
    for p in paths:
        assert p.read_bytes() == (PACKAGE / "models" / p.name).read_bytes()
    w = bbm.baseline_weights()
    hist = np.zeros((1, bbm.HISTORY_LEN), dtype=np.int64)
    hist[0, :3] = [3, 1500, 17]
    ctx = np.linspace(-1, 1, bbm.CONTEXT_DIM, dtype=np.float32).reshape(1, -1)
    enc = ort.InferenceSession(str(paths[0]))
    (state,) = enc.run(None, {"hist": hist, "ctx": ctx})
    ref = w["item_table"][[3, 1500 % bbm.TABLE_ROWS, 17]].mean(axis=0) + ctx[0] @ w["w_ctx"]
    np.testing.assert_allclose(state[0], ref, rtol=1e-5, atol=1e-6)
    cand = np.arange(bbm.EMBEDDING_DIM, dtype=np.float32).reshape(1, -1) / 100
    (score,) = ort.InferenceSession(str(paths[1])).run(None, {"user_state": state, "cand": cand})
    np.testing.assert_allclose(score[0, 0], float(state[0] @ (cand[0] @ w["w_cand"])), rtol=1e-5)


def test_tensor_type_dims_sorted_and_spec():
    tt = parse_tensor_type("tensor<float>(y[2],x[3])")
    assert [d.name for d in tt.dims] == ["x", "y"] and tt.spec == "tensor<float>(x[3],y[2])"
    assert parse_tensor_type("tensor(k{})").spec == "tensor(k{})"


BASE = """schema t {{
    document t {{
        field a type string {{
            indexing: summary | attribute
        }}
{field}
    }}
{extra}
}}
"""


def _write(tmp_path: Path, field: str = "", extra: str = "") -> Path:
    path = tmp_path / "t.sd"
    path.write_text(BASE.format(field=field, extra=extra))
    return path


@pytest.mark.parametrize(
    ("field", "extra", "line", "construct"),
    [
        ("        field w type weightedset<string> { indexing: attribute }", "", 6, "weightedset"),
        ("        field m type map<string, int> { indexing: attribute }", "", 6, "map"),
        ("        field p type position { indexing: attribute }", "", 6, "position"),
        (
            "        field x type tensor(a{},b[2]) { indexing: attribute }",
            "",
            6,
            "tensor(a{},b[2])",
        ),
        ("        field s type string {\n indexing: input a | summary\n }", "", 7, "input a"),
        (
            "        field s type string {\n indexing: index | summary\n }",
            "",
            6,
            "stemming (default 'best'; write 'stemming: none')",
        ),
        ("        field s type string {\n indexing: summary\n bolding: on\n }", "", 8, "bolding"),
        (
            "",
            "    rank-profile r {\n        match-phase {\n attribute: a\n }\n    }",
            9,
            "match-phase",
        ),
        ("", "    rank-profile r {\n        diversity {\n attribute: a\n }\n    }", 9, "diversity"),
        (
            "",
            "    rank-profile r {\n        rank-properties {\n foo.bar: 1\n }\n    }",
            10,
            "rank-properties foo.bar",
        ),
        ("", "    import field a_ref.b as b {}", 8, "import"),
        (
            "",
            "    document-summary s {\n summary a { source: a }\n }",
            9,
            "summary a { source: a }",
        ),
    ],
)
def test_unsupported_constructs_are_refused_with_file_and_line(
    tmp_path, field, extra, line, construct
):
    path = _write(tmp_path, field, extra)
    with pytest.raises(PackageError) as exc:
        parse_schema(path, tmp_path)
    assert exc.value.construct == construct
    assert exc.value.line == line
    assert str(exc.value) == f"{path}:{line}: unsupported construct '{construct}'"


def test_hnsw_and_metric_settings(tmp_path):
    field = """        field v type tensor<float>(x[4]) {
            indexing: attribute | index
            attribute { distance-metric: angular }
        }
        field b type tensor<int8>(x[2]) {
            indexing: attribute
            attribute { distance-metric: hamming }
        }"""
    s = parse_schema(_write(tmp_path, field), tmp_path)
    assert s.fields["v"].hnsw is not None and s.fields["v"].distance_metric == "angular"
    assert s.fields["b"].hnsw is None and s.fields["b"].distance_metric == "hamming"
    bad = field.replace("angular", "manhattan")
    with pytest.raises(PackageError, match="distance-metric: manhattan"):
        parse_schema(_write(tmp_path, bad), tmp_path)


def test_profile_inheritance_overrides_and_bad_parent(tmp_path):
    extra = """    rank-profile base {
        inputs {
            query(w) double: 2.5
        }
        function f() { expression: attribute(n) * query(w) }
        first-phase { expression: f }
        match-features: f
    }
    rank-profile child inherits base {
        function f() { expression: attribute(n) }
        second-phase {
            expression: f * 2
            rerank-count: 5
        }
    }
    rank-profile orphan inherits nothere {
        first-phase { expression: 1 }
    }"""
    field = "        field n type int { indexing: attribute }"
    with pytest.raises(PackageError, match="bad inherits 'nothere'"):
        parse_schema(_write(tmp_path, field, extra), tmp_path)
    extra = extra[: extra.index("    rank-profile orphan")]
    s = parse_schema(_write(tmp_path, field, extra), tmp_path)
    child = s.rank_profiles["child"]
    assert child.functions["f"].expression == "attribute(n)"
    assert child.inputs["w"].default == "2.5"
    assert child.first_phase.expression == "f" and child.second_phase.rerank_count == 5
    assert child.match_features == ("f",)
    assert s.rank_profiles["default"].builtin and s.rank_profiles["unranked"].builtin


def test_profiles_do_not_implicitly_inherit_default(tmp_path):
    # Vespa: a profile inherits only what its `inherits` list names (RankProfile.inherited() is
    # empty without one; schemas reference "The inherits list is optional"), and
    # `rank-profile default inherits default` is accepted and ignored (DefaultRankProfile).
    extra = """    rank-profile default inherits default {
        inputs {
            query(w) double: 2.0
        }
        function f() { expression: attribute(n) }
        first-phase { expression: f }
        second-phase { expression: f * 2 }
        match-features: f
    }
    rank-profile other {
        first-phase { expression: 1 }
    }
    rank-profile heir inherits default {
    }"""
    field = "        field n type int { indexing: attribute }"
    s = parse_schema(_write(tmp_path, field, extra), tmp_path)
    other = s.rank_profiles["other"]
    assert other.functions == {} and other.inputs == {} and other.match_features == ()
    assert other.second_phase.expression is None and other.first_phase.expression == "1"
    heir = s.rank_profiles["heir"]
    assert heir.first_phase.expression == "f" and heir.second_phase.expression == "f * 2"
    assert heir.inputs["w"].default == "2.0" and heir.match_features == ("f",)
    assert not s.rank_profiles["default"].builtin


def test_onnx_model_names_checked_against_file(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "schemas").mkdir(parents=True)
    (pkg / "models").mkdir()
    shutil.copy(PACKAGE / "models" / "ranker.onnx", pkg / "models" / "ranker.onnx")
    sd = BASE.format(
        field="",
        extra="""    rank-profile r {
        onnx-model m {
            file: models/ranker.onnx
            input "user_state": query(u)
            input "candidate": query(c)
        }
        first-phase { expression: 1 }
    }""",
    )
    (pkg / "schemas" / "t.sd").write_text(sd)
    with pytest.raises(PackageError, match="has no input 'candidate'"):
        load_schemas(pkg)
    (pkg / "schemas" / "t.sd").write_text(sd.replace("models/ranker.onnx", "models/missing.onnx"))
    with pytest.raises(PackageError, match=r"no file 'models/missing\.onnx'"):
        load_schemas(pkg)
