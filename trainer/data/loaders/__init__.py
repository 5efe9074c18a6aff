"""Loaders from published research formats into the canonical :class:`Marketplace`.

One module per format, each working on any folder laid out that way:

- ``canonical``: a saved dataset (five Parquet files + ``dataset.json``),
- ``s3rec``: S3-Rec sequences with item attributes (:mod:`.s3rec`),
- ``pairs``: SASRec / BERT4Rec ``user item`` pair files (:mod:`.pairs`),
- ``lightgcn``: NGCF / LightGCN ``train.txt``/``test.txt`` (:mod:`.lightgcn`),
- ``mbgcn`` and ``ghcf``: multi-behaviour purchase splits (:mod:`.multibehavior`).

:func:`load_dataset` detects the format from the files present. See docs/datasets.md for how each
format maps into the model and what had to be synthesised.
"""

from __future__ import annotations

from pathlib import Path

from trainer.data.loaders._text import fail
from trainer.data.loaders.lightgcn import load_lightgcn
from trainer.data.loaders.multibehavior import load_ghcf, load_mbgcn
from trainer.data.loaders.pairs import load_pairs
from trainer.data.loaders.s3rec import ATTRIBUTES_SUFFIX, load_s3rec, read_negatives
from trainer.data.marketplace import INFO_FILE, Marketplace, is_canonical_folder, load_marketplace

# format -> what a folder needs to be recognised as it (checked in this order).
FORMATS: dict[str, str] = {
    "canonical": f"{INFO_FILE} plus the five table Parquet files",
    "s3rec": f"<Name>{ATTRIBUTES_SUFFIX} and <Name>.txt ('user item item ...', 1-based)",
    "mbgcn": "data_size.txt, train.txt (or buy.txt) and test.txt ('user item' pairs, 0-based)",
    "ghcf": "train.txt, test.txt and cart.txt or pv.txt ('user item item ...', 0-based)",
    "lightgcn": "train.txt and test.txt ('user item item ...', 0-based)",
    "pairs": "exactly one <Name>.txt of 'user item' pairs (1-based)",
}


def _data_files(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.glob("*.txt")) if p.stem.upper() not in {"README", "SOURCE"}]


def detect_format(folder: Path) -> str:
    """The format of a dataset folder, from the files it holds (see :data:`FORMATS`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise fail(folder, None, "-", "not a folder")
    has = {p.name for p in folder.iterdir() if p.is_file()}
    if INFO_FILE in has:
        return "canonical"
    if any(name.endswith(ATTRIBUTES_SUFFIX) for name in has):
        return "s3rec"
    if "data_size.txt" in has and ({"train.txt", "buy.txt"} & has) and "test.txt" in has:
        return "mbgcn"
    if {"train.txt", "test.txt"} <= has:
        return "ghcf" if {"cart.txt", "pv.txt"} & has else "lightgcn"
    if len(_data_files(folder)) == 1:
        return "pairs"
    recognised = "\n".join(f"  {name}: {needs}" for name, needs in FORMATS.items())
    listed = ", ".join(sorted(has)) or "nothing"
    raise fail(
        folder,
        None,
        "-",
        f"unrecognised dataset folder (it holds {listed}); recognised formats:\n{recognised}",
    )


def dataset_name(path: Path) -> str:
    """The dataset's name: its folder name (``../shared/data/beauty_s3rec`` -> beauty_s3rec)."""
    return Path(path).resolve().name


def load_dataset(path: Path) -> Marketplace:
    """Load any recognised folder into a validated Marketplace (all or nothing)."""
    folder = Path(path)
    fmt = detect_format(folder)
    name = dataset_name(folder)
    if fmt == "canonical":
        return load_marketplace(folder)
    if fmt == "s3rec":
        return load_s3rec(folder, name=name)
    if fmt == "mbgcn":
        return load_mbgcn(folder, name=name)
    if fmt == "ghcf":
        return load_ghcf(folder, name=name)
    if fmt == "lightgcn":
        return load_lightgcn(folder, name=name)
    return load_pairs(folder, name=name)


__all__ = [
    "FORMATS",
    "dataset_name",
    "detect_format",
    "is_canonical_folder",
    "load_dataset",
    "load_ghcf",
    "load_lightgcn",
    "load_mbgcn",
    "load_pairs",
    "load_s3rec",
    "read_negatives",
]
