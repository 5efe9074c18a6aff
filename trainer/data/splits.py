"""Train/validation/test splits and cold-start slices, all free of future leakage.

- ``leave_one_out`` (sequence datasets): per user, the last positive event is the test target, the
  one before it the validation target, everything earlier is training. Users with fewer than three
  positive events stay in training only (the SASRec convention).
- ``fixed``: the dataset's own split, from ``events.split`` (gowalla's R80/20, tmall's files).
- ``temporal`` (the marketplace): two global time cuts; events before the first train, positive
  events between the cuts are validation targets, positive events after the second are test
  targets. Targets are (user, item) pairs the user had no positive event with before the stage.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from trainer.data.interactions import (
    EVENT_COLUMNS,
    IdMap,
    InteractionData,
    encode_events,
    event_code,
)
from trainer.data.marketplace import Marketplace


class SplitError(ValueError):
    pass


def split_dataset(market: Marketplace, protocol: str | None = None, **options) -> InteractionData:
    """Split with the dataset's own protocol (``info.split``) unless another is named."""
    protocol = protocol or market.info.split
    if protocol == "leave_one_out":
        return leave_one_out(market)
    if protocol == "fixed":
        return fixed_split(market)
    if protocol == "temporal":
        return temporal_split(market, **options)
    raise SplitError(f"unknown split protocol {protocol!r} (leave_one_out, fixed, temporal)")


def _prepare(market: Marketplace) -> tuple[IdMap, IdMap, pd.DataFrame, tuple]:
    users = IdMap(market.users["user_id"].to_numpy(dtype=object))
    items = IdMap(market.products["product_id"].to_numpy(dtype=object))
    events, locations = encode_events(market, users, items)
    return users, items, events, locations


def _build(market, users, items, locations, train, valid, test, valid_history, protocol):
    columns = list(EVENT_COLUMNS)
    return InteractionData(
        market=market,
        users=users,
        items=items,
        train=train[columns].reset_index(drop=True),
        valid=valid[columns].reset_index(drop=True),
        test=test[columns].reset_index(drop=True),
        valid_history=valid_history[columns].reset_index(drop=True),
        protocol=protocol,
        locations=locations,
    )


def leave_one_out(market: Marketplace) -> InteractionData:
    users, items, events, locations = _prepare(market)
    data_positive = np.isin(
        events["event"].to_numpy(),
        [event_code(name) for name in market.info.positive_events],
    )
    # Events are chronological with ties in file order; order within each user is kept by a
    # stable sort on user.
    order = np.argsort(events["user_idx"].to_numpy(), kind="stable")
    events = events.iloc[order].reset_index(drop=True)
    positive = data_positive[order]
    user = events["user_idx"].to_numpy()
    # Rank of each positive event counted from the user's end: 0 = last positive.
    pos_rows = np.flatnonzero(positive)
    pos_users = user[pos_rows]
    counts = np.bincount(pos_users, minlength=len(users))
    ends = np.cumsum(counts)
    from_end = ends[pos_users] - 1 - np.arange(len(pos_rows))
    eligible = counts[pos_users] >= 3
    test_rows = pos_rows[eligible & (from_end == 0)]
    valid_rows = pos_rows[eligible & (from_end == 1)]
    # Position of each user's validation target; training is everything strictly before it.
    cut = np.full(len(users), np.iinfo(np.int64).max)
    cut[user[valid_rows]] = valid_rows
    test_cut = np.full(len(users), np.iinfo(np.int64).max)
    test_cut[user[test_rows]] = test_rows
    rows = np.arange(len(events))
    train_mask = rows < cut[user]
    between = (rows > cut[user]) & (rows < test_cut[user])
    train = events[train_mask]
    valid = events.iloc[valid_rows]
    test = events.iloc[test_rows]
    valid_history = pd.concat([valid, events[between]]).sort_index()
    return _build(
        market, users, items, locations, train, valid, test, valid_history, "leave_one_out"
    )


def fixed_split(market: Marketplace) -> InteractionData:
    users, items, events, locations = _prepare(market)
    split = events["split"]
    if split.isna().any():
        row = int(np.flatnonzero(split.isna().to_numpy())[0])
        raise SplitError(
            f"events.parquet: the fixed protocol needs 'split' on every event; an event of user "
            f"{users.ids[events['user_idx'].iloc[row]]!r} has none"
        )
    train = events[split == "train"]
    valid = events[split == "valid"]
    test = events[split == "test"]
    data = _build(market, users, items, locations, train, valid, test, valid, "fixed")
    return _drop_non_positive_targets(data)


def temporal_split(
    market: Marketplace, valid_fraction: float = 0.1, test_fraction: float = 0.1
) -> InteractionData:
    if market.info.timestamps != "real":
        raise SplitError(
            f"dataset {market.info.name!r} has ordinal timestamps: a global temporal split would "
            "be meaningless; use leave_one_out or fixed"
        )
    if not (
        0 < valid_fraction < 1 and 0 < test_fraction < 1 and valid_fraction + test_fraction < 1
    ):
        raise SplitError("valid_fraction and test_fraction must be in (0, 1) and sum below 1")
    users, items, events, locations = _prepare(market)
    times = events["timestamp"].to_numpy()
    valid_cut = int(np.quantile(times, 1.0 - valid_fraction - test_fraction))
    test_cut = int(np.quantile(times, 1.0 - test_fraction))
    train = events[times < valid_cut]
    between = events[(times >= valid_cut) & (times < test_cut)]
    after = events[times >= test_cut]
    data = _build(market, users, items, locations, train, between, after, between, "temporal")
    return _drop_non_positive_targets(data, new_pairs_only=True)


def _drop_non_positive_targets(data: InteractionData, new_pairs_only: bool = False):
    """Keep positive target events; optionally only (user, item) pairs new to the user."""
    valid = data.positives(data.valid)
    test = data.positives(data.test)
    if new_pairs_only:
        valid = _new_pairs(valid, data.positives(data.history("valid")))
        test = _new_pairs(test, data.positives(data.history("test")))
    return InteractionData(
        market=data.market,
        users=data.users,
        items=data.items,
        train=data.train,
        valid=valid.reset_index(drop=True),
        test=test.reset_index(drop=True),
        valid_history=data.valid_history,
        protocol=data.protocol,
        locations=data.locations,
    )


def _new_pairs(targets: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """First target event of each (user, item) pair absent from the history."""
    key = targets["user_idx"].to_numpy() * np.int64(1 << 32) + targets["item_idx"].to_numpy()
    seen = history["user_idx"].to_numpy() * np.int64(1 << 32) + history["item_idx"].to_numpy()
    fresh = ~np.isin(key, seen)
    first = ~pd.Series(key).duplicated().to_numpy()
    return targets[fresh & first]


def cold_users(data: InteractionData, stage: str = "test", max_history: int = 3) -> np.ndarray:
    """Users with targets in ``stage`` and at most ``max_history`` positive history events."""
    history = data.positives(data.history(stage))
    counts = np.bincount(history["user_idx"].to_numpy(), minlength=data.num_users)
    with_targets = np.unique(data.targets(stage)["user_idx"].to_numpy())
    return with_targets[counts[with_targets] <= max_history]


def history_length_buckets(
    data: InteractionData, stage: str = "test", edges: tuple[int, ...] = (1, 2, 5, 10)
) -> dict[str, np.ndarray]:
    """Users with targets, grouped by positive history length: '1', '2-4', '5-9', '>=10'."""
    history = data.positives(data.history(stage))
    counts = np.bincount(history["user_idx"].to_numpy(), minlength=data.num_users)
    users = np.unique(data.targets(stage)["user_idx"].to_numpy())
    buckets: dict[str, np.ndarray] = {}
    bounds = [*edges, np.iinfo(np.int64).max]
    for low, high in itertools.pairwise(bounds):
        label = (
            f">={low}"
            if high == np.iinfo(np.int64).max
            else (str(low) if high - low == 1 else f"{low}-{high - 1}")
        )
        buckets[label] = users[(counts[users] >= low) & (counts[users] < high)]
    return buckets


def new_items(data: InteractionData, stage: str = "test") -> np.ndarray:
    """Items with no event at all in the history before ``stage`` (first seen after the cut)."""
    history = data.history(stage)
    seen = np.zeros(data.num_items, dtype=bool)
    seen[history["item_idx"].to_numpy()] = True
    return np.flatnonzero(~seen)
