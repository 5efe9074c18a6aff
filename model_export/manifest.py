"""The export manifest: the one file that says what an export holds and where it came from.

Every other place that needs an embedding width, an ONNX input/output name or a file name reads it
from ``manifest.json`` (the package check compares the Vespa schemas against it, the feeder reads
the embedding files through it).
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import onnx

MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1
LIBRARIES = ("torch", "onnx", "onnxruntime", "numpy")

_ELEM_TYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.BFLOAT16: "bfloat16",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.BOOL: "bool",
}


class ExportError(Exception):
    """A problem with what was asked for or a contract mismatch; the CLI exits with status 2."""


@dataclass(frozen=True)
class TensorSpec:
    """One ONNX graph input or output. ``shape`` holds ints (fixed) or names (symbolic axes)."""

    name: str
    type: str
    shape: list[int | str]


@dataclass(frozen=True)
class OnnxEntry:
    name: str  # the model's name, and the stem of its file (history_encoder -> .onnx)
    file: str  # relative to the export folder
    sha256: str
    opset: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    role: str = ""  # what the model computes, for people reading the manifest
    # Input name -> largest size per axis the model accepts (None: any), where the graph's
    # symbolic axes do not say it (the history encoders' position tables end at history_len).
    limits: dict[str, list[int | None]] = field(default_factory=dict)


@dataclass
class Manifest:
    model: str
    dataset: dict[str, Any]
    source_checkpoint: dict[str, str]
    config: dict[str, Any]
    dimensions: dict[str, int | None]
    embeddings: dict[str, dict[str, Any]]
    onnx: list[OnnxEntry] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    parity: list[dict[str, Any]] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    # The middle-stage ranker exported with this retrieval model (empty without --ranker).
    ranker: dict[str, Any] = field(default_factory=dict)
    # The item-user graph for walk candidates (model_export.graph; empty in older exports).
    graph: dict[str, Any] = field(default_factory=dict)
    format: int = FORMAT_VERSION

    @property
    def embedding_dim(self) -> int:
        return int(self.dimensions["embedding"])

    def onnx_by_name(self) -> dict[str, OnnxEntry]:
        return {entry.name: entry for entry in self.onnx}

    def write(self, folder: Path) -> Path:
        path = Path(folder) / MANIFEST_FILE
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        path = Path(folder) / MANIFEST_FILE
        if not path.is_file():
            raise ExportError(
                f"{path}: no manifest (not an export folder? run python -m model_export)"
            )
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ExportError(f"{path}:{error.lineno}: invalid JSON: {error.msg}") from None
        if raw.get("format") != FORMAT_VERSION:
            raise ExportError(
                f"{path}: manifest format {raw.get('format')!r}, "
                f"this version reads {FORMAT_VERSION}"
            )
        raw["onnx"] = [
            OnnxEntry(
                **{
                    **entry,
                    "inputs": [TensorSpec(**t) for t in entry["inputs"]],
                    "outputs": [TensorSpec(**t) for t in entry["outputs"]],
                }
            )
            for entry in raw["onnx"]
        ]
        return cls(**raw)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _value_spec(value: onnx.ValueInfoProto) -> TensorSpec:
    tensor = value.type.tensor_type
    shape: list[int | str] = [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim
    ]
    return TensorSpec(value.name, _ELEM_TYPES.get(tensor.elem_type, str(tensor.elem_type)), shape)


def check_self_contained(path: Path) -> onnx.ModelProto:
    """Load an ONNX file and refuse external data (Vespa needs one self-contained file)."""
    model = onnx.load(str(path), load_external_data=False)
    external = [
        t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
    ]
    if external:
        raise ExportError(
            f"{path}: weights stored outside the file ({', '.join(external[:3])}); "
            "Vespa needs a single self-contained ONNX file"
        )
    side_files = [p.name for p in path.parent.glob(f"{path.name}.*")] + [
        p.name for p in path.parent.glob(f"{path.stem}.data")
    ]
    if side_files:
        raise ExportError(f"{path}: external data files beside the model: {', '.join(side_files)}")
    return model


def describe_onnx(path: Path, name: str, folder: Path, role: str = "") -> OnnxEntry:
    """The manifest entry of one exported ONNX file (names, types and shapes read from the file)."""
    model = check_self_contained(path)
    initializers = {t.name for t in model.graph.initializer}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return OnnxEntry(
        name=name,
        file=str(path.relative_to(folder)),
        sha256=sha256(path),
        opset=int(opset),
        inputs=[_value_spec(v) for v in model.graph.input if v.name not in initializers],
        outputs=[_value_spec(v) for v in model.graph.output],
        role=role,
    )
