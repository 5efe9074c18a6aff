"""onnxruntime against PyTorch eager on real batches of the dataset.

Real batches: users' actual most recent histories (and their request context), not random ids.
Each check runs at batch sizes 1 and 64 and history lengths 1, 37 and the model's maximum (the
newest L events of each history; lengths above the maximum do not exist for the model and are
skipped). The tolerance is an absolute 1e-4 on every output cell.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model_export.export import USER_ENCODER, USER_STAGE, Loaded
from model_export.manifest import Manifest

TOLERANCE = 1e-4
BATCH_SIZES = (1, 64)
LENGTHS = (1, 37)  # plus the model's maximum


@dataclass(frozen=True)
class ParityResult:
    model: str
    batch: int
    length: int
    max_abs_diff: float

    @property
    def ok(self) -> bool:
        return bool(self.max_abs_diff <= TOLERANCE)

    def line(self) -> str:
        verdict = "ok" if self.ok else f"FAIL (> {TOLERANCE:g})"
        return (
            f"parity {self.model}: batch {self.batch:>3} length {self.length:>3} "
            f"max |onnx - torch| = {self.max_abs_diff:.2e} {verdict}"
        )


def lengths_for(maximum: int) -> list[int]:
    return sorted({n for n in LENGTHS if n <= maximum} | {maximum})


def real_user_batch(loaded: Loaded, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """ONNX inputs of ``batch`` real users with history, at the model's full history length."""
    from trainer.models.sequences import request_context

    model, data = loaded.checkpoint.model, loaded.data
    tokens = model.history_tokens(data, USER_STAGE, np.arange(data.num_users))
    with_history = np.flatnonzero((tokens.items > 0).any(axis=1))
    if len(with_history) == 0:
        raise ValueError("no user has any history to check parity on")
    rng = np.random.default_rng(seed)
    users = rng.choice(with_history, size=batch, replace=len(with_history) < batch)
    tokens = model.history_tokens(data, USER_STAGE, users)
    inputs = {"items": tokens.items}
    for name, codes in model.feature_tensors(tokens).items():
        inputs[name] = codes.numpy()
    if model.config.query_features:
        context = request_context(data, USER_STAGE, users, model.config.history_events)
        for name, codes in model.query_tensors(context).items():
            inputs[f"query_{name}"] = codes.numpy()
    return {k: np.ascontiguousarray(v, dtype=np.int64) for k, v in inputs.items()}


def newest(inputs: dict[str, np.ndarray], length: int) -> dict[str, np.ndarray]:
    """The newest ``length`` events of each (left-padded) history; query inputs unchanged."""
    return {
        k: np.ascontiguousarray(v[:, -length:]) if v.ndim == 2 else v for k, v in inputs.items()
    }


def check_user_encoder(loaded: Loaded, onnx_path: Path) -> list[ParityResult]:
    import onnxruntime as ort

    from trainer.models.export import reference_user_vectors

    model = loaded.checkpoint.model
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    results = []
    for batch in BATCH_SIZES:
        full = real_user_batch(loaded, batch, seed=batch)
        for length in lengths_for(model.history_length):
            inputs = newest(full, length)
            got = session.run(None, {name: inputs[name] for name in names})[0]
            want = reference_user_vectors(model, inputs)
            diff = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
            results.append(ParityResult(USER_ENCODER, batch, length, diff))
    return results


def check_export(
    loaded: Loaded, folder: Path, manifest: Manifest, ranked: Any = None
) -> list[ParityResult]:
    """Parity of every ONNX model in the export (none for embedding-table models).
    ``ranked``: the :class:`model_export.ranker.LoadedRanker` of an export made with --ranker."""
    from model_export import ranker

    results = []
    names = {entry.name for entry in manifest.onnx}
    if USER_ENCODER in names:
        entry = manifest.onnx_by_name()[USER_ENCODER]
        results.extend(check_user_encoder(loaded, Path(folder) / entry.file))
    if names & ranker.MODEL_NAMES:
        if ranked is None:
            raise ValueError("the export holds ranker models but no ranker was given")
        results.extend(ranker.check_parity(loaded, ranked, folder))
    unknown = names - {USER_ENCODER, *ranker.MODEL_NAMES}
    if unknown:
        raise ValueError(f"no parity check for ONNX model {sorted(unknown)[0]!r}")
    return results
