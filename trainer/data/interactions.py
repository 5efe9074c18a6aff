"""Indexed interactions: the form every model and metric reads.

A :class:`Marketplace` speaks in external ids. Models need dense integer rows, so this module maps
``user_id``/``product_id`` to ``user_idx``/``item_idx`` (the row order of the users and products
tables, so the maps are stable for a given dataset) and encodes the context columns. The splitters
in :mod:`trainer.data.splits` produce an :class:`InteractionData`.

Event frames (``train``, ``valid``, ``test``) all have the columns of :data:`EVENT_COLUMNS`:
``user_idx``, ``item_idx`` (int64), ``timestamp`` (int64 epoch seconds), ``event`` (int8 index into
:data:`trainer.data.schema.EVENT_TYPES`), ``hour`` (int8, -1 when unknown), ``device`` and
``location`` (int16/int32 codes into :attr:`InteractionData.devices` / ``locations``; -1 when
unknown).
``valid`` and ``test`` hold the evaluation targets only (positive events).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from trainer.data.marketplace import DatasetInfo, Marketplace
from trainer.data.schema import DEVICES, EVENT_TYPES

EVENT_COLUMNS = ("user_idx", "item_idx", "timestamp", "event", "hour", "device", "location")
Stage = Literal["valid", "test"]


def event_code(name: str) -> int:
    return EVENT_TYPES.index(name)


@dataclass(frozen=True)
class IdMap:
    """External ids in row order, with the reverse lookup."""

    ids: np.ndarray  # (N,) object array of str

    @cached_property
    def index(self) -> pd.Index:
        return pd.Index(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def to_idx(self, ids) -> np.ndarray:
        """Rows for the given ids; raises KeyError naming the first unknown id."""
        rows = self.index.get_indexer(pd.Index(ids))
        if (rows < 0).any():
            missing = np.asarray(ids, dtype=object)[rows < 0][0]
            raise KeyError(f"unknown id {missing!r}")
        return rows.astype(np.int64)

    def to_id(self, idx) -> np.ndarray:
        return self.ids[np.asarray(idx, dtype=np.int64)]


def encode_events(market: Marketplace, users: IdMap, items: IdMap) -> tuple[pd.DataFrame, tuple]:
    """All events as an indexed frame in chronological order (ties keep the file order)."""
    events = market.events
    locations = tuple(sorted(events["location"].dropna().unique().tolist()))
    location_code = {name: code for code, name in enumerate(locations)}
    frame = pd.DataFrame(
        {
            "user_idx": users.to_idx(events["user_id"].to_numpy(dtype=object)),
            "item_idx": items.to_idx(events["product_id"].to_numpy(dtype=object)),
            "timestamp": events["timestamp"].to_numpy(dtype="datetime64[s]").astype(np.int64),
            "event": events["event_type"]
            .map({n: i for i, n in enumerate(EVENT_TYPES)})
            .astype(np.int8),
            "hour": events["hour"].fillna(-1).astype(np.int8),
            "device": events["device"]
            .map({n: i for i, n in enumerate(DEVICES)})
            .fillna(-1)
            .astype(np.int16),
            "location": events["location"].map(location_code).fillna(-1).astype(np.int32),
        }
    )
    frame["split"] = events["split"].to_numpy(dtype=object)
    order = np.lexsort((np.arange(len(frame)), frame["timestamp"].to_numpy()))
    return frame.iloc[order].reset_index(drop=True), locations


@dataclass(frozen=True)
class InteractionData:
    """One split of one dataset, indexed: training events and evaluation targets."""

    market: Marketplace
    users: IdMap
    items: IdMap
    train: pd.DataFrame  # every event type, chronological
    valid: pd.DataFrame  # positive target events for validation
    test: pd.DataFrame  # positive target events for testing
    # Events after the validation cut that are not test targets; with ``train`` they form the
    # history a model sees when it is evaluated on ``test`` (never when training).
    valid_history: pd.DataFrame
    protocol: str
    locations: tuple[str, ...]
    devices: tuple[str, ...] = DEVICES

    @property
    def info(self) -> DatasetInfo:
        return self.market.info

    @property
    def num_users(self) -> int:
        return len(self.users)

    @property
    def num_items(self) -> int:
        return len(self.items)

    @cached_property
    def positive_codes(self) -> np.ndarray:
        return np.array([event_code(e) for e in self.info.positive_events], dtype=np.int8)

    def positives(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Rows of ``frame`` whose event type counts as positive feedback."""
        return frame[np.isin(frame["event"].to_numpy(), self.positive_codes)]

    def history(self, stage: Stage) -> pd.DataFrame:
        """Every event a model may use when predicting ``stage`` targets, chronological."""
        if stage == "valid":
            return self.train
        return pd.concat([self.train, self.valid_history], ignore_index=True).sort_values(
            "timestamp", kind="stable"
        )

    def targets(self, stage: Stage) -> pd.DataFrame:
        return self.valid if stage == "valid" else self.test

    def seen_matrix(self, stage: Stage) -> sp.csr_matrix:
        """(num_users, num_items) 0/1 matrix of items with positive history before ``stage``.

        Full-ranking evaluation removes these items from the candidates, as the anchors' protocols
        do ("seen items excluded").
        """
        history = self.positives(self.history(stage))
        return interaction_matrix(history, self.num_users, self.num_items)

    def train_matrix(self, weights: dict[str, float] | None = None) -> sp.csr_matrix:
        """(num_users, num_items) matrix of positive training events, summed by event weight."""
        train = self.positives(self.train)
        if weights is None:
            return interaction_matrix(train, self.num_users, self.num_items)
        w = np.zeros(len(EVENT_TYPES), dtype=np.float32)
        for name, value in weights.items():
            w[event_code(name)] = value
        values = w[train["event"].to_numpy()]
        matrix = sp.csr_matrix(
            (values, (train["user_idx"].to_numpy(), train["item_idx"].to_numpy())),
            shape=(self.num_users, self.num_items),
        )
        matrix.sum_duplicates()
        return matrix

    def item_popularity(self) -> np.ndarray:
        """(num_items,) count of positive training events per item."""
        train = self.positives(self.train)
        return np.bincount(train["item_idx"].to_numpy(), minlength=self.num_items)


def interaction_matrix(frame: pd.DataFrame, num_users: int, num_items: int) -> sp.csr_matrix:
    """Binary user x item CSR matrix of the (user_idx, item_idx) pairs in ``frame``."""
    rows = frame["user_idx"].to_numpy()
    cols = frame["item_idx"].to_numpy()
    matrix = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(num_users, num_items)
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix
