"""Behaviour of the baselines: hand-checked numbers and the structure they must pick up."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.trainer.models.planted import cluster_hit_rate, planted_marketplace
from trainer.data.splits import split_dataset
from trainer.data.synthetic import generate
from trainer.models.baselines.bpr_mf import BPRMF, BPRMFConfig
from trainer.models.baselines.itemknn import ItemKNN, ItemKNNConfig
from trainer.models.baselines.mostpop import MostPop, MostPopConfig


@pytest.fixture(scope="module")
def planted():
    return split_dataset(planted_marketplace(num_users=120, num_items=40, events_per_user=8))


def hit_rate(recommend, data, stage: str, k: int = 10) -> float:
    """Share of ``stage`` targets found in the user's top-k (seen items excluded)."""
    targets = data.targets(stage)
    users = targets["user_idx"].to_numpy()
    top = recommend(users, k)
    return float((top == targets["item_idx"].to_numpy()[:, None]).any(axis=1).mean())


def model_hit_rate(model, data, stage: str = "test", k: int = 10) -> float:
    return hit_rate(lambda u, k: model.recommend(data, stage, u, k).numpy(), data, stage, k)


def random_hit_rate(data, stage: str = "test", k: int = 10) -> float:
    generator = torch.Generator().manual_seed(0)
    seen = data.seen_matrix(stage)

    def recommend(users, k):
        scores = torch.rand(len(users), data.num_items, generator=generator)
        rows, cols = seen[users].nonzero()
        scores[torch.as_tensor(rows), torch.as_tensor(cols)] = -torch.inf
        return torch.topk(scores, k, dim=1).indices.numpy()

    return hit_rate(recommend, data, stage, k)


def test_mostpop_counts_positive_history_before_the_stage(planted):
    model = MostPop(MostPopConfig(), planted.num_users, planted.num_items)
    model.fit(planted, progress=False)
    train = planted.positives(planted.train)["item_idx"].to_numpy()
    expected_valid = np.bincount(train, minlength=planted.num_items)
    with_valid = np.concatenate([train, planted.valid["item_idx"].to_numpy()])
    expected_test = np.bincount(with_valid, minlength=planted.num_items)
    users = np.array([0, 5])
    assert np.array_equal(model.score(planted, "valid", users)[1].numpy(), expected_valid)
    assert np.array_equal(model.score(planted, "test", users)[0].numpy(), expected_test)
    train_only = MostPop(MostPopConfig(stage_history=False), planted.num_users, planted.num_items)
    train_only.fit(planted, progress=False)
    assert np.array_equal(train_only.score(planted, "test", users)[0].numpy(), expected_valid)


def test_mostpop_s3rec_counting_includes_the_targets(planted):
    model = MostPop(MostPopConfig(include_targets=True), planted.num_users, planted.num_items)
    model.fit(planted, progress=False)
    everything = np.concatenate(
        [
            planted.positives(planted.train)["item_idx"].to_numpy(),
            planted.valid["item_idx"].to_numpy(),
            planted.test["item_idx"].to_numpy(),
        ]
    )
    expected = np.bincount(everything, minlength=planted.num_items)
    for stage in ("valid", "test"):
        assert np.array_equal(model.score(planted, stage, np.array([3]))[0].numpy(), expected)


def test_itemknn_similarity_is_cosine_of_co_occurrence(planted):
    model = ItemKNN(
        ItemKNNConfig(neighbours=planted.num_items), planted.num_users, planted.num_items
    )
    model.fit(planted, progress=False)
    x = planted.train_matrix().toarray().astype(np.float64)
    norms = np.sqrt(x.sum(axis=0))
    expected = (x.T @ x) / np.maximum(np.outer(norms, norms), 1e-12)
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(model.similarity.toarray(), expected, rtol=1e-5, atol=1e-7)


def test_itemknn_keeps_the_top_k_neighbours_with_shrinkage(planted):
    k, shrink = 3, 5.0
    model = ItemKNN(
        ItemKNNConfig(neighbours=k, shrink=shrink), planted.num_users, planted.num_items
    )
    model.fit(planted, progress=False)
    x = planted.train_matrix().toarray().astype(np.float64)
    norms = np.sqrt(x.sum(axis=0))
    full = (x.T @ x) / (np.outer(norms, norms) + shrink)
    np.fill_diagonal(full, 0.0)
    kept = model.similarity.toarray()
    assert ((kept > 0).sum(axis=1) <= k).all()
    for item in range(planted.num_items):
        row = kept[item]
        if (row > 0).any():
            # Every kept value is at least the k-th largest similarity of the full row.
            assert row[row > 0].min() >= np.sort(full[item])[-k] - 1e-6
            np.testing.assert_allclose(row[row > 0], full[item][row > 0], rtol=1e-5)


def test_itemknn_scores_test_stage_with_the_validation_event_as_history(planted):
    model = ItemKNN(ItemKNNConfig(neighbours=10), planted.num_users, planted.num_items)
    model.fit(planted, progress=False)
    user = int(planted.valid["user_idx"].iloc[0])
    valid_item = int(planted.valid["item_idx"].iloc[0])
    difference = model.score(planted, "test", np.array([user])) - model.score(
        planted, "valid", np.array([user])
    )
    expected = model.similarity[valid_item].toarray().ravel()
    np.testing.assert_allclose(difference[0].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_bprmf_selects_the_epoch_on_validation_and_logs_each_epoch(planted, caplog):
    config = BPRMFConfig(dim=16, epochs=6, batch_size=128, lr=0.02, patience=0)
    model = BPRMF(config, planted.num_users, planted.num_items)
    with caplog.at_level("INFO", logger="trainer"):
        report = model.fit(planted, progress=False)
    assert report.epochs == 6 and len(report.history) == 6
    assert all("valid_NDCG@20" in row for row in report.history)
    best = max(report.history, key=lambda row: row["valid_NDCG@20"])
    assert report.best_epoch == best["epoch"]
    assert report.history[-1]["loss"] < report.history[0]["loss"]
    assert sum("bprmf epoch" in record.getMessage() for record in caplog.records) == 6


def test_bprmf_item_bias_lives_in_the_embedding_space(planted, tmp_path):
    from trainer.models.base import load_checkpoint, save_checkpoint

    config = BPRMFConfig(dim=8, epochs=3, batch_size=128, lr=0.02, item_bias=True)
    model = BPRMF(config, planted.num_users, planted.num_items)
    model.fit(planted, progress=False)
    users = np.arange(planted.num_users)
    items = model.item_embeddings()
    assert items.shape == (planted.num_items, 9)
    assert items[:, -1].abs().sum() > 0  # the bias was learned
    scores = model.score(planted, "test", users)
    torch.testing.assert_close(model.user_embeddings(planted, "test")[users] @ items.T, scores)
    restored = load_checkpoint(save_checkpoint(model, planted, tmp_path / "bias.pt")).model
    assert torch.equal(restored.score(planted, "test", users), scores)


def test_bprmf_negatives_avoid_training_positives(planted):
    model = BPRMF(BPRMFConfig(), planted.num_users, planted.num_items)
    pairs = planted.train_matrix().tocoo()
    keys = np.sort(pairs.row.astype(np.int64) * planted.num_items + pairs.col)
    users = np.repeat(np.arange(planted.num_users), 50)
    negatives = model._sample_negatives(users, keys, np.random.default_rng(0))
    clashes = np.isin(users * np.int64(planted.num_items) + negatives, keys).mean()
    # Each user has ~8 of 40 items as positives; three re-draws leave about 0.2**4 clashes.
    assert clashes < 0.01
    assert len(np.unique(negatives)) > planted.num_items // 2


@pytest.mark.parametrize(
    "model",
    [
        ItemKNN(ItemKNNConfig(neighbours=10), 120, 40),
        BPRMF(BPRMFConfig(dim=16, epochs=15, batch_size=128, lr=0.02, patience=0), 120, 40),
    ],
    ids=["itemknn", "bprmf"],
)
def test_personalised_baselines_learn_the_planted_clusters(planted, model):
    model.fit(planted, progress=False)
    mostpop = MostPop(MostPopConfig(), planted.num_users, planted.num_items)
    mostpop.fit(planted, progress=False)
    users = np.arange(planted.num_users)
    own = cluster_hit_rate(model.recommend(planted, "test", users, 5).numpy(), users, 40)
    pop_own = cluster_hit_rate(mostpop.recommend(planted, "test", users, 5).numpy(), users, 40)
    assert own > 0.9 > pop_own
    assert model_hit_rate(model, planted) > model_hit_rate(mostpop, planted)


def test_purchased_items_are_not_recommended_back(planted):
    model = ItemKNN(ItemKNNConfig(), planted.num_users, planted.num_items)
    model.fit(planted, progress=False)
    history = planted.history("test")
    purchases = history[history["event"] == 4]  # EVENT_TYPES.index("purchase")
    users = np.unique(purchases["user_idx"].to_numpy())
    top = model.recommend(planted, "test", users, 10).numpy()
    for row, user in enumerate(users):
        bought = set(purchases.loc[purchases["user_idx"] == user, "item_idx"])
        assert not bought & set(top[row])


def test_baselines_beat_random_on_the_tiny_synthetic_marketplace():
    # A wider test window than the default temporal split: the tiny scale has only ~200 users,
    # and ~45 targets keep the comparison with chance from being a coin toss.
    market = generate("tiny", seed=0)
    data = split_dataset(market, "temporal", valid_fraction=0.1, test_fraction=0.3)
    chance = random_hit_rate(data, "test", k=20)
    models = [
        MostPop(MostPopConfig(), data.num_users, data.num_items),
        ItemKNN(ItemKNNConfig(), data.num_users, data.num_items),
        BPRMF(
            BPRMFConfig(dim=32, epochs=40, batch_size=128, lr=0.02, reg=1e-3, patience=0),
            data.num_users,
            data.num_items,
        ),
    ]
    for model in models:
        model.fit(data, progress=False)
        assert model_hit_rate(model, data, "test", k=20) > 2 * chance, model.name
