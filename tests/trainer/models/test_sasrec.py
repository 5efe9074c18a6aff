"""SASRec: shapes, causality, padding invariance, the three losses, long-history attention, and
learning a planted next-item rule that popularity cannot capture."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.trainer.models.sequence_data import cycle_marketplace
from trainer.data.splits import split_dataset
from trainer.evaluation import evaluate
from trainer.models.attention import SelfAttention
from trainer.models.baselines.mostpop import MostPop, MostPopConfig
from trainer.models.sasrec import SASRec, SASRecConfig
from trainer.models.sequences import feature_vocab_sizes

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


@pytest.mark.parametrize("attention", ["full", "local"])
def test_future_tokens_do_not_change_earlier_outputs(attention):
    config = SASRecConfig(max_len=40, dim=16, attention=attention, block_size=4, features=FEATURES)
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


@pytest.mark.parametrize("attention", ["full", "local"])
def test_left_padding_does_not_change_the_user_vector(attention):
    config = SASRecConfig(max_len=30, dim=16, attention=attention, block_size=4, features=FEATURES)
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
