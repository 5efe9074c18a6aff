"""The middle-stage ranker: its inputs, training on the tiny marketplace, re-ranking gain over
retrieval order, ONNX export of both parts with onnxruntime parity, and persistence."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import torch

from trainer.data.interactions import event_code
from trainer.data.splits import split_dataset
from trainer.data.synthetic import generate
from trainer.evaluation.ranking import evaluation_users
from trainer.models.base import MODELS
from trainer.models.baselines.bpr_mf import BPRMF, BPRMFConfig
from trainer.models.ranker import (
    CONTEXT_INPUT,
    HISTORY_INPUT,
    SCORE_OUTPUT,
    STATE_OUTPUT,
    Ranker,
    RankerConfig,
    encoder_example,
    encoder_input_names,
    export_candidate_scorer,
    export_history_encoder,
    load_ranker,
    reference_score,
    reference_user_state,
    rerank_evaluation,
    save_ranker,
)
from trainer.ranking.features import CONTEXT_DIM, code_vocabularies, context_vectors
from trainer.ranking.samples import HistoryIndex, history_events, impression_samples

HISTORY_LEN = 50
PARITY = [(1, 1), (1, 37), (1, HISTORY_LEN), (64, 1), (64, 37), (64, HISTORY_LEN)]


@pytest.fixture(scope="module")
def data():
    return split_dataset(generate("tiny", seed=0))


@pytest.fixture(scope="module")
def retrieval(data):
    torch.manual_seed(0)
    model = BPRMF(BPRMFConfig(dim=128, epochs=10, patience=0), data.num_users, data.num_items)
    model.fit(data, progress=False)
    return model


@pytest.fixture(scope="module")
def trained(data, retrieval):
    candidates = retrieval.recommend(data, "valid", np.arange(data.num_users), 100).numpy()
    ranker = Ranker(RankerConfig(epochs=4, patience=0), retrieval.item_embeddings())
    report = ranker.fit(data, candidates, progress=False)
    return ranker, report


def test_context_vector_layout():
    ctx = context_vectors(
        hour=np.array([6, -1]),
        device=np.array([2, -1]),
        location=np.array([9, -1]),
        gap_seconds=np.array([0, -1]),
    )
    assert ctx.shape == (2, CONTEXT_DIM) and ctx.dtype == np.float32
    np.testing.assert_allclose(ctx[0, :3], [1.0, 1.0, 0.0], atol=1e-7)  # 6 h: sin 1, cos 0
    assert ctx[0, 3:7].tolist() == [0, 0, 1, 0]
    assert ctx[0, 7] == 0.0  # log1p(0)
    assert ctx[0, 8:].tolist() == [0, 1, 0, 0, 0, 0, 0, 0]  # 9 % 8 = 1
    assert not ctx[1].any()  # everything unknown


def test_history_is_newest_first_strictly_before_the_request():
    frame = pd.DataFrame(
        {
            "user_idx": [0, 0, 0, 1],
            "item_idx": [4, 0, 7, 2],
            "timestamp": [10, 20, 30, 15],
            "event": [1, 4, 1, 1],
            "hour": [3, 4, -1, 5],
            "device": [0, 1, 2, 3],
            "location": [0, 0, 1, -1],
        }
    )
    index = HistoryIndex(frame, location_buckets=64)
    hist, feats, gap = index.before(
        np.array([0, 0, 1, 2]), np.array([30, 100, 15, 50]), 3, ("event", "hour", "location")
    )
    # item tokens are item_idx + 1; user 0 at t=30 sees the events at 10 and 20 only.
    assert hist.tolist() == [[1, 5, 0], [8, 1, 5], [0, 0, 0], [0, 0, 0]]
    assert feats["event"][1].tolist() == [3, 6, 3]
    assert feats["hour"][1].tolist() == [1, 6, 5]  # -1 (unknown) is code 1
    assert feats["location"][1].tolist() == [3, 2, 2]
    assert gap.tolist() == [10, 70, -1, -1]


def test_impression_labels_follow_engagement(data):
    index = HistoryIndex(history_events(data, data.train, None), 64)
    rng = np.random.default_rng(0)
    samples = impression_samples(data, index, 10, (), 3600, 10**9, rng)
    train = data.train
    engaged = train[train["event"] != event_code("impression")]
    pairs = {}
    for u, i, t in engaged[["user_idx", "item_idx", "timestamp"]].itertuples(index=False):
        pairs.setdefault((u, i), []).append(t)
    expected = [
        float(any(0 <= t - now <= 3600 for t in pairs.get((u, i), [])))
        for u, i, now in zip(samples.users, samples.items[:, 0], samples.now, strict=True)
    ]
    assert samples.labels[:, 0].tolist() == expected
    assert 0 < samples.labels.mean() < 0.5
    # The history of an impression never holds an event at or after it.
    assert len(samples) == (train["event"] == event_code("impression")).sum()


def test_padding_width_does_not_change_the_user_state():
    torch.manual_seed(0)
    ranker = Ranker(RankerConfig(history_features=("event", "hour")), torch.randn(30, 8))
    ranker.train_mode(False)
    inputs = encoder_example(ranker, 4, 6)
    wide = {k: np.pad(v, ((0, 0), (0, 10))) if k != CONTEXT_INPUT else v for k, v in inputs.items()}
    np.testing.assert_allclose(
        reference_user_state(ranker, inputs), reference_user_state(ranker, wide), atol=1e-5
    )
    empty = {k: np.zeros_like(v) if k != CONTEXT_INPUT else v for k, v in inputs.items()}
    assert np.isfinite(reference_user_state(ranker, empty)).all()


def test_reranking_beats_retrieval_order_on_tiny_marketplace(data, retrieval, trained):
    ranker, report = trained
    assert report["impression_samples"] > 0 and report["next_item_samples"] > 0
    losses = [line["loss"] for line in report["history"]]
    assert losses[-1] < losses[0]
    users = evaluation_users(data, "test")
    candidates = retrieval.recommend(data, "test", users, 200).numpy()
    result = rerank_evaluation(ranker, data, "test", users, candidates)
    assert result["ranker/NDCG@10"] > result["retrieval/NDCG@10"]
    assert result["ranker/Precision@10"] >= result["retrieval/Precision@10"]


def test_ranker_is_not_a_catalogue_recommender():
    assert "ranker" not in MODELS


def test_checkpoint_round_trip(data, trained, tmp_path):
    ranker, _ = trained
    users = evaluation_users(data, "test")[:5]
    items = np.tile(np.arange(20), (len(users), 1))
    before = ranker.score_candidates(data, "test", users, items)
    again = load_ranker(save_ranker(ranker, tmp_path / "ranker.pt"))
    np.testing.assert_array_equal(again.score_candidates(data, "test", users, items), before)


def _session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_onnx_parity_of_both_parts(data, trained, tmp_path):
    ranker, _ = trained
    encoder_path = export_history_encoder(ranker, tmp_path / "history_encoder.onnx")
    scorer_path = export_candidate_scorer(ranker, tmp_path / "ranker.onnx")
    for path in (encoder_path, scorer_path):
        model = onnx.load(str(path), load_external_data=False)
        assert not any(
            t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer
        )
        assert not list(tmp_path.glob("*.data"))
    encoder, scorer = _session(encoder_path), _session(scorer_path)
    assert [i.name for i in encoder.get_inputs()] == [HISTORY_INPUT, CONTEXT_INPUT]
    assert [i.type for i in encoder.get_inputs()] == ["tensor(int64)", "tensor(float)"]
    assert [o.name for o in encoder.get_outputs()] == [STATE_OUTPUT]
    assert [i.name for i in scorer.get_inputs()] == ["user_state", "cand"]
    assert [o.name for o in scorer.get_outputs()] == [SCORE_OUTPUT]
    rng = np.random.default_rng(1)
    for batch, length in PARITY:
        inputs = encoder_example(ranker, batch, length, seed=batch + length)
        state = encoder.run(None, inputs)[0]
        assert state.shape == (batch, 64)
        np.testing.assert_allclose(state, reference_user_state(ranker, inputs), atol=1e-4, rtol=0)
        items = rng.integers(0, ranker.num_items, batch)
        cand = ranker.cand_vectors(items, np.zeros(batch)).numpy()
        score = scorer.run(None, {"user_state": state, "cand": cand})[0]
        assert score.shape == (batch, 1)
        np.testing.assert_allclose(score, reference_score(ranker, state, cand), atol=1e-4, rtol=0)


def test_extended_interface_adds_named_inputs(data, retrieval, tmp_path):
    config = RankerConfig(
        history_features=("event", "device"), cand_features=("price", "popularity", "freshness")
    )
    ranker = Ranker(config, retrieval.item_embeddings())
    ranker.bind(data)
    assert encoder_input_names(config) == ["hist", "ctx", "hist_event", "hist_device"]
    assert ranker.cand_dim == 128 + 3
    path = export_history_encoder(ranker, tmp_path / "history_encoder.onnx")
    inputs = encoder_example(ranker, 3, 37)
    np.testing.assert_allclose(
        _session(path).run(None, inputs)[0],
        reference_user_state(ranker, inputs),
        atol=1e-4,
        rtol=0,
    )
    users = evaluation_users(data, "test")[:3]
    scores = ranker.score_candidates(data, "test", users, np.tile(np.arange(10), (3, 1)))
    assert scores.shape == (3, 10) and np.isfinite(scores).all()


def test_cand_codes_and_a_100_event_history(data, retrieval, tmp_path):
    """Seller and category codes as cand columns (the index in the training maps) and a history
    of 100: the ONNX scorer and encoder equal PyTorch at lengths 1, 37 and 100, the maps survive
    the checkpoint, and a residual ranker with codes still starts at retrieval order."""
    codes = code_vocabularies(data.market, ("seller", "category"))
    assert codes["seller"] == tuple(sorted(data.market.sellers["seller_id"]))
    config = RankerConfig(
        history_len=100, cand_features=("price",), cand_codes=("seller", "category")
    )
    ranker = Ranker(config, retrieval.item_embeddings(), vocabularies=codes)
    ranker.bind(data)
    assert ranker.cand_dim == 128 + 1 + 2
    cand = ranker.cand_vectors(np.arange(data.num_items), np.zeros(data.num_items)).numpy()
    sellers = data.market.products["seller_id"].tolist()
    assert cand[:, 129].tolist() == [codes["seller"].index(s) for s in sellers]
    encoder = _session(export_history_encoder(ranker, tmp_path / "e.onnx"))
    scorer = _session(export_candidate_scorer(ranker, tmp_path / "s.onnx"))
    for batch, length in [(1, 1), (64, 37), (64, 100)]:
        inputs = encoder_example(ranker, batch, length)
        state = reference_user_state(ranker, inputs)
        np.testing.assert_allclose(encoder.run(None, inputs)[0], state, atol=1e-4, rtol=0)
        rows = np.arange(batch) % data.num_items
        feed = {"user_state": state, "cand": cand[rows]}
        want = reference_score(ranker, state, cand[rows])
        np.testing.assert_allclose(scorer.run(None, feed)[0], want, atol=1e-4, rtol=0)
    path = save_ranker(ranker, tmp_path / "r.pt")
    assert load_ranker(path).vocabularies == codes
    residual = Ranker(
        config,
        retrieval.item_embeddings(),
        user_embeddings=retrieval.user_embeddings(data, "test"),
        vocabularies=codes,
    )
    users = evaluation_users(data, "test")[:5]
    items = np.tile(np.arange(20), (5, 1))
    scores = residual.score_candidates(data, "test", users, items)
    want = residual.config.retrieval_weight * residual.retrieval_cosine(users, items).numpy()
    np.testing.assert_allclose(scores, want, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="cand code 'brand'"):
        RankerConfig(cand_codes=("brand",))


def test_bad_configuration_is_named():
    with pytest.raises(ValueError, match="history feature 'colour'"):
        RankerConfig(history_features=("colour",))
    with pytest.raises(ValueError, match="cand feature 'shine'"):
        RankerConfig(cand_features=("shine",))
    ranker = Ranker(RankerConfig(), torch.randn(5, 4))
    with pytest.raises(ValueError, match="data has 300 items, the embeddings 5"):
        ranker.fit(split_dataset(generate("tiny", seed=0)))


# ----- the residual on retrieval ----------------------------------------------------------------


def _cosine_order(ranker, users, items):
    cos = ranker.retrieval_cosine(users, items).numpy()
    return np.take_along_axis(items, np.argsort(-cos, axis=1, kind="stable"), axis=1)


def test_untrained_residual_ranker_keeps_retrieval_order(data, retrieval):
    torch.manual_seed(0)
    users = evaluation_users(data, "test")
    user_vectors = retrieval.user_embeddings(data, "test")
    ranker = Ranker(RankerConfig(), retrieval.item_embeddings(), user_embeddings=user_vectors)
    candidates = retrieval.recommend(data, "test", users, 100).numpy()
    scores = ranker.score_candidates(data, "test", users, candidates)
    # The scorer starts at exactly 0, so the score is w * cos(retrieval user, candidate).
    expected = ranker.config.retrieval_weight * ranker.retrieval_cosine(users, candidates).numpy()
    np.testing.assert_allclose(scores, expected, atol=1e-6, rtol=0)
    reranked = np.take_along_axis(candidates, np.argsort(-scores, axis=1, kind="stable"), axis=1)
    np.testing.assert_array_equal(reranked, _cosine_order(ranker, users, candidates))
    state = np.zeros((3, 64), np.float32)
    cand = ranker.cand_vectors(np.arange(3), np.zeros(3)).numpy()
    assert not reference_score(ranker, state + 1.0, cand).any()


def test_residual_ranker_on_validation_targets_beats_retrieval_order(data, retrieval, tmp_path):
    torch.manual_seed(0)
    valid_candidates = retrieval.recommend(data, "valid", np.arange(data.num_users), 100).numpy()
    config = RankerConfig(
        epochs=3, patience=0, target_stage="valid", impression_weight=0.0, hard_share=1.0,
        valid_users=len(evaluation_users(data, "valid")) // 3,
    )  # fmt: skip
    ranker = Ranker(
        config, retrieval.item_embeddings(), user_embeddings=retrieval.user_embeddings(data, "test")
    )
    report = ranker.fit(data, valid_candidates, progress=False)
    assert report["impression_samples"] == 0 and report["next_item_samples"] > 0
    users = evaluation_users(data, "test")
    candidates = retrieval.recommend(data, "test", users, 200).numpy()
    result = rerank_evaluation(ranker, data, "test", users, candidates)
    cosine = _cosine_order(ranker, users, candidates)
    retrieval_only = rerank_evaluation(ranker, data, "test", users, cosine)["retrieval/NDCG@10"]
    assert result["ranker/NDCG@10"] >= retrieval_only
    # The learned weight travels with the checkpoint; scores round-trip exactly.
    again = load_ranker(save_ranker(ranker, tmp_path / "residual.pt"))
    assert again.residual and again.weight == ranker.weight
    np.testing.assert_array_equal(
        again.score_candidates(data, "test", users[:5], candidates[:5]),
        ranker.score_candidates(data, "test", users[:5], candidates[:5]),
    )


def test_residual_configuration_errors_are_named(retrieval, data):
    with pytest.raises(ValueError, match="target_stage 'test'"):
        RankerConfig(target_stage="test")
    with pytest.raises(ValueError, match="user embeddings are 4-d, item embeddings 128-d"):
        Ranker(RankerConfig(), retrieval.item_embeddings(), user_embeddings=torch.randn(3, 4))


def test_candidate_popularity_can_be_the_served_counts(data, retrieval):
    """bind(popularity=...) scores with the counts a serving system holds (the fed
    attribute(popularity)) instead of the training events'; other columns are unchanged."""
    config = RankerConfig(cand_features=("price", "popularity"))
    ranker = Ranker(config, retrieval.item_embeddings())
    items = np.arange(min(5, data.num_items))[None]
    ranker.bind(data)
    trained_cols = ranker.cand_vectors(items, np.zeros(1))[0, :, -2:].numpy()
    assert np.allclose(trained_cols[:, 1], np.log10(1 + data.item_popularity()[items[0]]))
    counts = np.arange(data.num_items, dtype=np.float64) * 10
    ranker.bind(data, popularity=counts)
    served = ranker.cand_vectors(items, np.zeros(1))[0, :, -2:].numpy()
    assert np.allclose(served[:, 0], trained_cols[:, 0])  # price unchanged
    assert np.allclose(served[:, 1], np.log10(1 + counts[items[0]]))
    with pytest.raises(ValueError, match="popularity has shape"):
        ranker.bind(data, popularity=counts[:-1])
