"""The ranker through model_export: ONNX export, manifest, parity, install, and the embedded
engine's `ranking` profile scoring exactly what the PyTorch ranker scores (issue 6, item 5)."""

from __future__ import annotations

import json
import time
import urllib.request

import numpy as np
import pytest
import torch

from model_export.cli import main
from model_export.feed import feed, normalized
from model_export.manifest import Manifest, check_self_contained, sha256
from model_export.query import ranking_inputs
from tests.model_export.conftest import export_with_ranker, package_copy, tiny_ranker_config
from trainer.data.loaders import load_dataset
from trainer.data.splits import split_dataset
from trainer.models.base import load_checkpoint
from trainer.models.ranker import Ranker, load_ranker, save_ranker

TOLERANCE = 1e-4
MAX_AGE = 2592000.0  # rank-properties freshness(created_at).maxAge of the retrieval profile
FRESH_WEIGHT = 0.05  # global-phase: model_score + 0.05 * fresh
USERS = 6
HITS = 50


@pytest.fixture(scope="module")
def installed(checkpoints, ranker_checkpoint, tmp_path_factory):
    """Export BPR-MF + ranker and install into a copy of the package (never the project's)."""
    root = tmp_path_factory.mktemp("ranker-export")
    package = package_copy(root)
    out = root / "export"
    argv = ["--package", str(package), "--install"]
    assert export_with_ranker(checkpoints, ranker_checkpoint, out, *argv) == 0
    return out, package


def test_ranker_models_manifest_and_install(installed, ranker_checkpoint):
    out, package = installed
    manifest = Manifest.read(out)
    entries = manifest.onnx_by_name()
    assert set(entries) == {"history_encoder", "ranker"}
    encoder, scorer = entries["history_encoder"], entries["ranker"]
    assert [(t.name, t.type, len(t.shape)) for t in encoder.inputs] == [
        ("hist", "int64", 2),
        ("ctx", "float32", 2),
    ]
    assert encoder.inputs[1].shape[1] == 16 and encoder.limits["hist"] == [None, 50]
    assert [(t.name, t.type, t.shape[1]) for t in encoder.outputs] == [
        ("user_state", "float32", 64)
    ]
    assert [(t.name, t.type, t.shape[1]) for t in scorer.inputs] == [
        ("user_state", "float32", 64),
        ("cand", "float32", 128),
    ]
    assert [(t.name, t.type, t.shape[1]) for t in scorer.outputs] == [("score", "float32", 1)]
    for entry in (encoder, scorer):
        path = out / entry.file
        check_self_contained(path)  # one file, no external data
        assert sha256(path) == entry.sha256
        assert (package / "models" / entry.file).read_bytes() == path.read_bytes()
    assert manifest.dimensions["ranker_history_length"] == 50
    assert manifest.ranker["source_checkpoint"]["sha256"] == sha256(ranker_checkpoint)
    assert manifest.ranker["hist_offset"] == 1
    # Parity: both models, batch 1 and 64, history lengths 1, 37 and 50, within 1e-4.
    shapes = {(p["model"], p["batch"], p["length"]) for p in manifest.parity}
    assert shapes == {
        (m, b, n) for m in ("history_encoder", "ranker") for b in (1, 64) for n in (1, 37, 50)
    }
    assert max(p["max_abs_diff"] for p in manifest.parity) <= TOLERANCE


def test_ranker_over_another_retrieval_model_is_refused(checkpoints, ranker_checkpoint, capsys):
    # cand in Vespa is the export's product embedding: a ranker trained over other vectors
    # would score what it never saw.
    argv = ["--checkpoint", str(checkpoints["lightgcn"]), "--ranker", str(ranker_checkpoint)]
    assert main([*argv, "--check-only", "--skip-package-check"]) == 2
    err = capsys.readouterr().err
    assert str(ranker_checkpoint) in err and "lightgcn" in err and "normalised product" in err


def test_ranker_with_shorter_history_than_the_profile_is_refused(checkpoints, tmp_path, capsys):
    retrieval = load_checkpoint(checkpoints["bprmf"]).model
    ranker = Ranker(tiny_ranker_config(history_len=20), retrieval.item_embeddings())
    path = save_ranker(ranker, tmp_path / "short.pt")
    package = package_copy(tmp_path)
    before = (package / "models" / "history_encoder.onnx").read_bytes()
    argv = ["--package", str(package), "--install"]
    code = export_with_ranker(checkpoints, path, tmp_path / "out", *argv)
    err = capsys.readouterr().err
    assert code == 2
    assert "history_encoder" in err and "at most 20" in err and "d1[50]" in err
    assert "product.sd" in err  # the package side, with file:line
    assert (package / "models" / "history_encoder.onnx").read_bytes() == before


def test_ranker_parity_failure_exits_1(checkpoints, ranker_checkpoint, tmp_path, monkeypatch):
    import trainer.models.ranker as ranker_module

    real = ranker_module.reference_score
    monkeypatch.setattr(ranker_module, "reference_score", lambda r, u, c: real(r, u, c) + 1e-3)
    out = tmp_path / "out"
    code = export_with_ranker(checkpoints, ranker_checkpoint, out, "--skip-package-check")
    assert code == 1


def test_ranking_inputs_add_one_and_pad():
    inputs = ranking_inputs([4, 0, 7], [0.5] * 16)
    hist = inputs["input.query(hist)"][0]
    assert len(hist) == 50 and hist[:4] == [5.0, 1.0, 8.0, 0.0] and not any(hist[3:])
    assert inputs["input.query(ctx)"] == [[0.5] * 16]
    assert ranking_inputs(list(range(80)), [0.0] * 16)["input.query(hist)"][0][-1] == 50.0
    with pytest.raises(ValueError, match="recent_item_idx"):
        ranking_inputs([-1], [0.0] * 16)
    with pytest.raises(ValueError, match="ctx"):
        ranking_inputs([1], [0.0] * 3)


# ----- the engine's ranking profile against the PyTorch ranker ---------------------------------


def _search(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url + "/search/", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _get(url: str, doc_type: str, doc_id: str) -> dict:
    with urllib.request.urlopen(f"{url}/document/v1/{doc_type}/{doc_type}/docid/{doc_id}") as r:
        return json.loads(r.read())["fields"]


@torch.no_grad()
def _engine_against_pytorch(out, package, dataset, checkpoint, engine_factory) -> int:
    """Engine `ranking` top HITS vs the PyTorch ranker on the same candidates, for USERS users:
    the same order and scores within TOLERANCE. The query sends the manifest's retrieval_weight
    as the pipeline does; offline the score is scorer + W * cos + 0.05 * fresh (W * cos only for
    a residual ranker). Returns how many users' lists the ranker reordered against retrieval."""
    market = load_dataset(dataset)
    engine = engine_factory(package_dir=package)
    report = feed(out, market, engine.url, types=("product", "user"), progress=False)
    assert not report.failures

    ranker = load_ranker(checkpoint)
    weight = Manifest.read(out).ranker["retrieval_weight"]
    assert weight == (ranker.weight if ranker.residual else 0.0)
    data = split_dataset(market)
    product_ids = json.loads((out / "product_ids.json").read_text())
    row_of = {p: i for i, p in enumerate(product_ids)}
    created = market.products.set_index("product_id")["created_at"]
    created = {p: created[p].timestamp() for p in product_ids}
    user_ids = json.loads((out / "user_ids.json").read_text())
    rng = np.random.default_rng(0)
    users = rng.choice(len(user_ids), USERS, replace=False)
    contexts = ranker.request(data, "test", users, np.zeros((USERS, 1), np.int64)).ctx

    compared, reordered, worst = 0, 0, 0.0
    for user, ctx in zip(users, contexts, strict=True):
        # The client's request flow (§9): read the user document, then query with its vector,
        # its recent history (+1 in ranking_inputs), the request context and W.
        doc = _get(engine.url, "user", user_ids[user])
        recent = doc.get("recent_item_idx", [])
        nn = f"{{targetHits:{HITS}, approximate:false}}nearestNeighbor(embedding, q_user)"
        body = {
            "yql": f"select * from product where {nn}",
            "ranking.profile": "ranking",
            "input.query(q_user)": doc["embedding"]["values"],
            **ranking_inputs(recent, ctx.tolist()),
            "input.query(retrieval_weight)": weight,
            "hits": HITS,
            "ranking.globalPhase.rerankCount": HITS,
        }
        before = time.time()
        result = _search(engine.url, body)
        after = time.time()
        root = result["root"]
        assert root["fields"]["totalCount"] == HITS  # the candidate set is the returned hits
        hits = root["children"]
        assert len(hits) == HITS
        ids = [h["fields"]["product_id"] for h in hits]
        engine_scores = np.array([h["relevance"] for h in hits])

        # Offline on the same candidates: PyTorch ranker + 0.05 * freshness at query time.
        hist = np.zeros((1, 50), np.int64)
        hist[0, : min(len(recent), 50)] = np.asarray(recent[:50], np.int64) + 1
        state = ranker.encoder(torch.from_numpy(hist), torch.from_numpy(ctx[None]))
        rows = np.array([row_of[p] for p in ids])
        cand = normalized(np.load(out / "product_embeddings.npy")[rows])
        cand = torch.from_numpy(cand.astype(np.float32))
        model = ranker.scorer(state.expand(len(ids), -1), cand).squeeze(-1).numpy()
        if ranker.residual:
            cosine = ranker.retrieval_cosine(np.array([user]), rows[None])[0].numpy()
            # Large enough that a query leaving W out (profile value 0) would fail the check.
            assert np.abs(ranker.weight * cosine).max() > 100 * TOLERANCE
            model = model + ranker.weight * cosine
        fresh = np.array(
            [max(1.0 - ((before + after) / 2 - created[p]) / MAX_AGE, 0.0) for p in ids]
        )
        engine_fresh = np.array([h["fields"]["matchfeatures"]["fresh"] for h in hits])
        np.testing.assert_allclose(engine_fresh, fresh, atol=TOLERANCE)
        offline = model + FRESH_WEIGHT * fresh
        order = np.argsort(-offline, kind="stable")
        assert [ids[i] for i in order] == ids, f"user {user_ids[user]}: top {HITS} order differs"
        worst = max(worst, float(np.abs(engine_scores - offline).max()))
        assert worst <= TOLERANCE
        ann = [h["fields"]["matchfeatures"]["ann"] for h in hits]
        reordered += ann != sorted(ann, reverse=True)  # the ranker, not retrieval, ordered them
        compared += 1
    assert compared == USERS
    kind = "residual ranker" if ranker.residual else "ranker"
    print(f"engine vs PyTorch {kind}: {USERS} users x {HITS} hits, max |diff| = {worst:.2e}")
    return reordered


def test_engine_ranking_matches_pytorch_ranker(
    installed, dataset, ranker_checkpoint, engine_factory
):
    out, package = installed
    reordered = _engine_against_pytorch(out, package, dataset, ranker_checkpoint, engine_factory)
    assert reordered == USERS


# ----- the residual ranker: scorer + W * cos(retrieval user, candidate) ------------------------


@pytest.fixture(scope="module")
def residual_installed(checkpoints, residual_ranker_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("residual-export")
    package = package_copy(root)
    out = root / "export"
    code = export_with_ranker(
        checkpoints, residual_ranker_checkpoint, out, "--package", str(package), "--install"
    )
    assert code == 0
    return out, package


def test_manifest_records_the_retrieval_weight(installed, residual_installed):
    residual = Manifest.read(residual_installed[0]).ranker
    plain = Manifest.read(installed[0]).ranker
    assert residual["residual"] is True and plain["residual"] is False
    assert plain["retrieval_weight"] == 0.0  # the profile's value when nothing is sent
    # Learned from its start value 10 during the (one-epoch) training, stored in the checkpoint.
    assert residual["retrieval_weight"] == load_ranker(residual["source_checkpoint"]["path"]).weight
    assert residual["retrieval_weight"] not in (0.0, 10.0)


def test_residual_ranker_over_other_user_vectors_is_refused(checkpoints, tmp_path, capsys):
    # W * cos is computed in Vespa from the fed user embedding: a ranker trained on other user
    # vectors would add a term it never saw.
    from model_export.export import USER_STAGE

    retrieval = load_checkpoint(checkpoints["bprmf"])
    data = split_dataset(load_dataset(retrieval.extra["dataset_path"]))
    users = retrieval.model.user_embeddings(data, USER_STAGE)
    shuffled = users[torch.randperm(len(users), generator=torch.Generator().manual_seed(0))]
    ranker = Ranker(
        tiny_ranker_config(), retrieval.model.item_embeddings(), user_embeddings=shuffled
    )
    path = save_ranker(ranker, tmp_path / "residual.pt")
    assert export_with_ranker(checkpoints, path, tmp_path / "out", "--check-only") == 2
    err = capsys.readouterr().err
    assert str(path) in err and "normalised user embeddings" in err


def test_engine_ranking_matches_pytorch_residual_ranker(
    residual_installed, dataset, residual_ranker_checkpoint, engine_factory
):
    out, package = residual_installed
    _engine_against_pytorch(out, package, dataset, residual_ranker_checkpoint, engine_factory)
