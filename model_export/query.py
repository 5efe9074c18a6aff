"""The query inputs of the ``ranking`` profile, built from what the feeder stores.

This is the one place where a stored ``recent_item_idx`` (0-based rows of the export's product
list, newest first, as :mod:`model_export.feed` writes them) becomes the history encoder's ``hist``
(``item_idx + 1``, 0 = padding): clients that build ``input.query(hist)`` call
:func:`ranking_inputs` (or do exactly what it does) and nothing else adds 1.

Vespa's ``query(hist)`` is ``tensor<float>(d0[1],d1[50])`` while the ONNX input is int64: Vespa
converts the cells to the model's input type when it feeds the model, and so does the embedded
engine. Float32 holds every integer up to 2**24 exactly, so ids stay exact below that catalogue
size (the package check refuses larger catalogues).

numpy only: serving code may import this module.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

HISTORY_QUERY, CONTEXT_QUERY = "input.query(hist)", "input.query(ctx)"
HISTORY_LENGTH = 50  # query(hist) tensor<float>(d0[1],d1[50])
CONTEXT_LENGTH = 16  # query(ctx) tensor<float>(d0[1],d1[16])
FLOAT_EXACT = 1 << 24  # largest integer span a float32 cell carries exactly


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
