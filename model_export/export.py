"""Checkpoint -> export folder: embeddings, id lists, single-file ONNX models and the manifest.

What each model contributes:

- every recommender with :meth:`~trainer.models.base.Recommender.item_embeddings` gives the
  product table and, from :meth:`user_embeddings`, the user table (same space: score = dot);
- a sequence model (SASRec, BERT4Rec) also gives its user encoder as ``user_encoder.onnx``
  (trainer.models.export: history tokens in, ``user_embedding`` out, dynamic batch and length);
- graph models and matrix factorisation are transductive: their users are a table, no encoder;
- every export also holds ``graph.npz``, the item-user graph of the same history as CSR arrays
  (:mod:`model_export.graph`), which the serving side walks for Pixie-like candidates.

User vectors come from the history the model may use at the ``test`` stage (every event except the
held-out test targets), the newest state the Recommender contract exposes.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from model_export.manifest import (
    ExportError,
    Manifest,
    describe_onnx,
    library_versions,
    sha256,
)
from trainer.data.interactions import InteractionData
from trainer.models.base import Checkpoint, load_checkpoint

USER_STAGE = "test"
PRODUCT_EMBEDDINGS = "product_embeddings.npy"
USER_EMBEDDINGS = "user_embeddings.npy"
PRODUCT_IDS = "product_ids.json"
USER_IDS = "user_ids.json"
USER_ENCODER = "user_encoder"


@dataclasses.dataclass
class Loaded:
    """A checkpoint with the dataset split it was trained on."""

    path: Path
    checkpoint: Checkpoint
    data: InteractionData
    dataset_path: Path


def load(checkpoint: Path, dataset: Path | None = None) -> Loaded:
    """Rebuild the model and reload its dataset (``dataset`` or the path the checkpoint records)."""
    from trainer.data.loaders import load_dataset
    from trainer.data.splits import split_dataset
    from trainer.models.registry import all_models

    all_models()  # imports every model module, so the checkpoint's model name resolves
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise ExportError(f"checkpoint not found: {checkpoint}")
    try:
        saved = load_checkpoint(checkpoint)
    except ValueError as error:
        raise ExportError(str(error)) from None
    recorded = saved.extra.get("dataset_path")
    folder = Path(dataset) if dataset else Path(recorded) if recorded else None
    if folder is None:
        raise ExportError(
            f"{checkpoint}: the checkpoint records no dataset path; pass --dataset FOLDER"
        )
    if not folder.is_dir():
        raise ExportError(f"dataset folder not found: {folder} (pass --dataset FOLDER)")
    data = split_dataset(load_dataset(folder), saved.protocol)
    if saved.item_ids != data.items.ids.tolist() or saved.user_ids != data.users.ids.tolist():
        raise ExportError(
            f"{checkpoint} was trained on {len(saved.user_ids)} users x {len(saved.item_ids)} "
            f"items; dataset {folder} has {data.num_users} x {data.num_items} (different ids)"
        )
    return Loaded(checkpoint, saved, data, folder)


def validation_metrics(extra: dict[str, Any]) -> dict[str, float]:
    """The selected epoch's validation figures from the checkpoint's training history, if any."""
    history = extra.get("history") or []
    best = extra.get("best_epoch")
    rows = [r for r in history if any(str(k).startswith("valid_") for k in r)]
    if not rows:
        return {}
    row = next((r for r in rows if r.get("epoch") == best), rows[-1])
    metrics = {k: float(v) for k, v in row.items() if str(k).startswith("valid_")}
    metrics["epoch"] = float(row.get("epoch", len(history)))
    return metrics


def _table(tensor: Any, what: str, rows: int) -> np.ndarray:
    if tensor is None:
        raise ExportError(f"the model has no {what} embeddings; nothing to serve from Vespa")
    table = np.ascontiguousarray(tensor.detach().cpu().numpy(), dtype=np.float32)
    if table.ndim != 2 or table.shape[0] != rows:
        raise ExportError(f"{what} embeddings have shape {table.shape}, expected ({rows}, D)")
    if not np.isfinite(table).all():
        raise ExportError(f"{what} embeddings contain NaN or infinite values")
    return table


def export(loaded: Loaded, out: Path, ranked: Any = None) -> Manifest:
    """Write every artifact of ``loaded`` under ``out`` and return the (unwritten) manifest.

    ``ranked`` (a :class:`model_export.ranker.LoadedRanker` trained over this checkpoint's item
    embeddings) adds history_encoder.onnx and ranker.onnx (``*_features.onnx`` for a ranker with
    features) and the manifest's ``ranker`` section.
    """
    from trainer.models.sequential import SequenceRecommender

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model, data = loaded.checkpoint.model, loaded.data
    items = _table(model.item_embeddings(), "product", model.num_items)
    users = _table(model.user_embeddings(data, USER_STAGE), "user", model.num_users)
    if items.shape[1] != users.shape[1]:
        raise ExportError(
            f"product embeddings are {items.shape[1]}-d but user embeddings {users.shape[1]}-d"
        )
    np.save(out / PRODUCT_EMBEDDINGS, items)
    np.save(out / USER_EMBEDDINGS, users)
    (out / PRODUCT_IDS).write_text(json.dumps(loaded.checkpoint.item_ids) + "\n")
    (out / USER_IDS).write_text(json.dumps(loaded.checkpoint.user_ids) + "\n")

    onnx_entries = []
    history_length = None
    if isinstance(model, SequenceRecommender):
        from trainer.models.export import export_user_encoder

        history_length = model.history_length
        path = export_user_encoder(model, out / f"{USER_ENCODER}.onnx")
        onnx_entries.append(
            describe_onnx(
                path,
                USER_ENCODER,
                out,
                "history tokens (item_idx + 1, left-padded with 0) -> user vector",
            )
        )

    ranker_section: dict[str, Any] = {}
    if ranked is not None:
        from model_export import ranker

        ranker.check_items(ranked, items, loaded.path)
        ranker.check_users(ranked, users, loaded.path)
        entries, ranker_section = ranker.export(ranked, out, tuple(data.locations))
        onnx_entries.extend(entries)

    from model_export.graph import write_graph

    graph = write_graph(out, data)

    dim = int(items.shape[1])
    dimensions: dict[str, int | None] = {"embedding": dim, "history_length": history_length}
    if ranker_section:
        dimensions["ranker_history_length"] = ranker_section["history_length"]
        dimensions["user_state"] = ranker_section["state_dim"]
    return Manifest(
        model=model.name,
        dataset={
            "name": loaded.checkpoint.dataset.get("name"),
            "path": str(loaded.dataset_path.resolve()),
            "protocol": loaded.checkpoint.protocol,
            "num_users": model.num_users,
            "num_items": model.num_items,
        },
        source_checkpoint={"path": str(loaded.path.resolve()), "sha256": sha256(loaded.path)},
        config=json.loads(json.dumps(dataclasses.asdict(model.config), default=list)),
        dimensions=dimensions,
        embeddings={
            "product": {
                "file": PRODUCT_EMBEDDINGS,
                "ids": PRODUCT_IDS,
                "shape": list(items.shape),
                "dtype": "float32",
                "normalized": False,
            },
            "user": {
                "file": USER_EMBEDDINGS,
                "ids": USER_IDS,
                "shape": list(users.shape),
                "dtype": "float32",
                "normalized": False,
                "history_stage": USER_STAGE,
            },
        },
        onnx=onnx_entries,
        metrics=validation_metrics(loaded.checkpoint.extra),
        versions=library_versions(),
        ranker=ranker_section,
        graph=graph,
    )


def read_embeddings(folder: Path, manifest: Manifest, kind: str) -> tuple[list[str], np.ndarray]:
    """(ids, (N, D) float32 table) of ``kind`` (product or user), checked against the manifest."""
    entry = manifest.embeddings[kind]
    ids = json.loads((Path(folder) / entry["ids"]).read_text())
    table = np.load(Path(folder) / entry["file"])
    if list(table.shape) != entry["shape"] or len(ids) != table.shape[0]:
        raise ExportError(
            f"{folder / entry['file']}: shape {list(table.shape)} with {len(ids)} ids, "
            f"manifest says {entry['shape']}"
        )
    return ids, table
