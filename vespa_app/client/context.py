"""The request-context vector ``query(ctx)`` of the ranking profile, built by the client.

``query(hist)`` comes from ``model_export.query.ranking_inputs`` (numpy only, the one place that
turns stored ``recent_item_idx`` into ``item_idx + 1``).

``ctx`` is the 16-float request-context vector of ``trainer.ranking.features.context_vectors``
(docs/ranker.md), written again here in numpy because serving code does not import the trainer
(which brings torch). tests/vespa_app/client/test_pipeline.py checks both give the same floats.

====== ============================================================================
0      1 if the request's hour of day is known, else 0
1, 2   sin, cos of 2 pi hour / 24 (0, 0 when unknown)
3..6   device one-hot in :data:`DEVICES` order (all 0 if unknown)
7      log1p(seconds since the user's previous event) / log1p(one year), clipped to [0, 1];
       0 when unknown
8..15  location one-hot over ``location_code % 8``; the code is the location's index in the
       training dataset's sorted location names (InteractionData.locations); unknown: all 0
====== ============================================================================
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

DEVICES: tuple[str, ...] = ("mobile", "desktop", "tablet", "app")  # trainer.data.schema.DEVICES
CONTEXT_DIM = 16
LOCATION_SLOTS = 8
YEAR_SECONDS = 365 * 24 * 3600


def context_vector(
    hour: int | None,
    device: str | None,
    location: str | None,
    gap_seconds: float | None,
    locations: Sequence[str] = (),
) -> np.ndarray:
    """(16,) float32 ``ctx`` for one request; None (or a name outside the vocabulary) = unknown."""
    out = np.zeros(CONTEXT_DIM, dtype=np.float32)
    if hour is not None and hour >= 0:
        angle = 2 * np.pi * np.int64(hour) / 24.0
        out[0] = 1.0
        out[1] = np.sin(angle)
        out[2] = np.cos(angle)
    if device in DEVICES:
        out[3 + DEVICES.index(device)] = 1.0
    if gap_seconds is not None and gap_seconds >= 0 and math.isfinite(gap_seconds):
        scaled = np.log1p(np.float64(gap_seconds)) / np.log1p(YEAR_SECONDS)
        out[7] = np.clip(scaled, 0.0, 1.0)
    if location is not None and location in locations:
        out[8 + list(locations).index(location) % LOCATION_SLOTS] = 1.0
    return out
