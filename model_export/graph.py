"""The item-user bipartite graph the serving side walks (Pixie-like candidates), as CSR arrays.

Written by the export next to the embeddings as ``graph.npz`` (numpy only; the serving module
:mod:`vespa_app.client.graph_walk` reads it without torch):

- ``item_indptr`` (num_items + 1,) int64 and ``item_users`` (edges,) int32: the users of each
  item (CSR rows = the export's item_idx, product_ids.json);
- ``user_indptr`` (num_users + 1,) int64 and ``user_items`` (edges,) int32: the items of each
  user (rows = the export's user_idx, user_ids.json).

Edges are the distinct (user, item) pairs of positive events in the history the exported user
vectors see (every event except the held-out test targets, :data:`model_export.export.USER_STAGE`),
so the walk and the embeddings describe the same past.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

GRAPH_FILE = "graph.npz"


def bipartite_csr(
    user_idx: np.ndarray, item_idx: np.ndarray, num_users: int, num_items: int
) -> dict[str, np.ndarray]:
    """The four CSR arrays of the distinct (user, item) pairs."""
    ones = np.ones(len(user_idx), dtype=np.int8)
    matrix = sp.csr_matrix((ones, (user_idx, item_idx)), shape=(num_users, num_items))
    matrix.sum_duplicates()
    matrix.sort_indices()
    by_item = matrix.T.tocsr()
    by_item.sort_indices()
    return {
        "user_indptr": matrix.indptr.astype(np.int64),
        "user_items": matrix.indices.astype(np.int32),
        "item_indptr": by_item.indptr.astype(np.int64),
        "item_users": by_item.indices.astype(np.int32),
    }


def write_graph(out: Path, data) -> dict[str, object]:
    """Write ``graph.npz`` for ``data`` (an InteractionData); returns the manifest's section."""
    from model_export.export import USER_STAGE

    history = data.positives(data.history(USER_STAGE))
    arrays = bipartite_csr(
        history["user_idx"].to_numpy(),
        history["item_idx"].to_numpy(),
        data.num_users,
        data.num_items,
    )
    np.savez_compressed(Path(out) / GRAPH_FILE, **arrays)
    return {
        "file": GRAPH_FILE,
        "num_users": int(data.num_users),
        "num_items": int(data.num_items),
        "edges": int(arrays["user_items"].size),
        "history_stage": USER_STAGE,
    }
