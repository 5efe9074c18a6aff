"""Exporting the middle-stage ranker (trainer.models.ranker) beside a retrieval export.

The ranker is trained over the retrieval model's item embeddings (frozen, L2-normalised) and
Vespa feeds it those embeddings as ``cand`` (``attribute(embedding)``, fed normalised). So a
ranker is exported together with the retrieval checkpoint whose product embeddings it was trained
on, and the export refuses a pair whose tables differ: Vespa would score other vectors than the
ranker saw in training.

A residual ranker (``Ranker(..., user_embeddings=...)``, docs/ranker.md) also carries the
retrieval model's user vectors: score = scorer + W * cos(user, candidate). Its ONNX files are the
same; Vespa adds W * cos in ``model_score`` from ``closeness(field, embedding)``, so the export
also refuses a ranker whose user vectors are not the export's user embeddings (L2-normalised, what
the feeder writes and the client sends as ``query(q_user)``), and records W in the manifest's
``ranker.retrieval_weight`` for clients to send as ``input.query(retrieval_weight)``.

A ranker trained with features (``history_features`` / ``cand_features`` / ``cand_codes``,
docs/ranker.md; its manifest section records the codes' training id maps, ``code_ids``) is
served by the package's ``ranking_features`` profile instead of ``ranking``: its files are named
``history_encoder_features.onnx`` / ``ranker_features.onnx`` (the files that profile's onnx-model
blocks load, so the package check and ``--install`` pair them), and the manifest's
``ranker.profile`` names the profile clients query with (:func:`profile_for`).

Two self-contained ONNX files (docs/ranker.md, vespa-subset.md §9):

- ``history_encoder.onnx``: ``hist`` int64 (B, L <= history_len) ``item_idx + 1`` newest first,
  0-padded, ``ctx`` float32 (B, 16) [, ``hist_<feature>`` int64 (B, L)] -> ``user_state`` (B, 64);
- ``ranker.onnx``: ``user_state`` float32 (B, 64), ``cand`` float32 (B, C) -> ``score`` (B, 1).

``hist`` stays int64: the profile's ``query(hist)`` is ``tensor<float>`` and Vespa (like the
embedded engine) converts the cells to the model's input type when it feeds the model.

Parity runs on real requests of the dataset (users' actual newest histories and the context of
their next request, the inputs :meth:`Ranker.request` builds for scoring) at batch sizes 1 and 64
and history lengths 1, 37 and history_len.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model_export.export import USER_STAGE, Loaded, validation_metrics
from model_export.manifest import ExportError, OnnxEntry, describe_onnx, sha256
from model_export.parity import BATCH_SIZES, ParityResult, lengths_for

HISTORY_ENCODER, RANKER = "history_encoder", "ranker"
# Rank profile -> (history encoder, scorer) model names = the stems of the files it loads.
PROFILE_MODELS = {
    "ranking": (HISTORY_ENCODER, RANKER),
    "ranking_features": (f"{HISTORY_ENCODER}_features", f"{RANKER}_features"),
}
MODEL_NAMES = frozenset(name for pair in PROFILE_MODELS.values() for name in pair)
TABLE_TOLERANCE = 1e-5  # ranker item table vs the export's normalised product embeddings


@dataclass
class LoadedRanker:
    path: Path
    ranker: Any  # trainer.models.ranker.Ranker
    extra: dict[str, Any]


def load(path: Path) -> LoadedRanker:
    import torch

    from trainer.models.ranker import load_ranker

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"ranker checkpoint not found: {path}")
    try:
        ranker = load_ranker(path)
    except (ValueError, KeyError, TypeError) as error:
        raise ExportError(f"{path}: {error}") from None
    extra = torch.load(path, map_location="cpu", weights_only=False).get("extra") or {}
    return LoadedRanker(path, ranker, dict(extra))


def check_items(ranked: LoadedRanker, items: np.ndarray, source: Path) -> None:
    """The ranker's item table must be the export's product embeddings, L2-normalised."""
    table = ranked.ranker.item_vectors.numpy()
    if table.shape != items.shape:
        raise ExportError(
            f"ranker {ranked.path}: item table {list(table.shape)}; "
            f"retrieval checkpoint {source}: product embeddings {list(items.shape)}"
        )
    norms = np.linalg.norm(items, axis=1, keepdims=True)
    expected = items / np.where(norms > 0, norms, 1.0)
    diff = float(np.abs(table - expected).max()) if table.size else 0.0
    if diff > TABLE_TOLERANCE:
        raise ExportError(
            f"ranker {ranked.path}: item table differs from the normalised product embeddings "
            f"of {source} by {diff:.2e} (> {TABLE_TOLERANCE:g}); "
            "was the ranker trained on another retrieval model?"
        )


def check_users(ranked: LoadedRanker, users: np.ndarray, source: Path) -> None:
    """A residual ranker's retrieval user vectors must be the export's user embeddings,
    L2-normalised: Vespa computes its W * cos term from the user document the feeder writes."""
    vectors = ranked.ranker.user_vectors
    if vectors is None:
        return
    table = vectors.numpy()
    if table.shape != users.shape:
        raise ExportError(
            f"ranker {ranked.path}: user table {list(table.shape)}; "
            f"retrieval checkpoint {source}: user embeddings {list(users.shape)}"
        )
    norms = np.linalg.norm(users, axis=1, keepdims=True)
    expected = users / np.where(norms > 0, norms, 1.0)
    diff = float(np.abs(table - expected).max()) if table.size else 0.0
    if diff > TABLE_TOLERANCE:
        raise ExportError(
            f"ranker {ranked.path}: user table differs from the normalised user embeddings "
            f"of {source} by {diff:.2e} (> {TABLE_TOLERANCE:g}); "
            "was the residual ranker trained on another retrieval model or history stage?"
        )


def profile_for(config: Any) -> str:
    """The rank profile that serves a ranker: ``ranking_features`` when it reads history codes
    or candidate feature columns, else ``ranking`` (the §9 interface)."""
    codes = getattr(config, "cand_codes", ())
    features = config.history_features or config.cand_features or codes
    return "ranking_features" if features else "ranking"


def model_names(config: Any) -> tuple[str, str]:
    """(history encoder, scorer) model names of a ranker: the files its profile loads."""
    return PROFILE_MODELS[profile_for(config)]


def export(
    ranked: LoadedRanker, out: Path, locations: tuple[str, ...] = ()
) -> tuple[list[OnnxEntry], dict[str, Any]]:
    """Write both ONNX files; returns their manifest entries and the manifest's ranker section.
    ``locations``: the dataset's location names (their index is the code ``hist_location`` and
    ``ctx`` hash), recorded for clients."""
    from trainer.models.ranker import export_candidate_scorer, export_history_encoder

    ranker, out = ranked.ranker, Path(out)
    config = ranker.config
    length = int(config.history_len)
    encoder_name, scorer_name = model_names(config)
    encoder = export_history_encoder(ranker, out / f"{encoder_name}.onnx")
    scorer = export_candidate_scorer(ranker, out / f"{scorer_name}.onnx")
    hist_limits = {"hist": [None, length]}
    hist_limits.update({f"hist_{n}": [None, length] for n in config.history_features})
    entries = [
        dataclasses.replace(
            describe_onnx(
                encoder,
                encoder_name,
                out,
                "query-only: recent history (item_idx + 1, newest first, 0-padded) and "
                "request context -> user_state",
            ),
            limits=hist_limits,
        ),
        describe_onnx(scorer, scorer_name, out, "per hit: user_state and candidate -> score"),
    ]
    section = {
        # The rank profile whose onnx-model blocks load these files; clients query with it.
        "profile": profile_for(config),
        # Per-event code inputs hist_<name> (model_export.query.history_codes) and the extra
        # cand columns after the embedding, in order (the profile's cand function).
        "history_features": list(config.history_features),
        "cand_features": list(config.cand_features),
        # Candidate codes after the feature columns (seller_idx / category_idx attributes) and
        # their training id maps: the feeder writes each product's index in these lists.
        "cand_codes": list(config.cand_codes),
        "code_ids": {name: list(ids) for name, ids in ranker.vocabularies.items()},
        "location_buckets": int(config.location_buckets),
        "locations": list(locations),
        "source_checkpoint": {"path": str(ranked.path.resolve()), "sha256": sha256(ranked.path)},
        "config": json.loads(json.dumps(dataclasses.asdict(config), default=list)),
        "history_length": length,
        "state_dim": int(config.state_dim),
        "cand_dim": int(ranker.cand_dim),
        "hist_offset": 1,  # hist = recent_item_idx + 1 (model_export.query.ranking_inputs)
        # Residual on retrieval: score = scorer + W * cos(user, candidate); clients send W as
        # input.query(retrieval_weight) (0 for a ranker without the residual term).
        "residual": bool(ranker.residual),
        "retrieval_weight": float(ranker.weight) if ranker.residual else 0.0,
        # The selected epoch's validation figures, when the checkpoint carries its fit report.
        "metrics": validation_metrics(ranked.extra),
    }
    return entries, section


def real_requests(loaded: Loaded, ranked: LoadedRanker, batch: int, seed: int) -> Any:
    """``batch`` real users with history: their newest events and next-request context."""
    ranker, data = ranked.ranker, loaded.data
    everyone = np.arange(data.num_users)
    probe = ranker.request(data, USER_STAGE, everyone, np.zeros((data.num_users, 1), np.int64))
    with_history = np.flatnonzero((probe.hist > 0).any(axis=1))
    if len(with_history) == 0:
        raise ExportError("ranker parity: no user has any history in the dataset")
    rng = np.random.default_rng(seed)
    users = rng.choice(with_history, size=batch, replace=len(with_history) < batch)
    samples = probe.take(users)
    # A real candidate per row: the product of the user's newest event.
    items = np.maximum(samples.hist[:, :1] - 1, 0)
    return dataclasses.replace(samples, items=items)


def check_parity(loaded: Loaded, ranked: LoadedRanker, folder: Path) -> list[ParityResult]:
    import onnxruntime as ort

    from trainer.models.ranker import (
        CONTEXT_INPUT,
        HISTORY_INPUT,
        reference_score,
        reference_user_state,
    )

    ranker = ranked.ranker
    if (ranker.config.cand_features or ranker.config.cand_codes) and ranker.cand_table is None:
        ranker.bind(loaded.data)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    encoder_name, scorer_name = model_names(ranker.config)
    encoder, scorer = (
        ort.InferenceSession(
            str(Path(folder) / f"{name}.onnx"), options, providers=["CPUExecutionProvider"]
        )
        for name in (encoder_name, scorer_name)
    )
    results = []
    for batch in BATCH_SIZES:
        samples = real_requests(loaded, ranked, batch, seed=batch)
        for length in lengths_for(ranker.config.history_len):
            inputs = {
                HISTORY_INPUT: np.ascontiguousarray(samples.hist[:, :length], dtype=np.int64),
                CONTEXT_INPUT: np.ascontiguousarray(samples.ctx, dtype=np.float32),
            }
            for name in ranker.config.history_features:
                codes = samples.features[name][:, :length]
                inputs[f"hist_{name}"] = np.ascontiguousarray(codes, dtype=np.int64)
            got = encoder.run(None, inputs)[0]
            state = reference_user_state(ranker, inputs)
            results.append(ParityResult(encoder_name, batch, length, _diff(got, state)))
            cand = ranker.cand_vectors(samples.items, samples.now)[:, 0].numpy()
            feed = {"user_state": state, "cand": np.ascontiguousarray(cand, dtype=np.float32)}
            got = scorer.run(None, feed)[0]
            want = reference_score(ranker, state, feed["cand"])
            results.append(ParityResult(scorer_name, batch, length, _diff(got, want)))
    return results


def _diff(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
