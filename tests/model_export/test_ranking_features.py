"""The ranker with features through model_export and the `ranking_features` profile: the newest
100 events with their history codes (event, hour, device, location), candidate features (price,
margin, popularity, freshness) and candidate codes (seller, category) exported, checked against
the profile, installed, and scored by the embedded engine exactly as PyTorch scores them
(issue 6, build items 1-5 for the features ranker)."""

from __future__ import annotations

import json
import time
import urllib.request

import numpy as np
import pandas as pd
import pytest
import torch

from model_export.cli import DEFAULT_PACKAGE
from model_export.feed import feed, normalized, positive_events
from model_export.manifest import Manifest, check_self_contained, sha256
from model_export.query import (
    CONTEXT_FIELDS,
    DEVICES,
    EVENT_TYPES,
    history_codes,
    ranking_inputs,
)
from tests.model_export.conftest import (
    FEATURES,
    export_with_ranker,
    package_copy,
    tiny_ranker_config,
)
from tests.vespa_app.conftest import EngineProcess
from trainer.data import schema
from trainer.data.loaders import load_dataset
from trainer.data.splits import split_dataset
from trainer.models.base import load_checkpoint
from trainer.models.ranker import Ranker, load_ranker, save_ranker
from trainer.ranking.features import code_vocabularies

TOLERANCE = 1e-4
MAX_AGE = 2592000.0  # freshness(created_at).maxAge of the retrieval profile
FRESH_WEIGHT = 0.05  # global-phase: model_score + 0.05 * fresh
USERS = 6
HITS = 50
ENCODER, SCORER = "history_encoder_features", "ranker_features"
LENGTH = 100  # the ranking_features profile's query(hist) d1[100]
CAND_WIDTH = 128 + 4 + 2  # embedding, 4 features, 2 codes


@pytest.fixture(scope="module")
def installed(checkpoints, features_ranker_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("features-export")
    package = package_copy(root)
    out = root / "export"
    code = export_with_ranker(
        checkpoints, features_ranker_checkpoint, out, "--package", str(package), "--install"
    )
    assert code == 0
    return out, package


def test_features_ranker_manifest_parity_and_install(installed, features_ranker_checkpoint):
    out, package = installed
    manifest = Manifest.read(out)
    entries = manifest.onnx_by_name()
    assert set(entries) == {ENCODER, SCORER}
    assert [(t.name, t.type) for t in entries[ENCODER].inputs] == [
        ("hist", "int64"),
        ("ctx", "float32"),
        *((f"hist_{n}", "int64") for n in FEATURES["history_features"]),
    ]
    assert entries[ENCODER].limits["hist_location"] == [None, LENGTH]
    assert [(t.name, t.shape[1]) for t in entries[SCORER].inputs] == [
        ("user_state", 64),
        ("cand", CAND_WIDTH),
    ]
    section = manifest.ranker
    assert section["profile"] == "ranking_features" and section["history_length"] == LENGTH
    assert section["cand_features"] == list(FEATURES["cand_features"])
    assert section["cand_codes"] == ["seller", "category"]
    market = load_dataset(manifest.dataset["path"])
    assert section["code_ids"]["seller"] == sorted(market.sellers["seller_id"])
    assert section["code_ids"]["category"] == sorted(market.categories["category_id"])
    assert section["history_features"] == list(FEATURES["history_features"])
    data = split_dataset(load_dataset(manifest.dataset["path"]))
    assert section["locations"] == list(data.locations) and section["location_buckets"] == 64
    shapes = {(p["model"], p["batch"], p["length"]) for p in manifest.parity}
    lengths = (1, 37, LENGTH)
    assert shapes == {(m, b, n) for m in (ENCODER, SCORER) for b in (1, 64) for n in lengths}
    assert max(p["max_abs_diff"] for p in manifest.parity) <= TOLERANCE
    for entry in entries.values():
        path = out / entry.file
        check_self_contained(path)
        assert sha256(path) == entry.sha256
        assert (package / "models" / entry.file).read_bytes() == path.read_bytes()
    # The plain ranking profile's models are not touched.
    for name in ("history_encoder.onnx", "ranker.onnx"):
        assert (package / "models" / name).read_bytes() == (
            DEFAULT_PACKAGE / "models" / name
        ).read_bytes()


def _untrained(checkpoints, tmp_path, dataset, **overrides):
    """An untrained ranker of the FEATURES set with ``overrides``, saved."""
    retrieval = load_checkpoint(checkpoints["bprmf"]).model
    config = tiny_ranker_config(**{**FEATURES, **overrides})
    vocabularies = code_vocabularies(load_dataset(dataset), config.cand_codes)
    ranker = Ranker(config, retrieval.item_embeddings(), vocabularies=vocabularies)
    return save_ranker(ranker, tmp_path / "r.pt")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        # Same width, other order: the columns would be read as the wrong features.
        (
            {"cand_features": ("margin", "price", "popularity", "freshness")},
            "columns: embedding[128], margin, price, popularity, created_at, seller_idx, "
            "category_idx (134)",
        ),
        # The codes swapped: the seller table would be indexed by category ids.
        (
            {"cand_codes": ("category", "seller")},
            "created_at, category_idx, seller_idx (134)",
        ),
        # One column short: the profile builds 134 cells.
        ({"cand_codes": ("seller",)}, "'cand' float32['batch', 133]"),
    ],
)
def test_cand_columns_that_differ_from_the_profile_are_refused(
    checkpoints, dataset, tmp_path, capsys, change, expected
):
    path = _untrained(checkpoints, tmp_path, dataset, **change)
    assert export_with_ranker(checkpoints, path, tmp_path / "out", "--check-only") == 2
    err = capsys.readouterr().err
    assert expected in err, err
    # The package side, file:line and the function that builds cand.
    assert "product.sd:" in err and "rank-profile ranking_features: function cand" in err


def test_missing_history_codes_are_refused(checkpoints, dataset, tmp_path, capsys):
    path = _untrained(checkpoints, tmp_path, dataset, history_features=("event",))
    assert export_with_ranker(checkpoints, path, tmp_path / "out", "--check-only") == 2
    err = capsys.readouterr().err
    assert f"manifest: {ENCODER} ({ENCODER}.onnx) has no input 'hist_hour'" in err
    assert 'onnx-model history_encoder_features: input "hist_hour"' in err


def test_history_length_that_differs_from_the_profile_is_refused(
    checkpoints, dataset, tmp_path, capsys
):
    """A 50-event ranker into the d1[100] profile, and a 100-event ranker into a package copy
    whose profile holds 80: both refused, naming the manifest and the .sd line."""
    path = _untrained(checkpoints, tmp_path, dataset, history_len=50)
    assert export_with_ranker(checkpoints, path, tmp_path / "out", "--check-only") == 2
    err = capsys.readouterr().err
    assert f"manifest: {ENCODER} ({ENCODER}.onnx) input 'hist' accepts at most 50 on axis 1" in err
    assert "rank-profile ranking_features: onnx-model history_encoder_features" in err
    assert "query(hist) tensor<float>(d0[1],d1[100]) sends 100" in err

    package = package_copy(tmp_path)
    sd = package / "schemas" / "product.sd"
    sd.write_text(sd.read_text().replace("d1[100]", "d1[80]"))
    path = _untrained(checkpoints, tmp_path, dataset)
    argv = ["--check-only", "--package", str(package)]
    assert export_with_ranker(checkpoints, path, tmp_path / "out2", *argv) == 2
    err = capsys.readouterr().err
    assert f"input 'hist' reads {LENGTH} events on axis 1 (ranker.history_length)" in err
    assert "query(hist) tensor<float>(d0[1],d1[80]) holds 80" in err


def test_cand_codes_map_unknown_ids_to_the_reserved_row():
    """Index + 1 for a known id; -1, NaN-free out-of-range and fractional noise land where
    the scorer's table says (0 = unknown)."""
    config = tiny_ranker_config(cand_codes=("seller",))
    ranker = Ranker(config, torch.eye(4, 128), vocabularies={"seller": ("a", "b", "c")})
    table = ranker.scorer.codes[0]
    torch.nn.init.normal_(table.weight)
    cand = torch.zeros(5, 129)
    cand[:, 128] = torch.tensor([-1.0, 0.0, 2.0, 3.0, 1e6])
    state = torch.randn(5, config.state_dim)
    got = ranker.scorer(state, cand)
    projected = ranker.scorer.cand_proj(cand[:, :128])
    for row, index in enumerate([0, 1, 3, 0, 0]):
        c = projected[row] + table.weight[index]
        both = state[row] * c
        want = ranker.scorer.mlp(torch.cat([state[row], c, both])) + both.sum()
        assert torch.allclose(got[row], want, atol=1e-6)
    feats = code_vocabularies(
        type("M", (), {"sellers": pd.DataFrame({"seller_id": ["s2", "s1", None]})})(), ("seller",)
    )
    assert feats == {"seller": ("s1", "s2")}
    with pytest.raises(ValueError, match="needs its id map"):
        Ranker(config, torch.eye(4, 128))


def test_history_codes_match_the_training_codes():
    assert EVENT_TYPES == schema.EVENT_TYPES and DEVICES == schema.DEVICES
    codes = history_codes(
        ("event", "hour", "device", "location"),
        4,
        ["click", "purchase", "bogus"],
        [0, 23, None, 5],
        ["app", None, "desktop", "mobile"],
        ["north", "", "south", "east"],
        location_vocabulary=["east", "north", "south"],
        location_buckets=4,
    )
    assert codes["input.query(hist_event)"][0][:5] == [3.0, 6.0, 1.0, 1.0, 0.0]
    assert codes["input.query(hist_hour)"][0][:5] == [2.0, 25.0, 1.0, 7.0, 0.0]
    assert codes["input.query(hist_device)"][0][:5] == [5.0, 1.0, 3.0, 2.0, 0.0]
    # index % (buckets - 2) + 2: north 1 -> 3, south 2 -> 2, east 0 -> 2; "" unknown -> 1
    assert codes["input.query(hist_location)"][0][:5] == [3.0, 1.0, 2.0, 2.0, 0.0]
    assert len(codes["input.query(hist_event)"][0]) == 50
    with pytest.raises(ValueError, match="history feature 'colour'"):
        history_codes(("colour",), 0, [], [], [], [])


# ----- the engine's ranking_features profile against the PyTorch ranker ------------------------


def _search(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url + "/search/", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def _get(url: str, doc_id: str) -> dict:
    with urllib.request.urlopen(f"{url}/document/v1/user/user/docid/{doc_id}") as r:
        return json.loads(r.read())["fields"]


@pytest.fixture(scope="module")
def served(installed, dataset, tmp_path_factory):
    """The embedded engine on the package with the features ranker installed, fed."""
    out, package = installed
    engine = EngineProcess(package, tmp_path_factory.mktemp("features-engine") / "data")
    engine.wait_ready()
    report = feed(out, load_dataset(dataset), engine.url, types=("product", "user"), progress=False)
    assert not report.failures
    yield engine
    engine.stop()


@pytest.fixture(scope="module")
def long_user(installed, served) -> str:
    """A user whose document holds 100 history events with their context (the tiny
    marketplace's longest history has about a dozen): the full query(hist) d1[100]."""
    from vespa_app.client.vespa import VespaClient

    out, _ = installed
    manifest = Manifest.read(out)
    product_ids = json.loads((out / "product_ids.json").read_text())
    user_id = json.loads((out / "user_ids.json").read_text())[0]
    rng = np.random.default_rng(7)
    rows = rng.choice(len(product_ids), LENGTH, replace=False)
    ids = [product_ids[i] for i in rows]
    locations = [*manifest.ranker["locations"], ""]
    fields = {
        "history_product_ids": ids,
        "recent_product_ids": ids[:50],
        "recent_item_idx": [int(i) for i in rows],
        "recent_event_types": [str(v) for v in rng.choice(EVENT_TYPES[1:], LENGTH)],
        "recent_hours": [int(v) for v in rng.integers(-1, 24, LENGTH)],
        "recent_devices": [str(v) for v in rng.choice([*DEVICES, ""], LENGTH)],
        "recent_locations": [str(v) for v in rng.choice(locations, LENGTH)],
    }
    client = VespaClient(served.url, timeout=30.0)
    try:
        client.update_document("user", user_id, fields, create=True)
    finally:
        client.close()
    return user_id


@torch.no_grad()
def test_engine_ranking_features_matches_pytorch(
    installed, served, long_user, dataset, features_ranker_checkpoint
):
    """For USERS users: the engine's top HITS with `ranking_features` (history codes from the
    user document, cand built from attributes in the profile) equal the PyTorch ranker's order
    of the same candidates, with the same inputs (the fed popularity counts, freshness at query
    time), scores within TOLERANCE."""
    out, _ = installed
    market = load_dataset(dataset)
    engine = served
    manifest = Manifest.read(out)
    section = manifest.ranker

    ranker = load_ranker(features_ranker_checkpoint)
    data = split_dataset(market)
    product_ids = json.loads((out / "product_ids.json").read_text())
    assert list(data.items.ids) == product_ids
    row_of = {p: i for i, p in enumerate(product_ids)}
    # What the feeder wrote to attribute(popularity): positive events of the whole log.
    fed = positive_events(market)["product_id"].value_counts()
    ranker.bind(data, popularity=fed.reindex(product_ids).fillna(0).to_numpy())
    created = market.products.set_index("product_id")["created_at"]
    created = {p: created[p].timestamp() for p in product_ids}
    table = normalized(np.load(out / "product_embeddings.npy"))
    user_ids = json.loads((out / "user_ids.json").read_text())
    users = np.random.default_rng(1).choice(len(user_ids), USERS, replace=False)
    users = np.array([user_ids.index(long_user), *users[users != user_ids.index(long_user)]])
    contexts = ranker.request(data, "test", users, np.zeros((len(users), 1), np.int64)).ctx

    worst, reordered, longest = 0.0, 0, 0
    for user, ctx in zip(users, contexts, strict=True):
        doc = _get(engine.url, user_ids[user])
        recent = doc.get("recent_item_idx", [])
        longest = max(longest, len(recent))
        context = [doc.get(CONTEXT_FIELDS[n], []) for n in ("event", "hour", "device", "location")]
        codes = history_codes(
            section["history_features"],
            len(recent),
            *context,
            location_vocabulary=section["locations"],
            location_buckets=section["location_buckets"],
            length=LENGTH,
        )
        nn = f"{{targetHits:{HITS}, approximate:false}}nearestNeighbor(embedding, q_user)"
        body = {
            "yql": f"select * from product where {nn}",
            "ranking.profile": section["profile"],
            "input.query(q_user)": doc["embedding"]["values"],
            **ranking_inputs(recent, ctx.tolist(), LENGTH),
            **codes,
            "input.query(retrieval_weight)": section["retrieval_weight"],
            "hits": HITS,
            "ranking.globalPhase.rerankCount": HITS,
        }
        before = time.time()
        result = _search(engine.url, body)
        now = (before + time.time()) / 2
        hits = result["root"]["children"]
        assert result["root"]["fields"]["totalCount"] == HITS and len(hits) == HITS
        ids = [h["fields"]["product_id"] for h in hits]
        engine_scores = np.array([h["relevance"] for h in hits])

        # PyTorch on the same inputs: the encoder over hist + codes, the scorer over
        # cand = [normalised embedding, log10(1 + price), margin, log10(1 + popularity),
        # freshness at query time, seller and category index].
        inputs = [np.asarray(ranking_inputs(recent, ctx.tolist(), LENGTH)["input.query(hist)"])]
        inputs += [np.asarray(codes[f"input.query(hist_{n})"]) for n in section["history_features"]]
        hist, *feature_codes = (torch.from_numpy(a.astype(np.int64)) for a in inputs)
        state = ranker.encoder(hist, torch.from_numpy(ctx[None]), *feature_codes)
        rows = np.array([row_of[p] for p in ids])
        cand = ranker.cand_vectors(rows[None], np.array([now]))[0]
        assert np.abs(cand[:, :128].numpy() - table[rows]).max() < 1e-6
        sellers = market.products.set_index("product_id")["seller_id"]
        want_codes = [section["code_ids"]["seller"].index(sellers[p]) for p in ids]
        assert cand[:, 132].numpy().tolist() == want_codes
        model = ranker.scorer(state.expand(len(ids), -1), cand).squeeze(-1).numpy()
        fresh = np.array([max(1.0 - (now - created[p]) / MAX_AGE, 0.0) for p in ids])
        offline = model + FRESH_WEIGHT * fresh
        order = np.argsort(-offline, kind="stable")
        assert [ids[i] for i in order] == ids, f"user {user_ids[user]}: top {HITS} order differs"
        worst = max(worst, float(np.abs(engine_scores - offline).max()))
        assert worst <= TOLERANCE
        ann = [h["fields"]["matchfeatures"]["ann"] for h in hits]
        reordered += ann != sorted(ann, reverse=True)
    assert reordered == len(users)  # the ranker, not retrieval, ordered every list
    assert longest == LENGTH
    print(f"engine vs PyTorch, features ranker: {len(users)} users, max |diff| {worst:.2e}")


def test_pipeline_serves_the_features_profile(installed, served, long_user, monkeypatch):
    """from_export picks ranking_features and the history features from the manifest, sends
    the codes built from the user document, and add_to_history keeps the per-event context
    aligned with recent_item_idx."""
    from vespa_app.client.pipeline import RecommendationPipeline
    from vespa_app.client.vespa import VespaClient

    out, _ = installed
    manifest = Manifest.read(out)
    client = VespaClient(served.url, timeout=30.0)
    try:
        pipeline = RecommendationPipeline.from_export(client, out)
        _pipeline_checks(pipeline, client, manifest, out, long_user, monkeypatch)
    finally:
        client.close()


def _pipeline_checks(pipeline, client, manifest, out, user_id, monkeypatch):
    from vespa_app.client.pipeline import RecommendationContext

    config = pipeline.config
    assert config.ranking_profile == "ranking_features"
    assert config.history_features == FEATURES["history_features"]
    assert config.locations == tuple(manifest.ranker["locations"])
    sent = []
    search = client.search
    monkeypatch.setattr(
        client, "search", lambda body, **kw: sent.append(body) or search(body, **kw)
    )

    doc = client.get_document("user", user_id)
    context = RecommendationContext(hour=20, device="app")
    result = pipeline.recommend(user_id, 10, context)
    assert result.strategy == "personalized" and result.degraded is None
    ranked = [b for b in sent if b.get("ranking.profile") == "ranking_features"]
    assert ranked, "no ranking_features query was sent"
    want = history_codes(
        FEATURES["history_features"],
        len(doc["recent_item_idx"]),
        *(doc.get(CONTEXT_FIELDS[n], []) for n in ("event", "hour", "device", "location")),
        location_vocabulary=manifest.ranker["locations"],
        length=LENGTH,
    )
    assert config.history_len == LENGTH
    assert (
        ranked[0]["input.query(hist)"]
        == ranking_inputs(doc["recent_item_idx"], [0.0] * 16, LENGTH)["input.query(hist)"]
    )
    assert all(cell > 0 for cell in ranked[0]["input.query(hist)"][0])  # 100 real events
    for name, value in want.items():
        assert len(value[0]) == LENGTH and ranked[0][name] == value
    assert any(c > 1 for c in want["input.query(hist_event)"][0])  # real codes, not unknown

    product = result.product_ids[0]
    fields = pipeline.add_to_history(
        user_id, product, 2_000_000_000, "cart", hour=5, device="app", location="nowhere"
    )
    after = client.get_document("user", user_id)
    count = len(after["recent_item_idx"])
    for name, first in (("event", "cart"), ("hour", 5), ("device", "app")):
        values = after[CONTEXT_FIELDS[name]]
        assert len(values) == count and values[0] == first
        # The older events keep their values, one place further back.
        assert values[1 : len(doc["recent_item_idx"]) + 1][:5] == doc[CONTEXT_FIELDS[name]][:5]
    product_ids = json.loads((out / "product_ids.json").read_text())
    assert fields["recent_item_idx"][0] == product_ids.index(product)
    # The ranker's history keeps 100 products; exclusions and walk seeds their newest 50.
    assert after["history_product_ids"][0] == product and len(after["history_product_ids"]) <= 100
    assert after["recent_product_ids"] == after["history_product_ids"][:50]
    grew = product not in doc["history_product_ids"]
    assert count == min(len(doc["recent_item_idx"]) + grew, 100)
