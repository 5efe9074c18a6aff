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
from trainer.models.sequences import feature_vocab_sizes, request_context, user_item_keys
from trainer.models.sequential import length_groups

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


LAYOUTS = [
    ("full", "post_ln", True),
    ("local", "post_ln", True),
    ("full", "paper", True),
    ("full", "paper", False),
]


def layout_model(max_len: int, attention: str, layout: str, attention_output: bool) -> SASRec:
    """A small SASRec with context features, in one of LAYOUTS' block layouts."""
    config = SASRecConfig(
        max_len=max_len,
        dim=16,
        attention=attention,
        block_size=4,
        features=FEATURES,
        layout=layout,
        attention_output=attention_output,
    )
    return SASRec(config, 10, 50)


@pytest.mark.parametrize(("attention", "layout", "attention_output"), LAYOUTS)
def test_future_tokens_do_not_change_earlier_outputs(attention, layout, attention_output):
    model = layout_model(40, attention, layout, attention_output)
    model.network.eval()
    items, features = random_tokens(model, 2, 40, pad=3)
    changed = items.clone()
    changed[:, 25:] = (changed[:, 25:] % 50) + 1
    with torch.no_grad():
        before = model.network(items, features)
        after = model.network(changed, features)
    torch.testing.assert_close(before[:, :25], after[:, :25], rtol=0, atol=1e-6)
    assert not torch.allclose(before[:, 25:], after[:, 25:])


@pytest.mark.parametrize(("attention", "layout", "attention_output"), LAYOUTS)
def test_left_padding_does_not_change_the_user_vector(attention, layout, attention_output):
    model = layout_model(30, attention, layout, attention_output)
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
    with pytest.raises(ValueError, match="attention_output=false needs layout 'paper'"):
        SASRec(SASRecConfig(attention_output=False), 2, 3)
    with pytest.raises(ValueError, match="batching 'random' unknown"):
        SASRec(SASRecConfig(batching="random"), 2, 3)
    with pytest.raises(ValueError, match="negative_exclusion 'seen' unknown"):
        SASRec(SASRecConfig(negative_exclusion="seen"), 2, 3)


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


def loss_and_states(model: SASRec, batch: dict[str, torch.Tensor]):
    """``model.loss(batch)`` without dropout, then the generator rewound to draw the same
    negatives again, and the states, targets and mask a reference loss needs."""
    model.network.eval()  # no dropout: the generator alone draws the negatives
    state = model.generator.get_state()
    loss = model.loss(batch)
    model.generator.set_state(state)
    hidden = model.network(batch["items"], {})
    where = batch["targets"] > 0
    return loss, hidden[where], batch["targets"][where], where


@pytest.mark.parametrize("loss", ["bce", "sampled"])
def test_negative_losses_equal_separate_positive_and_negative_lookups(data, loss):
    model = SASRec(SASRecConfig(max_len=12, dim=16, loss=loss, negatives=8), 150, 24)
    batch = {k: v[:16] for k, v in model.training_examples(data).items()}
    got, h, target, _ = loss_and_states(model, batch)
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


def test_paper_attention_has_no_output_layer_and_square_glorot_projections():
    config = SASRecConfig(max_len=10, dim=32, layout="paper", attention_output=False)
    state = SASRec(config, 5, 40).network.state_dict()
    assert not any(".attention.out." in key for key in state)
    with_out = SASRec(SASRecConfig(max_len=10, dim=32, layout="paper"), 5, 40)
    assert any(".attention.out." in key for key in with_out.network.state_dict())
    # Each of Q, K, V is Glorot-uniform for a (32, 32) matrix: bound sqrt(6 / 64).
    bound = (6 / 64) ** 0.5
    for part in state["encoder.blocks.0.attention.qkv.weight"].split(32):
        assert part.abs().max() <= bound
        assert part.abs().max() > 0.9 * bound  # not the fused matrix's smaller bound


def test_paper_attention_without_output_layer_exports_with_parity(tmp_path):
    config = SASRecConfig(
        max_len=20,
        dim=16,
        layout="paper",
        attention_output=False,
        features=FEATURES,
        query_features=("hour",),
    )
    model = SASRec(config, 5, 40)
    check_parity(model, export_user_encoder(model, tmp_path / "user_encoder.onnx", 2, 12))


def test_user_batching_draws_users_with_replacement_from_newest_windows():
    data = split_dataset(cycle_marketplace(num_users=30, min_len=5, max_len=30, seed=3))
    config = SASRecConfig(max_len=4, dim=8, batch_size=8, batching="users")
    model = SASRec(config, data.num_users, data.num_items)
    examples = model.training_examples(data)
    users = examples["user"].numpy()
    # One window per user: the newest, whose last position predicts the last training event.
    assert len(np.unique(users)) == len(users) == data.train["user_idx"].nunique()
    last = data.train.groupby("user_idx")["item_idx"].last()
    np.testing.assert_array_equal(examples["targets"][:, -1].numpy(), last.loc[users] + 1)
    lengths = (examples["items"] > 0).sum(1)
    batches = model.epoch_batches(lengths)
    assert len(batches) == len(users) // 8
    rows = torch.cat(batches)
    assert all(len(b) == 8 for b in batches) and rows.min() >= 0 and rows.max() < len(users)
    # Drawn with replacement, unlike the length-bucketed permutation of the default.
    draws = torch.cat([torch.cat(model.epoch_batches(lengths)) for _ in range(20)])
    assert len(torch.unique(draws)) < len(draws)
    plain = SASRec(SASRecConfig(max_len=4, dim=8, batch_size=8), data.num_users, data.num_items)
    everything = plain.training_examples(data)
    assert len(everything["items"]) > len(users)
    once = torch.cat(plain.epoch_batches((everything["items"] > 0).sum(1)))
    assert sorted(once.tolist()) == list(range(len(everything["items"])))


def test_history_negatives_never_hit_a_training_item_of_their_user(data):
    # 24 items and 6 to 14 per user: about a third of uniform draws would hit the user's items.
    config = SASRecConfig(max_len=12, dim=8, loss="bce", negative_exclusion="history")
    model = SASRec(config, data.num_users, data.num_items)
    model.training_examples(data)
    owned = np.zeros((data.num_users, data.num_items + 1), dtype=bool)
    owned[data.train["user_idx"].to_numpy(), data.train["item_idx"].to_numpy() + 1] = True
    user = torch.arange(data.num_users).repeat_interleave(40)  # (P,)
    drawn = model._uniform(user.shape)
    assert owned[user.numpy(), drawn.numpy()].mean() > 0.2  # the check below is not vacuous
    negative = model.avoid_user_items(user, drawn)
    assert negative.shape == user.shape
    assert negative.min() >= 1 and negative.max() <= data.num_items
    assert not owned[user.numpy(), negative.numpy()].any()
    # Drawn items that were fine stay as they were.
    fine = ~torch.as_tensor(owned[user.numpy(), drawn.numpy()])
    torch.testing.assert_close(negative[fine], drawn[fine])
    keys = user_item_keys(data, data.num_items)
    assert len(keys) == len(np.unique(np.flatnonzero(owned)))


def test_bce_loss_with_history_negatives_uses_them(data):
    config = SASRecConfig(max_len=12, dim=16, loss="bce", negative_exclusion="history")
    model = SASRec(config, 150, 24)
    batch = {k: v[:16] for k, v in model.training_examples(data).items()}
    model.network.eval()
    state = model.generator.get_state()
    got = model.loss(batch)
    model.generator.set_state(state)
    hidden = model.network(batch["items"], {})
    where = batch["targets"] > 0
    h, target = hidden[where], batch["targets"][where]
    user = batch["user"][:, None].expand_as(batch["targets"])[where]
    negative = model.avoid_user_items(user, model._uniform(target.shape))
    table = model.network.encoder.item.weight
    pos, neg = (h * table[target]).sum(-1), (h * table[negative]).sum(-1)
    torch.testing.assert_close(got, -F.logsigmoid(pos).mean() - F.logsigmoid(-neg).mean())


def test_paper_code_options_train_together(data):
    small = split_dataset(cycle_marketplace(num_users=40, num_items=24, seed=1))
    config = SASRecConfig(
        max_len=12,
        dim=16,
        epochs=4,
        batch_size=16,
        lr=3e-3,
        loss="bce",
        layout="paper",
        attention_output=False,
        batching="users",
        negative_exclusion="history",
        patience=0,
        eval_every=2,
    )
    model = SASRec(config, small.num_users, small.num_items)
    report = model.fit(small, progress=False)
    losses = [line["loss"] for line in report.history]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert report.best_epoch is not None


def test_length_groups_of_random_users_give_the_same_loss(data):
    # Short and long histories mixed, as in a batch of users drawn at random.
    # (80 items: nobody owns the whole catalogue, so no negative falls back to the target rule.)
    data = split_dataset(
        cycle_marketplace(num_users=60, num_items=80, min_len=3, max_len=30, seed=4)
    )
    config = SASRecConfig(
        max_len=20, dim=16, loss="bce", batching="users", negative_exclusion="history"
    )
    model = SASRec(config, data.num_users, data.num_items)
    examples = model.training_examples(data)
    rows = torch.randperm(len(examples["items"]), generator=torch.Generator().manual_seed(0))
    batch = {k: v[rows[:40]] for k, v in examples.items()}
    lengths = (batch["items"] > 0).sum(1)
    assert lengths.min() < 5 and lengths.max() == 20
    groups = length_groups(batch, 16)
    assert [len(g["items"]) for g in groups] == [16, 16, 8]
    assert [g["items"].shape[1] for g in groups][-1] == 20 > groups[0]["items"].shape[1]
    grouped, h, target, where = loss_and_states(model, batch)
    user = batch["user"][:, None].expand_as(batch["targets"])[where]
    # Groups list positions shortest sequence first: draw the negatives in that order.
    order = torch.argsort(lengths, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    by_group = torch.argsort(rank[:, None].expand_as(batch["targets"])[where], stable=True)
    negative = torch.empty_like(target)
    negative[by_group] = model.avoid_user_items(user[by_group], model._uniform(target.shape))
    table = model.network.encoder.item.weight
    pos, neg = (h * table[target]).sum(-1), (h * table[negative]).sum(-1)
    want = -F.logsigmoid(pos).mean() - F.logsigmoid(-neg).mean()
    torch.testing.assert_close(grouped, want, rtol=1e-5, atol=1e-5)


def test_a_user_owning_the_whole_catalogue_does_not_stall_the_sampler():
    data = split_dataset(cycle_marketplace(num_users=10, num_items=6, min_len=14, seed=5))
    config = SASRecConfig(max_len=20, dim=8, loss="bce", negative_exclusion="history")
    model = SASRec(config, data.num_users, data.num_items)
    batch = model.training_examples(data)
    assert data.train.groupby("user_idx")["item_idx"].nunique().eq(6).all()
    negative = model.avoid_user_items(batch["user"], model._uniform(batch["user"].shape))
    assert negative.min() >= 1 and negative.max() <= 6  # gave up after the redraw rounds
    assert torch.isfinite(model.loss(batch))
