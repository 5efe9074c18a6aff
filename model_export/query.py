"""The query inputs of the ``ranking`` profile, built from what the feeder stores.

This is the one place where a stored ``recent_item_idx`` (0-based rows of the export's product
list, newest first, as :mod:`model_export.feed` writes them) becomes the history encoder's ``hist``
(``item_idx + 1``, 0 = padding): clients that build ``input.query(hist)`` call
:func:`ranking_inputs` (or do exactly what it does) and nothing else adds 1.

Vespa's ``query(hist)`` is ``tensor<float>(d0[1],d1[50])`` (``d1[100]`` in ``ranking_features``:
pass ``length`` = the manifest's ``ranker.history_length``) while the ONNX input is int64: Vespa
converts the cells to the model's input type when it feeds the model, and so does the embedded
engine. Float32 holds every integer up to 2**24 exactly, so ids stay exact below that catalogue
size (the package check refuses larger catalogues).

The ``ranking_features`` profile also takes per-event codes aligned with ``hist``
(``query(hist_event)``, ``query(hist_hour)``, ``query(hist_device)``, ``query(hist_location)``):
:func:`history_codes` builds them from the user document's ``recent_event_types``,
``recent_hours``, ``recent_devices`` and ``recent_locations`` (aligned with ``recent_item_idx``,
as :mod:`model_export.feed` and the pipeline's ``add_to_history`` write them) with the codes of
trainer.ranking.samples.HistoryIndex: 0 = padding, 1 = unknown, value + 2 (event and device as
their index in EVENT_TYPES / DEVICES, hour 0-23, location as its index in the export manifest's
``ranker.locations`` hashed into ``2 + code % (location_buckets - 2)``).

numpy only: serving code may import this module.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

HISTORY_QUERY, CONTEXT_QUERY = "input.query(hist)", "input.query(ctx)"
HISTORY_LENGTH = 50  # the ranking profile's query(hist) tensor<float>(d0[1],d1[50])
CONTEXT_LENGTH = 16  # query(ctx) tensor<float>(d0[1],d1[16])
FLOAT_EXACT = 1 << 24  # largest integer span a float32 cell carries exactly
# trainer.data.schema.EVENT_TYPES / DEVICES (written again: serving code does not import the
# trainer; tests/model_export checks they are equal).
EVENT_TYPES = ("impression", "click", "favorite", "cart", "purchase")
DEVICES = ("mobile", "desktop", "tablet", "app")
HISTORY_FEATURES = ("event", "hour", "device", "location")
PADDING, UNKNOWN = 0, 1
# History feature -> the user document field holding each recent event's value, aligned with
# recent_item_idx (written by model_export.feed and the pipeline's add_to_history).
CONTEXT_FIELDS = {
    "event": "recent_event_types",
    "hour": "recent_hours",
    "device": "recent_devices",
    "location": "recent_locations",
}


def history_row(recent_item_idx: Sequence[int], length: int = HISTORY_LENGTH) -> list[float]:
    """``recent_item_idx`` (newest first, 0-based) -> ``length`` cells ``item_idx + 1``, 0-padded
    on the right (the newest ``length`` events when there are more)."""
    idx = np.asarray(list(recent_item_idx)[:length], dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() + 1 >= FLOAT_EXACT):
        raise ValueError(
            f"recent_item_idx: values must be in [0, {FLOAT_EXACT - 1}), "
            f"got {int(idx.min())}..{int(idx.max())}"
        )
    row = np.zeros(length, dtype=np.float64)
    row[: idx.size] = idx + 1
    return row.tolist()


def ranking_inputs(
    recent_item_idx: Sequence[int], ctx: Sequence[float], length: int = HISTORY_LENGTH
) -> dict[str, list[list[float]]]:
    """The ``input.query(hist)`` and ``input.query(ctx)`` request parameters (dense short form)."""
    context = [float(x) for x in ctx]
    if len(context) != CONTEXT_LENGTH:
        raise ValueError(f"ctx: {len(context)} values, the ranker wants {CONTEXT_LENGTH}")
    return {HISTORY_QUERY: [history_row(recent_item_idx, length)], CONTEXT_QUERY: [context]}


def _code(value: object, vocabulary: Sequence[str]) -> int:
    return vocabulary.index(value) + 2 if value in vocabulary else UNKNOWN


def history_codes(
    features: Sequence[str],
    count: int,
    event_types: Sequence[str | None],
    hours: Sequence[int | None],
    devices: Sequence[str | None],
    locations: Sequence[str | None],
    location_vocabulary: Sequence[str] = (),
    location_buckets: int = 64,
    length: int = HISTORY_LENGTH,
) -> dict[str, list[list[float]]]:
    """``input.query(hist_<name>)`` for each name in ``features`` (a ranker's
    ``history_features``): per-event codes aligned with :func:`history_row`'s cells (newest
    first, the newest ``length``), 0-padded. ``count``: the number of history events
    (``len(recent_item_idx)``); the four lists are the user document's recent per-event values
    aligned with it; a missing (lists shorter than ``count``) or unknown value codes 1."""
    unknown = [name for name in features if name not in HISTORY_FEATURES]
    if unknown:
        raise ValueError(f"history feature {unknown[0]!r} (known: {', '.join(HISTORY_FEATURES)})")
    if location_buckets < 3:
        raise ValueError(f"location_buckets must be at least 3, got {location_buckets}")
    vocabulary = list(location_vocabulary)

    def location(value: object) -> int:
        if value not in vocabulary:
            return UNKNOWN
        return 2 + vocabulary.index(value) % (location_buckets - 2)

    def hour(value: object) -> int:
        ok = isinstance(value, int | np.integer) and not isinstance(value, bool)
        return int(value) + 2 if ok and 0 <= value < 24 else UNKNOWN

    columns = {
        "event": [_code(v, EVENT_TYPES) for v in event_types],
        "hour": [hour(v) for v in hours],
        "device": [_code(v, DEVICES) for v in devices],
        "location": [location(v) for v in locations],
    }
    out = {}
    for name in features:
        row = np.zeros(length, dtype=np.float64)
        values = (columns[name] + [UNKNOWN] * count)[: min(count, length)]
        row[: len(values)] = values
        out[f"input.query(hist_{name})"] = [row.tolist()]
    return out
