"""Context-aware popularity: the keys of the product field ``ctx_popularity`` and their values.

One definition for both sides: the feeder computes the per-key lifts from the positive events
(:func:`context_popularity`), the client builds the query weights of the cold-start profile
``context_popularity`` from the request (:func:`context_weights`). numpy/pandas only: serving
code may import this module (it is the query-side half of the contract).

Keys: ``all`` (every positive event), ``device:<name>`` and ``daypart:<name>`` where the daypart
buckets the local hour: night 0-5, morning 6-11, afternoon 12-17, evening 18-23. A product's
value under a key is its *lift*: its share of the positive events with that key times the number
of products, so 1 is an average product whatever the size of the context, and keys of different
sizes can be added with the same weight.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

ALL = "all"
DAYPARTS: tuple[tuple[str, int, int], ...] = (
    ("night", 0, 5),
    ("morning", 6, 11),
    ("afternoon", 12, 17),
    ("evening", 18, 23),
)
# Query weights: the request's own context counts fully, global popularity half, so a product
# popular right now (this device, this part of the day) outranks one popular only overall.
CONTEXT_WEIGHT = 1.0
GLOBAL_WEIGHT = 0.5


def daypart(hour: int | None) -> str | None:
    """The daypart name of a local hour 0-23; None when unknown or out of range."""
    if hour is None or isinstance(hour, bool):
        return None
    for name, first, last in DAYPARTS:
        if first <= hour <= last:
            return name
    return None


def context_keys(hour: int | None, device: str | None) -> list[str]:
    """The ctx_popularity keys a request with this hour and device falls under (``all`` first)."""
    keys = [ALL]
    if device:
        keys.append(f"device:{device}")
    part = daypart(hour)
    if part is not None:
        keys.append(f"daypart:{part}")
    return keys


def context_weights(hour: int | None, device: str | None) -> dict[str, float]:
    """``query(ctx_weights)`` cells: {all: 1} without context, else the context keys at 1 and
    ``all`` at 0.5."""
    keys = context_keys(hour, device)
    if len(keys) == 1:
        return {ALL: 1.0}
    return {key: (GLOBAL_WEIGHT if key == ALL else CONTEXT_WEIGHT) for key in keys}


def weights_literal(weights: Mapping[str, float]) -> str:
    """A mapped tensor literal in short form, keys quoted: ``{"all":0.5,"device:mobile":1.0}``."""
    import json

    return json.dumps({str(k): float(v) for k, v in weights.items()}, separators=(",", ":"))


def context_popularity(events: pd.DataFrame, product_ids: list[str]) -> list[dict[str, float]]:
    """Per product (in ``product_ids`` order) the lift under every key it has events for.

    ``events``: positive events with ``product_id`` and optional ``hour`` and ``device`` columns
    (null = unknown: the event counts for ``all`` only). Events of products outside
    ``product_ids`` count in the context totals (they were shown to the same shoppers) but get no
    cells.
    """
    n = len(product_ids)
    out: list[dict[str, float]] = [{} for _ in range(n)]
    if events.empty or n == 0:
        return out
    row_of = pd.Series(np.arange(n), index=pd.Index(product_ids))
    frame = pd.DataFrame({"row": row_of.reindex(events["product_id"].to_numpy()).to_numpy()})
    keys = pd.DataFrame({ALL: np.full(len(events), ALL, dtype=object)})
    if "device" in events:
        device = events["device"].astype(object)
        keys["device"] = np.where(device.notna(), "device:" + device.astype(str), None)
    if "hour" in events:
        hours = pd.to_numeric(events["hour"], errors="coerce").to_numpy()
        parts = np.full(len(events), None, dtype=object)
        for name, first, last in DAYPARTS:
            parts[(hours >= first) & (hours <= last)] = f"daypart:{name}"
        keys["daypart"] = parts
    for column in keys.columns:
        key = keys[column].to_numpy()
        known = pd.notna(key)
        totals = pd.Series(key[known]).value_counts()
        mine = pd.DataFrame({"row": frame["row"].to_numpy()[known], "key": key[known]}).dropna()
        counts = mine.groupby(["row", "key"]).size()
        for (row, name), count in counts.items():
            out[int(row)][str(name)] = float(count) / float(totals[name]) * n
    return out
