"""Training and scoring inputs of the ranker, built with numpy (no per-user Python loops).

Every sample is a request: the user's most recent history events strictly before the request
time (newest first, 0-padded on the right, as ``query(hist)`` carries them), the request context
vector, and a group of candidate items with labels:

- **impressions** (the marketplace): each shown product is a group of one, labelled 1 if the
  user clicked, favourited, carted or bought it within ``window`` seconds of the impression,
  else 0 (shown and ignored);
- **next item** (every dataset, the only kind for review datasets): a positive training event is
  a group whose first item is that target (label 1) followed by sampled negatives (label 0).

History tokens are ``item_idx + 1`` (0 = padding) so that item row 0 stays distinguishable from
padding. Context codes per history event follow :mod:`trainer.models.sequences` (0 = padding,
1 = unknown, value + 2 otherwise; locations hashed into the model's buckets).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from trainer.data.interactions import InteractionData, Stage, event_code
from trainer.data.schema import EVENT_TYPES
from trainer.ranking.features import context_vectors

HISTORY_FEATURES = ("event", "hour", "device", "location")
TIME_SHIFT = 32  # key = user << 32 | (time - t0): one sorted int64 array for all users


@dataclass(frozen=True)
class Samples:
    """N requests with G candidates each (G = 1 for impressions)."""

    hist: np.ndarray  # (N, L) int64 item_idx + 1, newest first, 0 = padding
    features: dict[str, np.ndarray]  # name -> (N, L) int64 codes aligned with hist
    ctx: np.ndarray  # (N, 16) float32
    items: np.ndarray  # (N, G) int64 candidate item rows
    labels: np.ndarray  # (N, G) float32
    now: np.ndarray  # (N,) int64 request time (epoch seconds)
    users: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # (N,)

    def __len__(self) -> int:
        return len(self.hist)

    def take(self, rows: np.ndarray) -> Samples:
        return Samples(
            hist=self.hist[rows],
            features={k: v[rows] for k, v in self.features.items()},
            ctx=self.ctx[rows],
            items=self.items[rows],
            labels=self.labels[rows],
            now=self.now[rows],
            users=self.users[rows] if len(self.users) else self.users,
        )


def history_events(data: InteractionData, frame: pd.DataFrame, events: tuple[str, ...] | None):
    """Rows of ``frame`` that form histories: the named event types, by default all but
    impressions (what the user did, not what they were shown)."""
    names = events if events is not None else tuple(e for e in EVENT_TYPES if e != "impression")
    unknown = [name for name in names if name not in EVENT_TYPES]
    if unknown:
        raise ValueError(f"history_events: unknown event type {unknown[0]!r} ({EVENT_TYPES})")
    return frame[np.isin(frame["event"].to_numpy(), [event_code(n) for n in names])]


class HistoryIndex:
    """A user-sorted history frame answering "last L events of user u before time t"."""

    def __init__(self, frame: pd.DataFrame, location_buckets: int):
        order = np.lexsort((frame["timestamp"].to_numpy(), frame["user_idx"].to_numpy()))
        frame = frame.iloc[order]
        self.t0 = int(frame["timestamp"].min()) if len(frame) else 0
        self.times = frame["timestamp"].to_numpy(dtype=np.int64)
        self.users = frame["user_idx"].to_numpy(dtype=np.int64)
        self.keys = self._key(self.users, self.times)
        location = frame["location"].to_numpy(dtype=np.int64)
        self.columns = {
            "items": frame["item_idx"].to_numpy(dtype=np.int64) + 1,
            "event": frame["event"].to_numpy(dtype=np.int64) + 2,
            "hour": frame["hour"].to_numpy(dtype=np.int64) + 2,
            "device": frame["device"].to_numpy(dtype=np.int64) + 2,
            "location": np.where(location < 0, 1, 2 + location % (location_buckets - 2)),
        }

    def _key(self, users: np.ndarray, times: np.ndarray) -> np.ndarray:
        offset = np.clip(np.asarray(times, dtype=np.int64) - self.t0, 0, (1 << TIME_SHIFT) - 1)
        return (np.asarray(users, dtype=np.int64) << TIME_SHIFT) | offset

    def before(
        self, users: np.ndarray, times: np.ndarray, length: int, features: tuple[str, ...]
    ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
        """(hist (N, L), features, seconds since the latest of those events or -1)."""
        users = np.asarray(users, dtype=np.int64)
        end = np.searchsorted(self.keys, self._key(users, times), side="left")
        start = np.searchsorted(self.keys, users << TIME_SHIFT, side="left")
        count = end - start
        back = np.arange(length)
        valid = back[None, :] < count[:, None]  # (N, L)
        rows = np.where(valid, end[:, None] - 1 - back[None, :], 0)
        hist = np.where(valid, self.columns["items"][rows], 0) if len(self.keys) else rows * 0
        feats = {
            name: (np.where(valid, self.columns[name][rows], 0) if len(self.keys) else rows * 0)
            for name in features
        }
        last = self.times[np.maximum(end - 1, 0)] if len(self.keys) else np.zeros(len(users))
        gap = np.where(count > 0, np.asarray(times, dtype=np.int64) - last, -1)
        return hist.astype(np.int64), feats, gap


def _context(frame: pd.DataFrame, gap: np.ndarray) -> np.ndarray:
    return context_vectors(
        frame["hour"].to_numpy(), frame["device"].to_numpy(), frame["location"].to_numpy(), gap
    )


def impression_samples(
    data: InteractionData,
    index: HistoryIndex,
    length: int,
    features: tuple[str, ...],
    window: int,
    limit: int,
    rng: np.random.Generator,
) -> Samples | None:
    """Training impressions labelled by engagement within ``window`` seconds; None if none."""
    train = data.train
    shown = train[train["event"].to_numpy() == event_code("impression")]
    if not len(shown):
        return None
    if len(shown) > limit:
        shown = shown.iloc[np.sort(rng.choice(len(shown), limit, replace=False))]
    engaged = train[train["event"].to_numpy() != event_code("impression")]
    left = shown.reset_index(drop=True).assign(_row=np.arange(len(shown)))
    right = engaged[["user_idx", "item_idx", "timestamp"]].assign(_hit=1.0)
    merged = pd.merge_asof(
        left.sort_values("timestamp", kind="stable"),
        right.sort_values("timestamp", kind="stable"),
        on="timestamp",
        by=["user_idx", "item_idx"],
        direction="forward",
        tolerance=window,
    ).sort_values("_row")
    labels = merged["_hit"].fillna(0.0).to_numpy(dtype=np.float32)
    users = left["user_idx"].to_numpy(dtype=np.int64)
    times = left["timestamp"].to_numpy(dtype=np.int64)
    hist, feats, gap = index.before(users, times, length, features)
    return Samples(
        hist=hist,
        features=feats,
        ctx=_context(left, gap),
        items=left["item_idx"].to_numpy(dtype=np.int64)[:, None],
        labels=labels[:, None],
        now=times,
        users=users,
    )


def next_item_samples(
    data: InteractionData,
    index: HistoryIndex,
    length: int,
    features: tuple[str, ...],
    limit: int,
    rng: np.random.Generator,
) -> Samples | None:
    """Positive training events with at least one earlier history event, as groups of one
    (negatives are drawn per batch by :func:`draw_negatives`); None if there are none."""
    targets = data.positives(data.train)
    if len(targets) > limit:
        targets = targets.iloc[np.sort(rng.choice(len(targets), limit, replace=False))]
    users = targets["user_idx"].to_numpy(dtype=np.int64)
    times = targets["timestamp"].to_numpy(dtype=np.int64)
    hist, feats, gap = index.before(users, times, length, features)
    keep = np.flatnonzero(hist[:, 0] > 0)
    if not len(keep):
        return None
    targets = targets.iloc[keep]
    return Samples(
        hist=hist[keep],
        features={k: v[keep] for k, v in feats.items()},
        ctx=_context(targets, gap[keep]),
        items=targets["item_idx"].to_numpy(dtype=np.int64)[:, None],
        labels=np.ones((len(keep), 1), dtype=np.float32),
        now=times[keep],
        users=users[keep],
    )


def stage_target_samples(
    data: InteractionData,
    stage: Stage,
    index: HistoryIndex,
    length: int,
    features: tuple[str, ...],
    exclude_users: np.ndarray,
    limit: int,
    rng: np.random.Generator,
) -> Samples | None:
    """The held-out targets of ``stage`` as next-item groups of one, with the history of
    ``index`` (built over ``data.history(stage)``) before each target; users in
    ``exclude_users`` are left out (they select the epoch). None if nothing is left.

    These are the re-ranking task itself: retrieval never trained on them, so its score on them
    is as informative as on test targets, unlike on training events it has fitted."""
    targets = data.targets(stage)
    targets = targets[~np.isin(targets["user_idx"].to_numpy(), exclude_users)]
    if len(targets) > limit:
        targets = targets.iloc[np.sort(rng.choice(len(targets), limit, replace=False))]
    if not len(targets):
        return None
    users = targets["user_idx"].to_numpy(dtype=np.int64)
    times = targets["timestamp"].to_numpy(dtype=np.int64)
    hist, feats, gap = index.before(users, times, length, features)
    return Samples(
        hist=hist,
        features=feats,
        ctx=_context(targets, gap),
        items=targets["item_idx"].to_numpy(dtype=np.int64)[:, None],
        labels=np.ones((len(targets), 1), dtype=np.float32),
        now=times,
        users=users,
    )


def draw_negatives(
    targets: np.ndarray,
    users: np.ndarray,
    count: int,
    num_items: int,
    rng: np.random.Generator,
    candidates: np.ndarray | None = None,
    hard_share: float = 0.5,
) -> np.ndarray:
    """(N, count) negatives: a share from each user's retrieval candidates (hard), the rest
    uniform; a draw equal to the target is replaced by a uniform one."""
    n = len(targets)
    hard = round(count * hard_share) if candidates is not None else 0
    out = rng.integers(0, num_items, size=(n, count))
    if hard:
        cols = rng.integers(0, candidates.shape[1], size=(n, hard))
        out[:, :hard] = candidates[users[:, None], cols]
    clash = out == targets[:, None]  # (N, count)
    rows = np.nonzero(clash)[0]
    # Any other item, uniformly: the target shifted by 1..num_items-1.
    out[clash] = (targets[rows] + 1 + rng.integers(0, max(num_items - 1, 1), len(rows))) % num_items
    return out


def request_samples(
    data: InteractionData,
    stage: Stage,
    users: np.ndarray,
    items: np.ndarray,
    length: int,
    features: tuple[str, ...],
    events: tuple[str, ...] | None,
    location_buckets: int,
) -> Samples:
    """Scoring inputs for ``users`` at ``stage``: their whole stage history, and the context of
    their first target event (unknown for users without one); ``items`` (U, C) candidates."""
    users = np.asarray(users, dtype=np.int64)
    index = HistoryIndex(history_events(data, data.history(stage), events), location_buckets)
    first = data.targets(stage).drop_duplicates("user_idx", keep="first").set_index("user_idx")
    request = pd.DataFrame(
        {"hour": -1, "device": -1, "location": -1, "timestamp": np.iinfo(np.int32).max},
        index=pd.Index(users),
    )
    has = np.isin(users, first.index.to_numpy())
    request.loc[users[has], ["hour", "device", "location", "timestamp"]] = first.loc[
        users[has], ["hour", "device", "location", "timestamp"]
    ].to_numpy()
    times = request["timestamp"].to_numpy(dtype=np.int64)
    end_of_history = np.full(len(users), np.iinfo(np.int64).max >> 2)
    hist, feats, gap = index.before(users, np.where(has, times, end_of_history), length, features)
    gap = np.where(has, gap, -1)
    return Samples(
        hist=hist,
        features=feats,
        ctx=_context(request, gap),
        items=np.asarray(items, dtype=np.int64),
        labels=np.zeros(np.shape(items), dtype=np.float32),
        now=np.where(has, times, int(data.history(stage)["timestamp"].max())),
        users=users,
    )
