"""PinSAGE: item pairs, the hard-negative curriculum, learning, and inductive item embeddings."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from tests.trainer.graph.eventless import (
    assert_each_cluster_prefers_its_new_product,
    with_eventless_products,
)
from tests.trainer.models.inductive import grown_marketplace, nearest, recall_at
from tests.trainer.models.planted import planted_marketplace
from trainer.data.splits import split_dataset
from trainer.graph.priors import PriorWeights
from trainer.models.baselines.mostpop import MostPop, MostPopConfig
from trainer.models.pinsage import PinSAGE, PinSAGEConfig, item_pairs

CONFIG = PinSAGEConfig(
    dim=16,
    top_k=5,
    num_walks=10,
    inference_walks=30,
    batch_size=64,
    epochs=8,
    lr=0.01,
    hard_low=3,
    hard_high=12,
    hard_max=3,
    patience=0,
    threads=1,
)


@pytest.fixture(scope="module")
def planted():
    return split_dataset(planted_marketplace(num_users=80, num_items=40, events_per_user=8))


@pytest.fixture(scope="module")
def model(planted):
    model = PinSAGE(CONFIG, planted.num_users, planted.num_items)
    model.report = model.fit(planted, progress=False)
    return model


def test_item_pairs_are_consecutive_distinct_items_of_one_user(planted):
    pairs = item_pairs(planted)
    train = planted.positives(planted.train)
    sequences = train.groupby("user_idx")["item_idx"].apply(list)
    expected = set()
    for items in sequences:
        expected |= {(a, b) for a, b in itertools.pairwise(items) if a != b}
    assert set(map(tuple, pairs.T.tolist())) == expected


def test_curriculum_adds_hard_negatives_each_epoch(model):
    hard = [row["hard_negatives"] for row in model.report.history]
    assert hard == [min(CONFIG.hard_max, epoch) for epoch in range(len(hard))]
    assert all(0 < row["sample_share"] < 1 for row in model.report.history)


def test_hard_negatives_come_from_the_configured_ranks(model):
    rng = np.random.default_rng(0)
    queries = np.arange(10)
    drawn = model._hard_negatives(model.hard_band(), queries, 4, rng).reshape(10, 4)
    items = model.item_embeddings()
    for query, picks in zip(queries, drawn, strict=True):
        similarity = items @ items[query]
        ordered = torch.sort(similarity, descending=True).values
        # Within the similarity band of ranks [hard_low, hard_high) (ties make ranks ambiguous).
        picked = similarity[torch.from_numpy(picks)]
        assert bool((picked <= ordered[CONFIG.hard_low] + 1e-6).all())
        assert bool((picked >= ordered[CONFIG.hard_high - 1] - 1e-6).all())


def test_beats_mostpop_and_item_neighbours_share_the_cluster(model, planted):
    popular = MostPop(MostPopConfig(), planted.num_users, planted.num_items)
    popular.fit(planted, progress=False)
    assert recall_at(model, planted) > recall_at(popular, planted) + 0.1
    half = planted.num_items // 2
    same = [
        ((model.similar_items(item, k=5).numpy() < half) == (item < half)).mean()
        for item in range(planted.num_items)
    ]
    assert np.mean(same) >= 0.9


def test_new_product_gets_an_embedding_from_its_features(model):
    grown, new_item, _ = grown_marketplace()
    items = model.embed_items(grown, "test")
    assert items.shape == (grown.num_items, CONFIG.dim)
    assert torch.isfinite(items[new_item]).all()
    assert (nearest(items, new_item) < model.num_items // 2).mean() >= 0.8


def test_config_is_checked():
    with pytest.raises(ValueError, match="hard_low < hard_high"):
        PinSAGEConfig(hard_low=10, hard_high=5)
    with pytest.raises(RuntimeError, match="not trained"):
        PinSAGE(PinSAGEConfig(), 2, 2).item_embeddings()


def test_popularity_prior_adds_a_shrunk_popularity_term(model, planted):
    """score = cos(u, i) + w / (1 + n_u) * log1p(count_i) / max log1p(count)."""
    users = np.arange(planted.num_users)
    chosen = model.prior
    try:
        model.prior = PriorWeights()
        plain = model.score(planted, "test", users)
        model.prior = PriorWeights(popularity=0.5)
        with_prior = model.score(planted, "test", users)
    finally:
        model.prior = chosen
    events = planted.positives(planted.history("test"))
    counts = np.bincount(events["item_idx"].to_numpy(), minlength=planted.num_items)
    pop = np.log1p(counts) / np.log1p(counts).max()
    distinct = events.drop_duplicates(["user_idx", "item_idx"]).groupby("user_idx").size()
    n = np.minimum(distinct.reindex(users, fill_value=0).to_numpy(), CONFIG.history_len)
    expected = plain.numpy() + 0.5 / (1.0 + n)[:, None] * pop[None, :]
    np.testing.assert_allclose(with_prior.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_prior_weights_are_chosen_from_the_grids_and_kept_in_checkpoints(model, planted):
    assert model.prior.popularity in CONFIG.prior_grid
    assert min(CONFIG.cold_grid) <= model.prior.cold <= max(CONFIG.cold_grid)
    clone = PinSAGE(CONFIG, planted.num_users, planted.num_items)
    state = model.state_dict()
    clone.load_state_dict({**state, "prior_weight": 0.4, "cold_weight": 0.2})
    assert clone.prior == PriorWeights(0.4, 0.2)
    legacy = {k: v for k, v in state.items() if k not in ("prior_weight", "cold_weight")}
    clone.load_state_dict(legacy)
    assert clone.prior == PriorWeights()


def test_eventless_product_ranks_by_the_users_category(model, planted):
    """Two products with no events, one per cluster: with the cold prior on, users of cluster
    "a" (even users) rank the "a" one higher, users of cluster "b" the other."""
    data, new_a, new_b = with_eventless_products(planted)
    fresh = PinSAGE(CONFIG, data.num_users, data.num_items)
    fresh.load_state_dict({**model.state_dict(), "items": model.embed_items(data, "valid")})
    fresh.prior = PriorWeights(cold=1.0)
    scores = fresh.score(data, "test", np.arange(data.num_users))
    assert_each_cluster_prefers_its_new_product(scores, new_a, new_b)
