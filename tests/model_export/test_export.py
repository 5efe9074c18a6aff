"""The export CLI: manifest contents, single-file ONNX, parity, and mismatches with the package."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from model_export.cli import DEFAULT_PACKAGE, main
from model_export.export import load
from model_export.manifest import Manifest, describe_onnx, sha256
from model_export.parity import TOLERANCE, check_user_encoder, lengths_for
from trainer.models.base import load_checkpoint
from trainer.models.registry import all_models

# A rank profile that serves the SASRec user encoder from the product schema (test packages only).
USER_TOWER = """
    rank-profile user_tower {
        inputs {
            query(items) tensor<float>(d0[1],d1[50])
        }
        onnx-model user_encoder {
            file: models/user_encoder.onnx
            input "items": query(items)
            output "user_embedding": user_vec
        }
        first-phase {
            expression: attribute(popularity)
        }
    }
}
"""


def test_help_documents_every_option(capsys):
    for argv, options in (
        (
            ["--help"],
            ["--checkpoint", "--out", "--dataset", "--package", "--install", "--check-only"],
        ),
        (["feed", "--help"], ["--export", "--dataset", "--url", "--embeddings-only", "--types"]),
        (["check", "--help"], ["--export", "--package"]),
    ):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 0
        text = capsys.readouterr().out
        for option in options:
            assert option in text, (argv, option)


def test_manifest_records_source_dimensions_names_metrics_versions(exports, checkpoints):
    folder = exports["sasrec"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["model"] == "sasrec"
    assert manifest["source_checkpoint"]["sha256"] == sha256(checkpoints["sasrec"])
    assert manifest["dataset"]["name"] == "marketplace-tiny"
    assert manifest["dimensions"] == {"embedding": 128, "history_length": 50}
    assert set(manifest["versions"]) >= {"torch", "onnx", "onnxruntime", "numpy"}
    assert manifest["metrics"]["valid_ndcg@10"] >= 0.0
    (entry,) = manifest["onnx"]
    assert entry["inputs"] == [{"name": "items", "type": "int64", "shape": ["batch", "seq"]}]
    assert entry["outputs"] == [
        {"name": "user_embedding", "type": "float32", "shape": ["batch", 128]}
    ]
    assert entry["sha256"] == sha256(folder / entry["file"])
    # The embeddings are the model's, in the checkpoint's id order.
    saved = load_checkpoint(checkpoints["sasrec"])
    products = np.load(folder / manifest["embeddings"]["product"]["file"])
    np.testing.assert_array_equal(products, saved.model.item_embeddings().numpy())
    assert json.loads((folder / "product_ids.json").read_text()) == saved.item_ids
    assert json.loads((folder / "user_ids.json").read_text()) == saved.user_ids
    assert np.load(folder / "user_embeddings.npy").shape == (len(saved.user_ids), 128)


def test_graph_model_exports_tables_only(exports):
    manifest = Manifest.read(exports["lightgcn"])
    assert manifest.model == "lightgcn" and manifest.onnx == [] and manifest.parity == []
    assert not list(exports["lightgcn"].glob("*.onnx"))
    assert manifest.embeddings["product"]["shape"] == [300, 128]


def test_onnx_file_is_self_contained(exports):
    folder = exports["sasrec"]
    model = onnx.load(str(folder / "user_encoder.onnx"))
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert sorted(p.name for p in folder.iterdir() if "onnx" in p.name) == ["user_encoder.onnx"]


def test_parity_on_real_batches_at_required_shapes(checkpoints, exports):
    loaded = load(checkpoints["sasrec"])
    results = check_user_encoder(loaded, exports["sasrec"] / "user_encoder.onnx")
    assert {(r.batch, r.length) for r in results} == {(b, n) for b in (1, 64) for n in (1, 37, 50)}
    assert all(r.max_abs_diff <= TOLERANCE for r in results), [r.line() for r in results]
    # The CLI recorded the same checks in the manifest.
    recorded = Manifest.read(exports["sasrec"]).parity
    assert {(p["batch"], p["length"]) for p in recorded} == {(r.batch, r.length) for r in results}


def test_lengths_above_the_history_are_skipped():
    assert lengths_for(10) == [1, 10]
    assert lengths_for(200) == [1, 37, 200]


def test_parity_failure_stops_with_exit_1(checkpoints, tmp_path, monkeypatch, capsys):
    # An encoder whose PyTorch side drifts from the exported graph must be caught.
    import trainer.models.export as torch_export

    real = torch_export.reference_user_vectors
    monkeypatch.setattr(torch_export, "reference_user_vectors", lambda m, i: real(m, i) + 1e-3)
    assert main(["--checkpoint", str(checkpoints["sasrec"]), "--out", str(tmp_path)]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_wrong_dimension_refuses_naming_both_sides(checkpoints, tmp_path, capsys):
    code = main(["--checkpoint", str(checkpoints["lightgcn-16d"]), "--out", str(tmp_path / "x")])
    assert code == 2
    err = capsys.readouterr().err
    assert "manifest: product embedding 16-d; " in err
    assert "product.sd:" in err and "embedding tensor<float>(x[128])" in err
    assert "manifest: user embedding 16-d; " in err
    assert not (tmp_path / "x" / "manifest.json").exists()


def test_check_only_writes_nothing(checkpoints, tmp_path):
    out = tmp_path / "never"
    assert main(["--checkpoint", str(checkpoints["bprmf"]), "--out", str(out), "--check-only"]) == 0
    assert not out.exists()


def _package_with_user_tower(tmp_path: Path, encoder: Path) -> Path:
    package = tmp_path / "package"
    shutil.copytree(DEFAULT_PACKAGE, package)
    product = package / "schemas" / "product.sd"
    text = product.read_text().rstrip()
    assert text.endswith("}")
    product.write_text(text[:-1] + USER_TOWER)
    shutil.copyfile(encoder, package / "models" / "user_encoder.onnx")  # a previous install
    return package


def test_install_copies_referenced_models_and_package_still_loads(checkpoints, exports, tmp_path):
    package = _package_with_user_tower(tmp_path, exports["sasrec"] / "user_encoder.onnx")
    before = {p.name: p.read_bytes() for p in (package / "models").iterdir()}
    out = tmp_path / "export"
    argv = ["--checkpoint", str(checkpoints["sasrec"]), "--out", str(out)]
    assert main([*argv, "--package", str(package), "--install"]) == 0
    installed = package / "models" / "user_encoder.onnx"
    assert installed.read_bytes() == (out / "user_encoder.onnx").read_bytes()
    # The baseline models no block of this export references are untouched.
    for name in ("history_encoder.onnx", "ranker.onnx"):
        assert (package / "models" / name).read_bytes() == before[name]


def test_renamed_onnx_output_refuses_naming_both_sides(exports, tmp_path, capsys):
    package = _package_with_user_tower(tmp_path, exports["sasrec"] / "user_encoder.onnx")
    renamed = tmp_path / "renamed"
    shutil.copytree(exports["sasrec"], renamed)
    path = renamed / "user_encoder.onnx"
    model = onnx.load(str(path))
    for node in model.graph.node:
        node.output[:] = ["user_vector" if o == "user_embedding" else o for o in node.output]
    model.graph.output[0].name = "user_vector"
    onnx.save(model, str(path))
    manifest = Manifest.read(renamed)
    manifest.onnx = [describe_onnx(path, "user_encoder", renamed)]
    manifest.write(renamed)
    assert ort.InferenceSession(str(path)).get_outputs()[0].name == "user_vector"

    assert main(["check", "--export", str(renamed), "--package", str(package)]) == 2
    err = capsys.readouterr().err
    assert "manifest: user_encoder (user_encoder.onnx) has no output 'user_embedding'" in err
    assert "product.sd:" in err and 'onnx-model user_encoder: output "user_embedding"' in err
    # The untouched export passes against the same package.
    assert main(["check", "--export", str(exports["sasrec"]), "--package", str(package)]) == 0


def test_manifest_and_file_disagreeing_is_refused(exports, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(exports["sasrec"], copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["onnx"][0]["outputs"][0]["name"] = "something_else"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert main(["check", "--export", str(copy)]) == 2
    assert "manifest: user_encoder outputs" in capsys.readouterr().err


def test_every_registered_model_name_resolves():
    assert {"lightgcn", "sasrec", "bprmf"} <= set(all_models())


def test_the_item_user_graph_is_the_exported_history(exports, dataset):
    from model_export.export import USER_STAGE
    from trainer.data.loaders import load_dataset
    from trainer.data.splits import split_dataset
    from vespa_app.client.graph_walk import ItemGraph

    folder = exports["lightgcn"]
    manifest = Manifest.read(folder)
    graph = ItemGraph.load(folder)
    assert manifest.graph["file"] == "graph.npz" and manifest.graph["history_stage"] == USER_STAGE
    assert (graph.num_items, graph.num_users) == (300, 200)
    assert manifest.graph["edges"] == graph.user_items.size
    data = split_dataset(load_dataset(dataset), Manifest.read(folder).dataset["protocol"])
    history = data.positives(data.history(USER_STAGE))
    pairs = set(zip(history["user_idx"].tolist(), history["item_idx"].tolist(), strict=True))
    stored = {
        (u, int(i))
        for u in range(graph.num_users)
        for i in graph.user_items[graph.user_indptr[u] : graph.user_indptr[u + 1]]
    }
    assert stored == pairs
    # Both directions hold the same edges.
    back = {
        (int(u), i)
        for i in range(graph.num_items)
        for u in graph.item_users[graph.item_indptr[i] : graph.item_indptr[i + 1]]
    }
    assert back == pairs


def test_graphsage_exports_eventless_products_near_their_category(tmp_path):
    """Inductive item tower: products without a training event still get a row, placed by their
    features (their nearest products share their leaf category far above chance)."""
    import torch

    from trainer.data.loaders import load_dataset
    from trainer.data.marketplace import save_marketplace
    from trainer.data.splits import split_dataset
    from trainer.data.synthetic import generate
    from trainer.models.base import save_checkpoint
    from trainer.models.graphsage import GraphSAGE

    folder = save_marketplace(generate("tiny", 3), tmp_path / "tiny")
    data = split_dataset(load_dataset(folder))
    torch.manual_seed(0)
    model = GraphSAGE(GraphSAGE.test_config(), data.num_users, data.num_items)
    model.fit(data, progress=False)
    checkpoint = save_checkpoint(model, data, tmp_path / "sage.pt", dataset_path=str(folder))
    out = tmp_path / "export"
    assert main(["--checkpoint", str(checkpoint), "--out", str(out), "--skip-package-check"]) == 0
    table = np.load(out / "product_embeddings.npy")
    assert table.shape[0] == data.num_items and np.isfinite(table).all()
    eventless = np.flatnonzero(data.item_popularity() == 0)
    assert eventless.size > 0
    unit = table / np.linalg.norm(table, axis=1, keepdims=True)
    leaf = data.market.products.set_index("product_id").loc[data.items.ids, "category_id"]
    leaf = leaf.to_numpy()
    same = []
    for i in eventless:
        cosine = unit @ unit[i]
        cosine[i] = -np.inf
        same.append(np.mean(leaf[np.argsort(-cosine)[:5]] == leaf[i]))
    chance = np.mean([np.mean(leaf == leaf[i]) for i in eventless])
    assert np.mean(same) > 5 * chance
