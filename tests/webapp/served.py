"""The tiny synthetic marketplace served end to end, shared by the pipeline and API tests.

A 128-d BPR-MF (retrieval) and a tiny ranker over its item embeddings are trained, exported with
``python -m model_export --ranker ... --install`` into a copy of the package (never the
project's), and :func:`start_served` starts the embedded engine on that copy and feeds products,
users and sellers. Training and export run once per pytest process (memoised), each test module
starts its own engine.
"""

from __future__ import annotations

import atexit
import dataclasses
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIM = 128
_BUILT: dict[str, Built] = {}


@dataclass(frozen=True)
class Built:
    dataset: Path
    export: Path
    package: Path


def build() -> Built:
    """Train, export and install once per process (about 10 s on the tiny marketplace)."""
    if "tiny" in _BUILT:
        return _BUILT["tiny"]
    import torch

    from model_export.cli import DEFAULT_PACKAGE, main
    from tests.model_export.conftest import tiny_ranker_config
    from trainer.data.loaders import load_dataset
    from trainer.data.marketplace import save_marketplace
    from trainer.data.splits import split_dataset
    from trainer.data.synthetic import generate
    from trainer.models.base import save_checkpoint
    from trainer.models.baselines.bpr_mf import BPRMF
    from trainer.models.ranker import Ranker, save_ranker

    root = Path(tempfile.mkdtemp(prefix="served-tiny-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    dataset = save_marketplace(generate("tiny", 3), root / "tiny")
    data = split_dataset(load_dataset(dataset))
    torch.manual_seed(0)
    config = dataclasses.replace(BPRMF.test_config(), dim=PACKAGE_DIM, epochs=5)
    model = BPRMF(config, data.num_users, data.num_items)
    report = model.fit(data, progress=False)
    checkpoint = save_checkpoint(
        model, data, root / "bprmf.pt", dataset_path=str(dataset),
        history=report.history, best_epoch=report.best_epoch,
    )  # fmt: skip
    ranker = Ranker(tiny_ranker_config(), model.item_embeddings())
    ranker_report = ranker.fit(data, progress=False)
    ranker_path = save_ranker(
        ranker, root / "ranker.pt", dataset_path=str(dataset), epochs=ranker_report["epochs"]
    )
    package = root / "package"
    shutil.copytree(DEFAULT_PACKAGE, package)
    export = root / "export"
    argv = ["--checkpoint", str(checkpoint), "--ranker", str(ranker_path), "--out", str(export)]
    assert main([*argv, "--package", str(package), "--install"]) == 0
    _BUILT["tiny"] = Built(dataset, export, package)
    return _BUILT["tiny"]


def feed_all(built: Built, url: str) -> None:
    from model_export.feed import feed
    from trainer.data.loaders import load_dataset

    report = feed(built.export, load_dataset(built.dataset), url, progress=False)
    assert not report.failures, report.failures[:3]


def locations(built: Built) -> tuple[str, ...]:
    """The ctx location vocabulary: sorted location names of the dataset's events."""
    from trainer.data.loaders import load_dataset

    events = load_dataset(built.dataset).events
    return tuple(sorted(events["location"].dropna().unique().tolist()))
