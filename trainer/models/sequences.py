"""Per-user event sequences for the sequence models (SASRec, BERT4Rec), built without Python loops.

A user's history (``data.history(stage)``, chronological) becomes one row of a left-padded matrix
holding the most recent ``max_len`` events. Item tokens are ``item_idx + 1`` so that 0 can mean
padding; every token also carries context codes (event type, time gap since the previous event,
hour of day, device, location), each with 0 = padding and 1 = unknown, so a model can embed them
beside the item.

Training uses every position of every user's training sequence as a target (the SASRec scheme: a
causal model predicts token t+1 from tokens <= t, so one forward pass over a sequence trains all of
its prefixes). Users longer than ``max_len + 1`` are cut into consecutive windows so that each
training target is predicted exactly once, with at most ``max_len`` tokens of context.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from trainer.data.interactions import InteractionData, Stage, event_code
from trainer.data.schema import DEVICES, EVENT_TYPES

PAD = 0
UNKNOWN = 1  # context code for a missing value (never used for items)
# Time gaps are bucketed by log2 of the seconds since the user's previous event; 0 s and the first
# event of a sequence share the "no gap" bucket. Gaps of 2**25 s (about a year) or more share the
# last bucket.
GAP_BUCKETS = 26
FEATURES = ("event", "gap", "hour", "device", "location")
# Context known when a recommendation is requested (the next event's type is not).
QUERY_FEATURES = ("gap", "hour", "device", "location")


def feature_vocab_sizes(num_locations: int) -> dict[str, int]:
    """Embedding table sizes per context feature (including the padding and unknown codes)."""
    return {
        "event": len(EVENT_TYPES) + 2,
        "gap": GAP_BUCKETS + 2,
        "hour": 24 + 2,
        "device": len(DEVICES) + 2,
        "location": num_locations + 2,
    }


def gap_bucket(seconds: np.ndarray) -> np.ndarray:
    """Codes 2.. for non-negative gaps in seconds, log2-spaced; negative gaps count as unknown."""
    seconds = np.asarray(seconds, dtype=np.int64)
    bucket = np.floor(np.log2(np.maximum(seconds, 0) + 1.0)).astype(np.int64)
    codes = np.minimum(bucket, GAP_BUCKETS - 1) + 2
    return np.where(seconds < 0, UNKNOWN, codes)


@dataclass(frozen=True)
class Tokens:
    """Token matrices of equal shape (N, L), left-padded; ``items`` holds item_idx + 1."""

    items: np.ndarray
    event: np.ndarray
    gap: np.ndarray
    hour: np.ndarray
    device: np.ndarray
    location: np.ndarray

    def features(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in FEATURES}

    def __len__(self) -> int:
        return len(self.items)

    def take(self, rows: np.ndarray) -> Tokens:
        return Tokens(**{name: getattr(self, name)[rows] for name in ("items", *FEATURES)})


def _event_columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per-event token codes of a chronological, user-grouped frame."""
    users = frame["user_idx"].to_numpy()
    times = frame["timestamp"].to_numpy(dtype=np.int64)
    new_user = np.ones(len(frame), dtype=bool)
    new_user[1:] = users[1:] != users[:-1]
    gaps = np.zeros(len(frame), dtype=np.int64)
    gaps[1:] = times[1:] - times[:-1]
    gaps[new_user] = 0
    return {
        "items": frame["item_idx"].to_numpy(dtype=np.int64) + 1,
        "event": frame["event"].to_numpy(dtype=np.int64) + 2,
        "gap": gap_bucket(gaps),
        # -1 (unknown) maps to code 1, value v to v + 2.
        "hour": frame["hour"].to_numpy(dtype=np.int64) + 2,
        "device": frame["device"].to_numpy(dtype=np.int64) + 2,
        "location": frame["location"].to_numpy(dtype=np.int64) + 2,
    }


def select_events(
    data: InteractionData, frame: pd.DataFrame, events: tuple[str, ...] | None
) -> pd.DataFrame:
    """Rows of ``frame`` whose event type is in ``events`` (None: the dataset's positive events)."""
    if events is None:
        return data.positives(frame)
    unknown = [name for name in events if name not in EVENT_TYPES]
    if unknown:
        raise ValueError(f"history_events: unknown event type {unknown[0]!r} ({EVENT_TYPES})")
    codes = [event_code(name) for name in events]
    return frame[np.isin(frame["event"].to_numpy(), codes)]


def _grouped(frame: pd.DataFrame) -> pd.DataFrame:
    """Stable sort by user: each user's events stay chronological."""
    order = np.argsort(frame["user_idx"].to_numpy(), kind="stable")
    return frame.iloc[order]


def _scatter(
    columns: dict[str, np.ndarray], rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]
) -> Tokens:
    out = {}
    for name, values in columns.items():
        matrix = np.zeros(shape, dtype=np.int64)
        matrix[rows, cols] = values
        out[name] = matrix
    return Tokens(**out)


def user_sequences(
    data: InteractionData,
    stage: Stage,
    users: np.ndarray,
    max_len: int,
    events: tuple[str, ...] | None = None,
) -> Tokens:
    """(len(users), max_len) tokens of each user's most recent history before ``stage``.

    Users without history get an all-padding row.
    """
    users = np.asarray(users, dtype=np.int64)
    frame = _grouped(select_events(data, data.history(stage), events))
    columns = _event_columns(frame)
    user = frame["user_idx"].to_numpy()
    counts = np.bincount(user, minlength=data.num_users)
    ends = np.cumsum(counts)
    from_end = ends[user] - 1 - np.arange(len(user))  # 0 = the user's latest event
    row_of_user = np.full(data.num_users, -1, dtype=np.int64)
    row_of_user[users] = np.arange(len(users))
    keep = (from_end < max_len) & (row_of_user[user] >= 0)
    # Duplicate users in ``users`` are served by copying the first row afterwards.
    tokens = _scatter(
        {k: v[keep] for k, v in columns.items()},
        row_of_user[user[keep]],
        max_len - 1 - from_end[keep],
        (len(users), max_len),
    )
    first = row_of_user[users]
    if not np.array_equal(first, np.arange(len(users))):
        tokens = tokens.take(first)
    return tokens


def training_windows(
    data: InteractionData, max_len: int, events: tuple[str, ...] | None = None
) -> tuple[Tokens, Tokens]:
    """Training inputs and, aligned with them, the next event to predict, from ``data.train``.

    See :func:`training_windows_with_users`, which also says whose window each row is.
    """
    tokens, following, _ = training_windows_with_users(data, max_len, events)
    return tokens, following


def training_windows_with_users(
    data: InteractionData, max_len: int, events: tuple[str, ...] | None = None
) -> tuple[Tokens, Tokens, np.ndarray]:
    """Training inputs, the next event to predict, and each window's ``user_idx`` (W,).

    Returns ``(tokens, following, users)``, the first two (W, max_len): ``tokens`` are windows
    of consecutive training events, left-padded; ``following.items`` holds at each position the
    item token the model must predict next (0 where there is none: padding, a user's last event,
    or a next event that is not positive feedback) and the other fields that next event's context
    codes (the request context a live system knows when it predicts it). Each user's sequence of
    n events yields ceil((n - 1) / max_len) windows, the last one ending at the user's
    second-to-last event, so every event after the first is a target exactly once. Windows are
    grouped by user, each user's newest window first; ``users`` (W,) says whose each window is.
    """
    frame = _grouped(select_events(data, data.train, events))
    columns = _event_columns(frame)
    user = frame["user_idx"].to_numpy()
    n = len(user)
    positive = np.isin(frame["event"].to_numpy(), data.positive_codes)
    same_user_next = np.zeros(n, dtype=bool)
    same_user_next[:-1] = user[1:] == user[:-1]
    is_target = np.zeros(n, dtype=bool)
    is_target[:-1] = same_user_next[:-1] & positive[1:]
    following = {}
    for name, values in columns.items():
        shifted = np.zeros(n, dtype=np.int64)
        shifted[:-1] = values[1:]
        following[name] = np.where(is_target, shifted, 0)
    # Only events followed by one of the same user are inputs.
    inputs = np.flatnonzero(same_user_next)
    rows, cols, shape = _window_positions(user[inputs], data.num_users, max_len)
    tokens = _scatter({k: v[inputs] for k, v in columns.items()}, rows, cols, shape)
    nexts = _scatter({k: v[inputs] for k, v in following.items()}, rows, cols, shape)
    window_user = np.zeros(shape[0], dtype=np.int64)
    window_user[rows] = user[inputs]
    keep = np.flatnonzero((nexts.items > 0).any(axis=1))
    return tokens.take(keep), nexts.take(keep), window_user[keep]


def user_item_keys(
    data: InteractionData, num_items: int, events: tuple[str, ...] | None = None
) -> np.ndarray:
    """Sorted unique ``user_idx * (num_items + 1) + item token`` of every training event.

    A membership table of (user, item) pairs: ``np.searchsorted`` on it tells, without a Python
    loop, whether a drawn item is one of the user's training items.
    """
    frame = select_events(data, data.train, events)
    users = frame["user_idx"].to_numpy(dtype=np.int64)
    tokens = frame["item_idx"].to_numpy(dtype=np.int64) + 1
    return np.unique(users * (num_items + 1) + tokens)


def request_context(
    data: InteractionData, stage: Stage, users: np.ndarray, events: tuple[str, ...] | None = None
) -> dict[str, np.ndarray]:
    """(len(users),) context codes of each user's request in ``stage``, per query feature.

    The request is the user's first target event of the stage: its hour, device and location,
    and its gap since the user's last history event. Users without a target (or, for the gap,
    without history) get the unknown code.
    """
    users = np.asarray(users, dtype=np.int64)
    targets = data.targets(stage)
    first = targets.drop_duplicates("user_idx", keep="first").set_index("user_idx")
    history = select_events(data, data.history(stage), events)
    last_time = history.groupby("user_idx")["timestamp"].max()
    out = {name: np.full(len(users), UNKNOWN, dtype=np.int64) for name in QUERY_FEATURES}
    has = np.isin(users, first.index.to_numpy())
    rows = first.loc[users[has]]
    out["hour"][has] = rows["hour"].to_numpy(dtype=np.int64) + 2
    out["device"][has] = rows["device"].to_numpy(dtype=np.int64) + 2
    out["location"][has] = rows["location"].to_numpy(dtype=np.int64) + 2
    with_gap = has & np.isin(users, last_time.index.to_numpy())
    gap = (
        first.loc[users[with_gap], "timestamp"].to_numpy()
        - last_time.loc[users[with_gap]].to_numpy()
    )
    out["gap"][with_gap] = gap_bucket(gap)
    return out


def training_sequences(
    data: InteractionData, max_len: int, events: tuple[str, ...] | None = None
) -> Tokens:
    """Every user's whole training sequence as windows of ``max_len`` aligned on its last event.

    The input of a bidirectional (cloze) model, which predicts masked tokens from both sides.
    """
    frame = _grouped(select_events(data, data.train, events))
    columns = _event_columns(frame)
    rows, cols, shape = _window_positions(frame["user_idx"].to_numpy(), data.num_users, max_len)
    return _scatter(columns, rows, cols, shape)


def _window_positions(
    user: np.ndarray, num_users: int, max_len: int
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """(row, column) of each event of a user-grouped sequence cut into right-aligned windows."""
    counts = np.bincount(user, minlength=num_users)
    ends = np.cumsum(counts)
    from_end = ends[user] - 1 - np.arange(len(user))  # 0 = the user's last event
    window_in_user = from_end // max_len
    windows_per_user = (counts + max_len - 1) // max_len
    first_window = np.cumsum(windows_per_user) - windows_per_user
    rows = first_window[user] + window_in_user
    cols = max_len - 1 - from_end % max_len
    return rows, cols, (int(windows_per_user.sum()), max_len)
