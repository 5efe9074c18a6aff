"""The export's product vectors in the client, for similarity that needs no Vespa round trip.

The re-ranker's MMR (``similarity = "embedding"``) and the explanations' ``supported_by`` (the
history item closest by cosine) need the vectors of a few hundred candidates and of the user's
history. Returning 128 floats per hit from Vespa would multiply the response size of every
ranking query, so the client reads the same table the feeder sent (the export's
``product_embeddings.npy`` and ``product_ids.json``), L2-normalised as in the documents.
Products fed after the export have no row here: they get no vector (the re-ranker then falls
back to categories), never a wrong one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np


class ProductVectors:
    def __init__(self, product_ids: list[str], table: np.ndarray) -> None:
        table = np.asarray(table, dtype=np.float32)
        if table.ndim != 2 or table.shape[0] != len(product_ids):
            raise ValueError(
                f"product vectors: {len(product_ids)} ids for a table of shape {table.shape}"
            )
        norms = np.linalg.norm(table, axis=1, keepdims=True)
        self.table = table / np.where(norms > 0, norms, 1.0)
        self.row = {p: i for i, p in enumerate(product_ids)}

    @classmethod
    def load(cls, export_dir: Path | str) -> ProductVectors:
        folder = Path(export_dir)
        manifest = json.loads((folder / "manifest.json").read_text())
        entry = manifest["embeddings"]["product"]
        ids = json.loads((folder / entry["ids"]).read_text())
        return cls(ids, np.load(folder / entry["file"]))

    def get(self, product_id: str) -> np.ndarray | None:
        i = self.row.get(product_id)
        return None if i is None else self.table[i]

    def many(self, product_ids: Iterable[str]) -> dict[str, np.ndarray]:
        return {p: self.table[self.row[p]] for p in product_ids if p in self.row}


def load_product_vectors(export_dir: Path | str | None) -> ProductVectors | None:
    """The export's product vectors, or None when the folder has no product table."""
    if export_dir is None or not (Path(export_dir) / "manifest.json").is_file():
        return None
    manifest = json.loads((Path(export_dir) / "manifest.json").read_text())
    entry = (manifest.get("embeddings") or {}).get("product")
    if not entry or not (Path(export_dir) / entry["file"]).is_file():
        return None
    return ProductVectors.load(export_dir)
