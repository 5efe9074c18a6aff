"""Sequence building: left padding, item shift, context codes, training windows and targets.

Expected values are worked out by hand from tests/trainer/data/builders.py: users u1, u2, u3 (rows
0, 1, 2), products p0..p4 (rows 0..4), events one hour apart from 2024-03-01 00:00 UTC:
u1 impression p0, click p0, purchase p1, cart p2, click p3; u2 click p0, favorite p4; u3 click p1.
Leave-one-out keeps u1's last positive (click p3) as test, cart p2 as validation.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.trainer.data.builders import marketplace
from tests.trainer.models.sequence_data import cycle_marketplace
from trainer.data.splits import split_dataset
from trainer.models.sequences import (
    GAP_BUCKETS,
    UNKNOWN,
    gap_bucket,
    request_context,
    training_sequences,
    training_windows,
    training_windows_with_users,
    user_item_keys,
    user_sequences,
)

ALL_EVENTS = ("impression", "click", "favorite", "cart", "purchase")


@pytest.fixture(scope="module")
def hand():
    return split_dataset(marketplace())


def test_user_sequences_are_left_padded_shifted_and_carry_context(hand):
    tokens = user_sequences(hand, "test", np.array([0, 1, 2]), max_len=4)
    # Positive history before test: u1 click p0, purchase p1, cart p2 (the validation target).
    np.testing.assert_array_equal(tokens.items, [[0, 1, 2, 3], [0, 0, 1, 5], [0, 0, 0, 2]])
    np.testing.assert_array_equal(
        tokens.event[0], [0, 1 + 2, 4 + 2, 3 + 2]
    )  # click, purchase, cart
    np.testing.assert_array_equal(tokens.hour[0], [0, 1 + 2, 2 + 2, 3 + 2])
    np.testing.assert_array_equal(tokens.device[0], [0, 1 + 2, 0 + 2, 1 + 2])  # desktop, mobile
    np.testing.assert_array_equal(tokens.location[0], [0, 2, 2, 2])  # 'es' is location 0
    # First event: no gap (bucket of 0 s); then 3600 s apart: floor(log2(3601)) = 11.
    np.testing.assert_array_equal(tokens.gap[0], [0, 2, 11 + 2, 11 + 2])


def test_user_sequences_keep_the_most_recent_events_and_serve_duplicates(hand):
    tokens = user_sequences(hand, "valid", np.array([0, 0]), max_len=2, events=ALL_EVENTS)
    # Training history of u1: impression p0, click p0, purchase p1 -> the last two.
    np.testing.assert_array_equal(tokens.items, [[1, 2], [1, 2]])
    np.testing.assert_array_equal(tokens.event[0], [1 + 2, 4 + 2])


def test_user_without_history_gets_padding_only(hand):
    data = split_dataset(marketplace())
    tokens = user_sequences(data, "valid", np.array([2]), max_len=3, events=("purchase",))
    assert not tokens.items.any() and not tokens.hour.any()


def test_unknown_event_name_is_an_error(hand):
    with pytest.raises(ValueError, match="unknown event type 'view'"):
        user_sequences(hand, "valid", np.array([0]), 3, events=("view",))


def test_gap_buckets_are_log_spaced_and_bounded():
    np.testing.assert_array_equal(
        gap_bucket(np.array([0, 1, 2, 3, 4, 7, 8])), [2, 3, 3, 4, 4, 5, 5]
    )
    assert gap_bucket(np.array([10**12]))[0] == GAP_BUCKETS + 1
    assert gap_bucket(np.array([-5]))[0] == UNKNOWN


def test_training_windows_pair_each_event_with_the_next_positive(hand):
    tokens, following = training_windows(hand, max_len=3, events=ALL_EVENTS)
    # u1 training: impression p0 -> click p0 -> purchase p1; u2: click p0 -> favorite p4.
    rows = {tuple(r) for r in np.concatenate([tokens.items, following.items], axis=1).tolist()}
    assert rows == {(0, 1, 1, 0, 1, 2), (0, 0, 1, 0, 0, 5)}
    # The following event's context rides along: u1's purchase p1 is at hour 2 on mobile.
    u1 = int(np.flatnonzero(following.items[:, -1] == 2)[0])
    assert following.hour[u1].tolist() == [0, 1 + 2, 2 + 2]
    assert following.event[u1].tolist() == [0, 1 + 2, 4 + 2]
    assert following.device[u1, -1] == 0 + 2


def test_non_positive_next_events_are_not_targets():
    data = split_dataset(cycle_marketplace(num_users=5, event_types=("purchase", "impression")))
    tokens, following = training_windows(data, max_len=20, events=ALL_EVENTS)
    targets = following.items
    impression = 0 + 2
    # A target sits at position t when token t + 1 is a purchase, never an impression.
    following = np.zeros_like(tokens.event)
    following[:, :-1] = tokens.event[:, 1:]
    inside = (following > 0) & (tokens.items > 0)
    assert not (targets[inside & (following == impression)]).any()
    assert (targets[inside & (following != impression)] > 0).all()


def test_long_histories_are_cut_so_every_target_appears_once():
    data = split_dataset(cycle_marketplace(num_users=30, min_len=5, max_len=30, seed=3))
    tokens, following = training_windows(data, max_len=4)
    targets = following.items
    train = data.train.sort_values("user_idx", kind="stable")
    counts = train.groupby("user_idx").size()
    assert (targets > 0).sum() == int((counts - 1).sum())
    expected = sorted(
        (int(a) + 1, int(b) + 1)
        for _, g in train.groupby("user_idx")
        for a, b in zip(g["item_idx"].to_numpy()[:-1], g["item_idx"].to_numpy()[1:], strict=True)
    )
    where = targets > 0
    assert (
        sorted(zip(tokens.items[where].tolist(), targets[where].tolist(), strict=True)) == expected
    )
    assert ((tokens.items > 0) | (targets == 0)).all()
    assert len(tokens) == int(np.ceil((counts - 1) / 4).sum())


def test_windows_know_their_user_newest_window_first():
    data = split_dataset(cycle_marketplace(num_users=30, min_len=5, max_len=30, seed=3))
    tokens, following, users = training_windows_with_users(data, max_len=4)
    plain_tokens, _ = training_windows(data, max_len=4)
    np.testing.assert_array_equal(tokens.items, plain_tokens.items)
    assert users.shape == (len(tokens),)
    assert (np.diff(users) >= 0).all()  # grouped by user
    train = data.train.sort_values("user_idx", kind="stable")
    for user, events in train.groupby("user_idx"):
        mine = np.flatnonzero(users == user)
        items = events["item_idx"].to_numpy() + 1
        # Every token of the user's windows is one of the user's training items ...
        assert np.isin(tokens.items[mine][tokens.items[mine] > 0], items).all()
        # ... and the first window ends at the second-to-last event, predicting the last.
        assert tokens.items[mine[0], -1] == items[-2]
        assert following.items[mine[0], -1] == items[-1]


def test_user_item_keys_mark_exactly_the_training_pairs(hand):
    keys = user_item_keys(hand, num_items=5, events=ALL_EVENTS)
    assert (np.diff(keys) > 0).all()
    # Training events (u2 and u3 have too few positives to be evaluated, so all theirs train):
    # u1 (row 0) p0 twice and p1; u2 (row 1) p0 and p4; u3 (row 2) p1. Item tokens are row + 1.
    assert keys.tolist() == [0 * 6 + 1, 0 * 6 + 2, 1 * 6 + 1, 1 * 6 + 5, 2 * 6 + 2]


def test_training_sequences_cover_every_training_event_once():
    data = split_dataset(cycle_marketplace(num_users=20, min_len=5, max_len=25, seed=1))
    tokens = training_sequences(data, max_len=6)
    assert (tokens.items > 0).sum() == len(data.train)
    # Windows are right-aligned: the newest column is never padding.
    assert (tokens.items[:, -1] > 0).all()


def test_request_context_is_the_first_target_event_and_its_gap(hand):
    codes = request_context(hand, "test", np.array([0, 1]))
    # u1's test target: click p3 at hour 4 on mobile, one hour after the cart p2 (history).
    assert codes["hour"].tolist() == [4 + 2, UNKNOWN]
    assert codes["device"].tolist() == [0 + 2, UNKNOWN]
    assert codes["location"].tolist() == [2, UNKNOWN]
    assert codes["gap"].tolist() == [11 + 2, UNKNOWN]  # u2 has no test target
