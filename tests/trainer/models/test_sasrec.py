"""SASRec: shapes, causality, padding invariance, the three losses, long-history attention, and
learning a planted next-item rule that popularity cannot capture."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.trainer.models.sequence_data import cycle_marketplace
from tests.trainer.models.test_export import check_parity
from trainer.data.splits import split_dataset
from trainer.evaluation import evaluate
from trainer.evaluation.sampled import sampled_ranks
from trainer.models.attention import SelfAttention
from trainer.models.baselines.mostpop import MostPop, MostPopConfig
from trainer.models.export import export_user_encoder
from trainer.models.sasrec import SASRec, SASRecConfig
from trainer.models.sequences import feature_vocab_sizes, request_context

FEATURES = ("event", "gap", "hour", "device", "location")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one thread avoids oversubscription stalls on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data():
    return split_dataset(cycle_marketplace(num_users=150, num_items=24, noise=0.05, seed=0))


def random_tokens(model, batch, length, pad, seed=0):
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, model.num_items + 1, (batch, length), generator=g)
    items[:, :pad] = 0
    sizes = feature_vocab_sizes(model.config.location_buckets)
    features = {
        f: torch.randint(1, sizes[f], (batch, length), generator=g).masked_fill(items == 0, 0)
        for f in model.config.features
    }
    return items, features


def test_hidden_states_have_sequence_shape():
    model = SASRec(SASRecConfig(max_len=12, dim=16, features=FEATURES), 10, 30)
    items, features = random_tokens(model, 3, 12, pad=4)
    model.network.eval()
    assert model.network(items, features).shape == (3, 12, 16)
    assert model.network.user_vector(items, features).shape == (3, 16)
    assert model.item_embeddings().shape == (30, 16)


@pytest.mark.parametrize(
    ("attention", "layout"), [("full", "post_ln"), ("local", "post_ln"), ("full", "paper")]
)
def test_future_tokens_do_not_change_earlier_outputs(attention, layout):
    config = SASRecConfig(
        max_len=40, dim=16, attention=attention, block_size=4, features=FEATURES, layout=layout
    )
    model = SASRec(config, 10, 50)
    model.network.eval()
    items, features = random_tokens(model, 2, 40, pad=3)
    changed = items.clone()
    changed[:, 25:] = (changed[:, 25:] % 50) + 1
    with torch.no_grad():
        before = model.network(items, features)
        after = model.network(changed, features)
    torch.testing.assert_close(before[:, :25], after[:, :25], rtol=0, atol=1e-6)
    assert not torch.allclose(before[:, 25:], after[:, 25:])


@pytest.mark.parametrize(
    ("attention", "layout"), [("full", "post_ln"), ("local", "post_ln"), ("full", "paper")]
)
def test_left_padding_does_not_change_the_user_vector(attention, layout):
    config = SASRecConfig(
        max_len=30, dim=16, attention=attention, block_size=4, features=FEATURES, layout=layout
    )
    model = SASRec(config, 10, 50)
    model.network.eval()
    items, features = random_tokens(model, 1, 30, pad=21)  # 9 real tokens
    with torch.no_grad():
        full = model.network.user_vector(items, features)
        short = model.network.user_vector(
            items[:, 21:], {k: v[:, 21:] for k, v in features.items()}
        )
        other = model.network.user_vector(
            items[:, 14:], {k: v[:, 14:] for k, v in features.items()}
        )
    torch.testing.assert_close(full, short, rtol=0, atol=1e-5)
    torch.testing.assert_close(full, other, rtol=0, atol=1e-5)


def test_local_attention_equals_full_attention_within_two_blocks():
    torch.manual_seed(0)
    full = SelfAttention(16, 2, 0.0, "full").eval()
    local = SelfAttention(16, 2, 0.0, "local", block_size=8).eval()
    local.load_state_dict(full.state_dict())
    x = torch.randn(3, 16, 16)
    valid = torch.arange(16)[None, :] >= torch.tensor([[0], [5], [12]])
    for causal in (True, False):
        torch.testing.assert_close(local(x, valid, causal), full(x, valid, causal))
    # Beyond two blocks the distant keys are summarised: close but not equal.
    x = torch.randn(2, 40, 16)
    valid = torch.ones(2, 40, dtype=torch.bool)
    assert not torch.allclose(local(x, valid, True), full(x, valid, True))


@pytest.mark.parametrize("loss", ["bce", "ce", "sampled"])
def test_each_loss_trains_and_lowers_itself(data, loss):
    small = split_dataset(cycle_marketplace(num_users=40, num_items=24, seed=1))
    config = SASRecConfig(
        max_len=12,
        dim=16,
        epochs=4,
        batch_size=32,
        loss=loss,
        negatives=16,
        patience=0,
        lr=3e-3,
        eval_every=2,
    )
    model = SASRec(config, small.num_users, small.num_items)
    data = small
    report = model.fit(data, progress=False)
    losses = [line["loss"] for line in report.history]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert report.best_epoch is not None


def test_scores_use_the_history_before_the_stage(data):
    model = SASRec(SASRecConfig(max_len=12, dim=16), data.num_users, data.num_items)
    users = np.unique(data.test["user_idx"].to_numpy())[:5]
    valid, test = model.score(data, "valid", users), model.score(data, "test", users)
    assert valid.shape == test.shape == (5, data.num_items)
    # The test history adds the validation target, so the newest token differs.
    assert not torch.allclose(valid, test)


def test_learns_a_planted_next_item_rule_better_than_mostpop(data):
    config = SASRecConfig(
        max_len=12,
        dim=32,
        epochs=40,
        batch_size=32,
        lr=3e-3,
        dropout=0.1,
        features=FEATURES,
        patience=0,
    )
    model = SASRec(config, data.num_users, data.num_items)
    model.fit(data, progress=False)
    pop = MostPop(MostPopConfig(), data.num_users, data.num_items)
    pop.fit(data, progress=False)
    ours = evaluate(model, data, "test", ks=(1, 10))
    base = evaluate(pop, data, "test", ks=(1, 10))
    assert ours["HR@1"] > 0.7, ours["HR@1"]
    assert ours["NDCG@10"] > base["NDCG@10"] + 0.4


def test_bad_configs_are_rejected():
    with pytest.raises(ValueError, match="loss 'hinge' unknown"):
        SASRec(SASRecConfig(loss="hinge"), 2, 3)
    with pytest.raises(ValueError, match="unknown feature 'weather'"):
        SASRec(SASRecConfig(features=("weather",)), 2, 3)
    with pytest.raises(ValueError, match="attention 'sparse' unknown"):
        SASRec(SASRecConfig(attention="sparse"), 2, 3)
    with pytest.raises(ValueError, match="layout 'pre_ln' unknown"):
        SASRec(SASRecConfig(layout="pre_ln"), 2, 3)
    with pytest.raises(ValueError, match="layout 'paper' supports attention 'full' only"):
        SASRec(SASRecConfig(layout="paper", attention="local"), 2, 3)


def test_fit_rejects_data_of_another_size(data):
    model = SASRec(SASRecConfig(max_len=5, dim=8, epochs=1), data.num_users, data.num_items + 1)
    with pytest.raises(ValueError, match="built for"):
        model.fit(data, progress=False)


def test_fit_without_any_training_sequence_is_a_clear_error(data):
    model = SASRec(SASRecConfig(max_len=5, dim=8, history_events=("impression",)), 150, 24)
    with pytest.raises(ValueError, match="no training sequence"):
        model.fit(data, progress=False)


def test_request_context_lets_the_model_use_the_requests_device():
    # The step to the next item depends on the device of the request (+1 mobile, +2 desktop).
    data = split_dataset(cycle_marketplace(num_users=150, num_items=24, device_step=True, seed=2))
    base = dict(max_len=12, dim=32, epochs=25, batch_size=32, lr=5e-3, dropout=0.1, patience=0)
    scores = {}
    for query in ((), ("device", "hour", "gap")):
        config = SASRecConfig(**base, query_features=query, eval_every=25)
        model = SASRec(config, data.num_users, data.num_items)
        model.fit(data, progress=False)
        scores[query] = evaluate(model, data, "test", ks=(1,))["HR@1"]
    blind, told = scores[()], scores[("device", "hour", "gap")]
    assert blind < 0.75, blind  # without the request's device: at best a coin flip between two
    assert told > blind + 0.2, (told, blind)


def test_user_vectors_of_length_sorted_trimmed_batches_equal_full_width(data, monkeypatch):
    # Small score batches, so several batches of different widths are cut.
    monkeypatch.setattr("trainer.models.sequential.SCORE_BATCH", 7)
    config = SASRecConfig(max_len=12, dim=16, features=FEATURES, query_features=("device",))
    model = SASRec(config, data.num_users, data.num_items)
    users = np.arange(data.num_users)[::-1].copy()  # unsorted on purpose
    tokens = model.history_tokens(data, "valid", users)
    lengths = (tokens.items > 0).sum(1)
    assert len(np.unique(lengths)) > 3 and lengths.max() == 12
    context = request_context(data, "valid", users)
    model.network.eval()
    with torch.no_grad():
        want = model.network.user_vector(
            torch.as_tensor(tokens.items),
            model.feature_tensors(tokens),
            model.query_tensors(context),
        )
    got = model.user_vectors(data, "valid", users)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("loss", ["bce", "sampled"])
def test_negative_losses_equal_separate_positive_and_negative_lookups(data, loss):
    model = SASRec(SASRecConfig(max_len=12, dim=16, loss=loss, negatives=8), 150, 24)
    batch = {k: v[:16] for k, v in model.training_examples(data).items()}
    model.network.eval()  # no dropout: the generator alone draws the negatives
    state = model.generator.get_state()
    got = model.loss(batch)
    model.generator.set_state(state)
    hidden = model.network(batch["items"], {})
    where = batch["targets"] > 0
    h, target = hidden[where], batch["targets"][where]
    table = model.network.encoder.item.weight
    if loss == "bce":
        negative = model._uniform(target.shape)
        clash = negative == target
        negative[clash] = negative[clash] % model.num_items + 1
        assert not (negative == target).any()
        pos, neg = (h * table[target]).sum(-1), (h * table[negative]).sum(-1)
        want = -F.logsigmoid(pos).mean() - F.logsigmoid(-neg).mean()
    else:
        negative = model._uniform((8,))
        logits = torch.cat([(h * table[target]).sum(-1, keepdim=True), h @ table[negative].T], 1)
        logits[:, 1:] = logits[:, 1:].masked_fill(negative[None] == target[:, None], -torch.inf)
        want = -torch.log_softmax(logits, dim=1)[:, 0].mean()
    torch.testing.assert_close(got, want)


def test_full_validation_ranks_the_target_among_unseen_items(data):
    model = SASRec(SASRecConfig(max_len=12, dim=16), data.num_users, data.num_items)
    users = model._validation_users(data)
    got = model._validate(data, users)
    scores = model.score(data, "valid", users)
    seen = torch.as_tensor(data.seen_matrix("valid")[users].toarray() > 0)
    target = data.valid.set_index("user_idx").loc[users, "item_idx"].to_numpy()
    target = torch.as_tensor(target.copy())
    own = scores[torch.arange(len(users)), target]
    rank = (scores.masked_fill(seen, -torch.inf) > own[:, None]).sum(1).numpy()
    assert got["valid_hr@10"] == pytest.approx((rank < 10).mean())
    assert got["valid_ndcg@10"] == pytest.approx(
        np.where(rank < 10, 1 / np.log2(rank + 2.0), 0).mean()
    )


def test_sampled_validation_agrees_with_the_sampled_protocol(data):
    config = SASRecConfig(max_len=12, dim=16, valid_negatives=5, valid_users=0, seed=3)
    model = SASRec(config, data.num_users, data.num_items)
    users = model._validation_users(data)
    negatives = model._validation_negatives(data, users)
    assert negatives.shape == (len(users), 5)
    seen = data.seen_matrix("valid")[users].toarray() > 0
    target = data.valid.set_index("user_idx").loc[users, "item_idx"].to_numpy()
    picked = negatives.numpy()
    assert not np.take_along_axis(seen, picked, 1).any()
    assert not (picked == target[:, None]).any()
    drawn = dict(zip(users.tolist(), picked, strict=True))
    ranks = sampled_ranks(model, data, "valid", drawn).ranks
    for k in (3, 10):
        got = model._validate(data, users, negatives, k=k)
        assert got[f"valid_s5_hr@{k}"] == pytest.approx((ranks <= k).mean())
        assert got[f"valid_s5_ndcg@{k}"] == pytest.approx(
            np.where(ranks <= k, 1 / np.log2(ranks + 1.0), 0).mean()
        )


def test_fit_keeps_the_epoch_of_the_best_sampled_validation(data):
    config = SASRecConfig(
        max_len=12, dim=16, epochs=4, batch_size=32, lr=3e-3, valid_negatives=5, patience=0
    )
    model = SASRec(config, data.num_users, data.num_items)
    report = model.fit(data, progress=False)
    values = [line["valid_s5_ndcg@10"] for line in report.history]
    assert report.best_epoch == int(np.argmax(values)) + 1
    assert all("valid_ndcg@10" not in line for line in report.history)


def test_paper_layout_exports_with_parity(tmp_path):
    config = SASRecConfig(
        max_len=20, dim=16, layout="paper", features=FEATURES, query_features=("hour", "device")
    )
    model = SASRec(config, 5, 40)
    check_parity(model, export_user_encoder(model, tmp_path / "user_encoder.onnx", 2, 12))
