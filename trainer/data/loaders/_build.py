"""Turning parsed integer ids into the five canonical tables.

Every research format here lacks the same things (times, prices, titles, sellers), so the choices
about what to synthesise are made once, in this module:

- ``user_id`` / ``product_id`` are the file's own numbers as strings, so a fixed negatives file or
  a published per-user result maps onto them directly.
- Timestamps are ordinal: :data:`ORDINAL_BASE` plus the event's position in its user's sequence,
  in seconds. They order each user's events and nothing more (``DatasetInfo.timestamps``).
- Products are in stock, not consumable, with no price, margin, title or listing date.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from trainer.data.marketplace import DatasetInfo, Marketplace
from trainer.data.schema import CATEGORIES, EVENTS, PRODUCTS, SELLERS, USERS

ORDINAL_BASE = pd.Timestamp("2020-01-01T00:00:00Z")


@dataclass
class EventArrays:
    """Events as parallel arrays, in the order that defines each user's sequence."""

    user: np.ndarray  # (E,) int64 file user id
    item: np.ndarray  # (E,) int64 file item id
    event_type: np.ndarray  # (E,) object, one of EVENT_TYPES
    split: np.ndarray | None = None  # (E,) object train/valid/test, or None for no split

    @staticmethod
    def concat(parts: list[EventArrays]) -> EventArrays:
        has_split = [p.split is not None for p in parts]
        if any(has_split) and not all(has_split):
            raise ValueError("either every part has a split or none has")
        return EventArrays(
            np.concatenate([p.user for p in parts]),
            np.concatenate([p.item for p in parts]),
            np.concatenate([p.event_type for p in parts]),
            np.concatenate([p.split for p in parts]) if all(has_split) else None,
        )


def constant(value: str, n: int) -> np.ndarray:
    out = np.empty(n, dtype=object)
    out[:] = value
    return out


def ordinal_positions(user: np.ndarray) -> np.ndarray:
    """(E,) position of each event within its user's events, in array order."""
    order = np.argsort(user, kind="stable")
    sorted_users = user[order]
    group_start = np.searchsorted(sorted_users, sorted_users, side="left")
    position = np.empty(len(user), dtype=np.int64)
    position[order] = np.arange(len(user), dtype=np.int64) - group_start
    return position


def id_strings(ids: np.ndarray) -> np.ndarray:
    """Object array of decimal strings for integer ids."""
    return np.asarray(ids, dtype=np.int64).astype(str).astype(object)


def lookup_strings(ids: np.ndarray, universe: np.ndarray) -> np.ndarray:
    """Decimal strings for ``ids``, each formatted once per id of the sorted ``universe``."""
    names = id_strings(universe)
    return names[np.searchsorted(universe, ids)]


def events_frame(events: EventArrays, users: np.ndarray, items: np.ndarray) -> pd.DataFrame:
    """The events table with ordinal timestamps and empty context columns."""
    n = len(events.user)
    position = ordinal_positions(events.user)
    timestamp = pd.to_datetime(ORDINAL_BASE.value + position * 1_000_000_000, utc=True)
    frame = pd.DataFrame(
        {
            "user_id": lookup_strings(events.user, users),
            "product_id": lookup_strings(events.item, items),
            "event_type": events.event_type,
            "timestamp": timestamp,
            "hour": pd.arrays.IntegerArray(np.zeros(n, dtype=np.int8), np.ones(n, dtype=bool)),
            "device": constant(None, n),
            "location": constant(None, n),
            "split": events.split if events.split is not None else constant(None, n),
        }
    )
    return frame[[c.name for c in EVENTS.columns]]


def users_frame(users: np.ndarray) -> pd.DataFrame:
    n = len(users)
    return pd.DataFrame(
        {
            "user_id": id_strings(users),
            "created_at": pd.Series(pd.NaT, index=range(n), dtype="datetime64[ms, UTC]"),
            "location": constant(None, n),
        }
    )[[c.name for c in USERS.columns]]


def products_frame(
    items: np.ndarray,
    category_id: np.ndarray | None = None,
    seller_id: np.ndarray | None = None,
    attributes: list[dict[str, str] | None] | None = None,
) -> pd.DataFrame:
    """Products with only what the data has; everything else null (in stock, not consumable)."""
    n = len(items)
    empty = constant(None, n)
    frame = pd.DataFrame(
        {
            "product_id": id_strings(items),
            "title": empty,
            "description": empty,
            "category_id": category_id if category_id is not None else empty,
            "seller_id": seller_id if seller_id is not None else empty,
            "price": np.full(n, np.nan),
            "margin": np.full(n, np.nan),
            "created_at": pd.Series(pd.NaT, index=range(n), dtype="datetime64[ms, UTC]"),
            "in_stock": np.ones(n, dtype=bool),
            "consumable": np.zeros(n, dtype=bool),
        }
    )
    attrs = np.empty(n, dtype=object)
    if attributes is not None:
        attrs[:] = attributes
    frame["attributes"] = attrs
    return frame[[c.name for c in PRODUCTS.columns]]


def empty_frame(table) -> pd.DataFrame:
    return pd.DataFrame({c.name: pd.Series([], dtype=object) for c in table.columns})


def categories_frame(rows: list[tuple[str, str, str | None]]) -> pd.DataFrame:
    if not rows:
        return empty_frame(CATEGORIES)
    return pd.DataFrame(rows, columns=[c.name for c in CATEGORIES.columns])


def sellers_frame(rows: list[tuple[str, str]]) -> pd.DataFrame:
    if not rows:
        return empty_frame(SELLERS)
    frame = pd.DataFrame(rows, columns=["seller_id", "name"])
    frame["rating"] = np.nan
    frame["created_at"] = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ms, UTC]")
    return frame[[c.name for c in SELLERS.columns]]


def build_marketplace(
    info: DatasetInfo,
    users: np.ndarray,
    items: np.ndarray,
    events: EventArrays,
    products: pd.DataFrame | None = None,
    categories: pd.DataFrame | None = None,
    sellers: pd.DataFrame | None = None,
) -> Marketplace:
    """Assemble and validate. ``users``/``items`` are the sorted id universes."""
    return Marketplace.from_frames(
        info,
        categories=categories if categories is not None else empty_frame(CATEGORIES),
        sellers=sellers if sellers is not None else empty_frame(SELLERS),
        products=products if products is not None else products_frame(items),
        users=users_frame(users),
        events=events_frame(events, users, items),
    )
