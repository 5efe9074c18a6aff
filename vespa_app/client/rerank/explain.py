"""The history item that most supports each recommended item ("because you viewed X")."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vespa_app.client.rerank.candidates import Candidate, HistoryItem


def supporting_items(
    items: Sequence[Candidate], history: Sequence[HistoryItem]
) -> list[dict[str, Any] | None]:
    """Per item: the history item with the highest embedding cosine when both have embeddings,
    else the most recent history item sharing its deepest category (history is newest first);
    None when nothing in the history relates to it."""
    with_vec = [h for h in history if h.embedding is not None]
    matrix = None
    if with_vec:
        matrix = np.stack([np.asarray(h.embedding, dtype=np.float64) for h in with_vec])
        matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    out: list[dict[str, Any] | None] = [None] * len(items)
    if matrix is not None:
        rows = [
            i
            for i, item in enumerate(items)
            if item.embedding is not None and np.shape(item.embedding) == (matrix.shape[1],)
        ]
        if rows:
            vectors = np.array([items[i].embedding for i in rows], dtype=np.float64)
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            sims = vectors @ matrix.T  # (items, history)
            best = sims.argmax(axis=1)  # first of equal similarities = most recent
            for row, i in enumerate(rows):
                j = int(best[row])
                out[i] = {
                    "product_id": with_vec[j].product_id,
                    "reason": "embedding_similarity",
                    "similarity": round(float(sims[row, j]), 6),
                }
    for i, item in enumerate(items):
        if out[i] is None:
            out[i] = _same_category(item, history)
    return out


def _same_category(item: Candidate, history: Sequence[HistoryItem]) -> dict[str, Any] | None:
    best_depth, best = 0, None
    for h in history:
        if h.product_id == item.product_id:
            continue
        depth = 0
        for a, b in zip(h.category_path, item.category_path, strict=False):
            if a != b:
                break
            depth += 1
        if depth > best_depth:  # strict: among equal depths the most recent wins
            best_depth, best = depth, h
    if best is None:
        return None
    return {
        "product_id": best.product_id,
        "reason": "same_category",
        "category": item.category_path[best_depth - 1],
    }
