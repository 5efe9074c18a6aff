"""Sampled protocols: fixed negatives against a hand computation, and the negative sampler."""

from __future__ import annotations

import numpy as np
import pytest

from tests.trainer.evaluation.hand import SCORES, FixedScores, hand_data
from trainer.evaluation.sampled import rank_hits, sample_negatives, sampled_ranks

# Scores (hand.py): u0 target p4 = 5; u1 target p7 = 0.5; u3 target p2 = 7.
FIXED = {
    0: np.array([5, 6, 7]),  # 7.5, 4, 3: one >= 5 -> rank 2
    1: np.array([0, 1, 7]),  # p7 is u1's own target: dropped; 6, 1 >= 0.5 -> rank 3
    3: np.array([4, 7, 0]),  # p4 ties at 7 (counts against), p0 9 -> rank 3
}


@pytest.fixture(scope="module")
def data():
    return hand_data()


def test_fixed_negatives_ranks_with_pessimistic_ties(data):
    ranked = sampled_ranks(FixedScores(SCORES), data, "test", FIXED)
    assert ranked.users.tolist() == [0, 1, 3]
    assert ranked.items.tolist() == [4, 7, 2]
    assert ranked.ranks.tolist() == [2, 3, 3]
    assert ranked.candidates.tolist() == [4, 3, 4]


def test_all_equal_scores_get_the_worst_rank(data):
    ranked = sampled_ranks(FixedScores(SCORES * 0), data, "test", FIXED)
    assert ranked.ranks.tolist() == [4, 3, 4]  # every negative ties, every tie counts against


def test_rank_hits():
    assert rank_hits(np.array([2, 5, 1]), 3).tolist() == [
        [False, True, False],
        [False, False, False],
        [True, False, False],
    ]


def test_missing_negatives_name_the_user(data):
    with pytest.raises(KeyError, match="no negatives for user 'u1'"):
        sampled_ranks(FixedScores(SCORES), data, "test", {0: FIXED[0], 3: FIXED[3]})


def test_uniform_sampling_avoids_history_and_targets_and_is_seeded(data):
    first = sample_negatives(data, "test", num_negatives=2, seed=7)
    again = sample_negatives(data, "test", num_negatives=2, seed=7)
    assert sorted(first) == [0, 1, 3]
    seen = data.seen_matrix("test")
    targets = {0: 4, 1: 7, 3: 2}
    for user, items in first.items():
        assert len(items) == 2 and len(set(items.tolist())) == 2
        assert not seen[user, items].toarray().any()
        assert targets[user] not in items
        assert items.tolist() == again[user].tolist()
    # u3 may only draw from p4 and p7 (p0-p3, p5, p6 seen; p2 is its target).
    assert sorted(first[3].tolist()) == [4, 7]


def test_popularity_sampling_never_draws_items_without_training_events(data):
    # Training popularity: p0 2, p1 3, p2 3, p3 1, p4 0, p5 1, p6 1, p7 0. u0 may draw p5, p6.
    popularity = data.item_popularity()
    assert popularity.tolist() == [2, 3, 3, 1, 0, 1, 1, 0]
    negatives = sample_negatives(
        data, "test", num_negatives=2, sampling="popularity", seed=3, users=np.array([0, 1])
    )
    assert sorted(negatives[0].tolist()) == [5, 6]
    assert (popularity[negatives[1]] > 0).all()
    # u3 could only draw p4 and p7, which have no training events.
    with pytest.raises(ValueError, match="user 'u3' has only 0 items"):
        sample_negatives(data, "test", num_negatives=1, sampling="popularity")


def test_sampling_too_many_negatives_is_an_error(data):
    # u3 has only 2 drawable items (p4, p7).
    with pytest.raises(ValueError, match="user 'u3' has only 2 items to draw 3 uniform negatives"):
        sample_negatives(data, "test", num_negatives=3)
