"""ONNX export of a sequence model's user encoder: history (+ context codes) in, user vector out.

The exported graph takes ``items`` int64 (B, L), the user's most recent events oldest first and
left-padded with 0, as ``item_idx + 1`` tokens, plus one int64 (B, L) input per context feature
the model was trained with (codes of :mod:`trainer.models.sequences`; locations already hashed
into the model's buckets), then one int64 (B,) input ``query_<name>`` per request-context feature
(``config.query_features``: the request's gap, hour, device, location codes). It returns
``user_embedding`` float32 (B, D), in the space of the item
embeddings (:meth:`Recommender.item_embeddings`), so a candidate's score is a dot product. Batch
and sequence length are dynamic (1 <= L <= the model's history length), and the file is
self-contained (no external data), as Vespa needs.

Following anchors §7: dynamo exporter, ``dynamic_shapes`` with ``torch.export.Dim``,
``external_data=False``; always parity-test at shapes other than the export example.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from trainer.models.sequences import feature_vocab_sizes
from trainer.models.sequential import SequenceRecommender

OUTPUT_NAME = "user_embedding"
MAX_BATCH = 4096


class UserEncoder(nn.Module):
    """Positional tensor inputs (items, each token feature, each query feature) -> (B, D)."""

    def __init__(
        self, network: nn.Module, feature_names: tuple[str, ...], query_names: tuple[str, ...]
    ):
        super().__init__()
        self.network = network
        self.feature_names = feature_names
        self.query_names = query_names

    def forward(self, items: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        split = len(self.feature_names)
        features = dict(zip(self.feature_names, rest[:split], strict=True))
        query = dict(zip(self.query_names, rest[split:], strict=True))
        return self.network.user_vector(items, features, query)


def input_names(model: SequenceRecommender) -> list[str]:
    return [
        "items",
        *model.config.features,
        *(f"query_{name}" for name in model.config.query_features),
    ]


def example_inputs(
    model: SequenceRecommender, batch: int, length: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """Random valid int64 inputs (batch, length), each row left-padded by a random amount."""
    rng = np.random.default_rng(seed)
    sizes = feature_vocab_sizes(model.config.location_buckets)
    used = rng.integers(1, length + 1, size=batch)
    real = np.arange(length)[None, :] >= (length - used)[:, None]  # (B, L) left padding
    inputs = {"items": np.where(real, rng.integers(1, model.num_items + 1, (batch, length)), 0)}
    for name in model.config.features:
        inputs[name] = np.where(real, rng.integers(1, sizes[name], (batch, length)), 0)
    for name in model.config.query_features:
        inputs[f"query_{name}"] = rng.integers(1, sizes[name], batch)
    return {k: v.astype(np.int64) for k, v in inputs.items()}


def export_user_encoder(
    model: SequenceRecommender, path: Path, example_batch: int = 2, example_len: int | None = None
) -> Path:
    """Write the user encoder of ``model`` to ``path`` as one ONNX file; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.network.eval()
    encoder = UserEncoder(
        model.network, tuple(model.config.features), tuple(model.config.query_features)
    ).eval()
    length = example_len or model.history_length
    inputs = example_inputs(model, example_batch, length)
    args = tuple(torch.as_tensor(inputs[name]) for name in input_names(model))
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    seq = torch.export.Dim("seq", min=1, max=model.history_length)
    shapes = tuple({0: batch, 1: seq} if a.dim() == 2 else {0: batch} for a in args)
    with warnings.catch_warnings():
        # The exporter's own deprecation notices (pytree LeafSpec, axis renaming) are not ours.
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*axis name.*", category=UserWarning)
        program = torch.onnx.export(
            encoder,
            args,
            dynamo=True,
            external_data=False,
            input_names=input_names(model),
            output_names=[OUTPUT_NAME],
            # Structure of forward(items, *rest); without extra inputs only items remains.
            dynamic_shapes=(shapes[0], shapes[1:]) if len(shapes) > 1 else shapes,
            verbose=False,
        )
        program.save(str(path), external_data=False)
    return path


@torch.no_grad()
def reference_user_vectors(model: SequenceRecommender, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """The eager PyTorch output for the same inputs as the ONNX graph (for parity checks)."""
    model.network.eval()
    features = {name: torch.as_tensor(inputs[name]) for name in model.config.features}
    query = {n: torch.as_tensor(inputs[f"query_{n}"]) for n in model.config.query_features}
    return model.network.user_vector(torch.as_tensor(inputs["items"]), features, query).numpy()
