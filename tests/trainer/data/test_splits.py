"""Splits: the right targets per protocol, and no information from the future in training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.trainer.data.builders import T0, events, frames, marketplace
from trainer.data.splits import (
    SplitError,
    cold_users,
    history_length_buckets,
    new_items,
    split_dataset,
)


def ids(data, frame: pd.DataFrame) -> list[tuple[str, str]]:
    return list(
        zip(data.users.to_id(frame["user_idx"]), data.items.to_id(frame["item_idx"]), strict=True)
    )


def test_leave_one_out_holds_out_the_last_two_positives():
    data = split_dataset(marketplace(split="leave_one_out"))
    # u1's positives in order: p0 click, p1 purchase, p2 cart, p3 click -> valid p2, test p3.
    assert ids(data, data.test) == [("u1", "p3")]
    assert ids(data, data.valid) == [("u1", "p2")]
    # u2 and u3 have fewer than 3 positives: training only.
    assert ("u2", "p4") in ids(data, data.train) and ("u3", "p1") in ids(data, data.train)
    # training keeps the impression (any event type) but nothing at or after the valid target
    assert ids(data, data.train[data.train["user_idx"] == 0]) == [
        ("u1", "p0"),
        ("u1", "p0"),
        ("u1", "p1"),
    ]
    assert ids(data, data.history("test")[data.history("test")["user_idx"] == 0])[-1] == (
        "u1",
        "p2",
    )


def test_leave_one_out_has_no_future_leakage_on_a_random_dataset():
    rng = np.random.default_rng(3)
    kinds = ["impression", "click", "favorite", "cart", "purchase"]
    rows = [
        (f"u{rng.integers(3) + 1}", f"p{rng.integers(5)}", kinds[rng.integers(5)])
        for _ in range(200)
    ]
    market = marketplace(events=events(rows))
    data = split_dataset(market, "leave_one_out")
    for stage in ("valid", "test"):
        targets = data.targets(stage)
        history = data.history(stage)
        for user, t in zip(targets["user_idx"], targets["timestamp"], strict=True):
            assert (history[history["user_idx"] == user]["timestamp"] < t).all()
    valid_time = dict(zip(data.valid["user_idx"], data.valid["timestamp"], strict=True))
    for user, t in zip(data.train["user_idx"], data.train["timestamp"], strict=True):
        assert t < valid_time.get(user, np.iinfo(np.int64).max)


def test_temporal_split_cuts_globally_and_keeps_new_pairs():
    pairs = [
        "u1 p0",
        "u1 p1",
        "u2 p0",
        "u2 p1",
        "u3 p0",
        "u1 p2",
        "u2 p2",
        "u1 p0",
        "u3 p4",
        "u2 p3",
    ]
    rows = [(*pair.split(), "click") for pair in pairs]
    market = marketplace(split="temporal", events=events(rows))
    data = split_dataset(market, "temporal", valid_fraction=0.2, test_fraction=0.2)
    assert len(data.train) == 6
    # the repeated (u1, p0) is not a target: the user had it before
    assert ids(data, data.valid) == [("u2", "p2")]
    assert ids(data, data.test) == [("u3", "p4"), ("u2", "p3")]
    assert data.train["timestamp"].max() < data.valid["timestamp"].min()
    assert data.history("test")["timestamp"].max() < data.test["timestamp"].min()
    for stage in ("valid", "test"):
        seen = set(ids(data, data.positives(data.history(stage))))
        assert not set(ids(data, data.targets(stage))) & seen


def test_temporal_split_refuses_ordinal_timestamps():
    with pytest.raises(SplitError, match="ordinal timestamps"):
        split_dataset(marketplace(split="temporal", timestamps="ordinal"))


def test_fixed_split_uses_the_split_column():
    table = frames()["events"]
    table["split"] = ["train"] * 6 + ["test", "test"]
    data = split_dataset(marketplace(split="fixed", events=table))
    assert ids(data, data.test) == [("u2", "p4"), ("u3", "p1")]
    assert len(data.valid) == 0
    assert len(data.train) == 6


def test_fixed_split_needs_a_split_on_every_event():
    with pytest.raises(SplitError, match="needs 'split' on every event"):
        split_dataset(marketplace(split="fixed"))


def test_seen_matrix_holds_positive_history_only():
    data = split_dataset(marketplace())
    seen = data.seen_matrix("test").toarray()
    u1 = data.users.to_idx(["u1"])[0]
    assert set(data.items.to_id(np.flatnonzero(seen[u1]))) == {"p0", "p1", "p2"}


def test_cold_start_slices():
    rows = (
        [("u1", f"p{i}", "click") for i in range(5)]
        + [("u2", "p0", "click"), ("u2", "p1", "click"), ("u2", "p2", "click")]
        + [("u3", "p4", "click")]
    )
    data = split_dataset(marketplace(events=events(rows)))
    # u1: history p0 p1 p2 p3 before its test target p4 (4 positives); u2: p0 p1 (2)
    assert set(data.users.to_id(cold_users(data, "test", max_history=3))) == {"u2"}
    assert set(data.users.to_id(cold_users(data, "test", max_history=4))) == {"u1", "u2"}
    buckets = history_length_buckets(data, "test")
    assert set(data.users.to_id(buckets["2-4"])) == {"u1", "u2"}
    assert len(buckets["1"]) == 0 and len(buckets[">=10"]) == 0
    # before validation nobody has touched p3 (u1's validation target); before test everybody has
    assert set(data.items.to_id(new_items(data, "valid"))) == {"p3"}
    assert len(new_items(data, "test")) == 0


def test_unknown_protocol():
    with pytest.raises(SplitError, match="unknown split protocol 'random'"):
        split_dataset(marketplace(), "random")


def test_events_order_ties_keep_file_order():
    rows = [("u1", "p0", "click"), ("u1", "p1", "click"), ("u1", "p2", "click")]
    table = events(rows)
    table["timestamp"] = T0  # all simultaneous: file order decides
    data = split_dataset(marketplace(events=table))
    assert ids(data, data.test) == [("u1", "p2")]
    assert ids(data, data.valid) == [("u1", "p1")]
