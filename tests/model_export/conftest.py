"""Shared fixtures: the tiny synthetic marketplace on disk and checkpoints trained on it.

Models use their ``test_config()`` with the embedding width set to the package's 128 (and SASRec's
history to 50, so the parity lengths 1, 37 and the maximum all exist).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch

from tests.vespa_app.conftest import engine_factory  # noqa: F401 - fixture re-exported
from trainer.data.marketplace import save_marketplace
from trainer.data.splits import split_dataset
from trainer.data.synthetic import generate
from trainer.models.base import save_checkpoint
from trainer.models.baselines.bpr_mf import BPRMF
from trainer.models.lightgcn import LightGCN
from trainer.models.sasrec import SASRec

PACKAGE_DIM = 128


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny tensors: one thread avoids oversubscription stalls on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_marketplace(generate("tiny", 3), tmp_path_factory.mktemp("data") / "tiny")


def _train(cls, dataset: Path, out: Path, **config) -> Path:
    from trainer.data.loaders import load_dataset

    data = split_dataset(load_dataset(dataset))
    model = cls(dataclasses.replace(cls.test_config(), **config), data.num_users, data.num_items)
    report = model.fit(data, progress=False)
    return save_checkpoint(
        model,
        data,
        out,
        dataset_path=str(dataset),
        history=report.history,
        best_epoch=report.best_epoch,
    )


@pytest.fixture(scope="session")
def checkpoints(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("checkpoints")
    return {
        "lightgcn": _train(LightGCN, dataset, folder / "lightgcn.pt", dim=PACKAGE_DIM),
        "bprmf": _train(BPRMF, dataset, folder / "bprmf.pt", dim=PACKAGE_DIM),
        "sasrec": _train(SASRec, dataset, folder / "sasrec.pt", dim=PACKAGE_DIM, max_len=50),
        "lightgcn-16d": _train(LightGCN, dataset, folder / "lightgcn16.pt", dim=16),
    }


@pytest.fixture(scope="session")
def exports(checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """Export folders written by the CLI (in-process), keyed by model."""
    from model_export.cli import main

    root = tmp_path_factory.mktemp("exports")
    done = {}
    for name in ("lightgcn", "sasrec"):
        out = root / name
        assert main(["--checkpoint", str(checkpoints[name]), "--out", str(out)]) == 0
        done[name] = out
    return done


def package_copy(folder: Path) -> Path:
    """A copy of the project's Vespa package under ``folder`` (tests never install into the
    project's own)."""
    from model_export.cli import DEFAULT_PACKAGE

    package = folder / "package"
    shutil.copytree(DEFAULT_PACKAGE, package)
    return package


def export_with_ranker(checkpoints: dict[str, Path], ranker: Path, out: Path, *more: str) -> int:
    """``python -m model_export`` for the tiny BPR-MF and ``ranker``; returns the exit code."""
    from model_export.cli import main

    argv = ["--checkpoint", str(checkpoints["bprmf"]), "--ranker", str(ranker)]
    return main([*argv, "--out", str(out), *more])


def tiny_ranker_config(**overrides):
    """A ranker small enough to train in seconds; history_len 50 = the package's query(hist)."""
    from trainer.models.ranker import RankerConfig

    base = dict(
        history_len=50, dim=16, heads=2, blocks=1, hidden=32, negatives=8, epochs=1,
        max_impressions=3000, max_targets=3000, batch_size=256, patience=0, dropout=0.0,
    )  # fmt: skip
    return RankerConfig(**{**base, **overrides})


@pytest.fixture(scope="session")
def ranker_checkpoint(checkpoints, dataset, tmp_path_factory) -> Path:
    """A ranker trained (one short epoch) over the 128-d BPR-MF's item embeddings."""
    from trainer.data.loaders import load_dataset
    from trainer.models.base import load_checkpoint
    from trainer.models.ranker import Ranker, save_ranker

    data = split_dataset(load_dataset(dataset))
    retrieval = load_checkpoint(checkpoints["bprmf"]).model
    torch.manual_seed(0)
    ranker = Ranker(tiny_ranker_config(), retrieval.item_embeddings())
    report = ranker.fit(data, progress=False)
    path = tmp_path_factory.mktemp("ranker") / "ranker.pt"
    return save_ranker(ranker, path, dataset_path=str(dataset), epochs=report["epochs"])


@pytest.fixture(scope="session")
def residual_ranker_checkpoint(checkpoints, dataset, tmp_path_factory) -> Path:
    """A residual ranker (scorer + W * retrieval cosine) over the 128-d BPR-MF's item and user
    embeddings (the user vectors of the export's history stage), one short epoch."""
    from model_export.export import USER_STAGE
    from trainer.data.loaders import load_dataset
    from trainer.models.base import load_checkpoint
    from trainer.models.ranker import Ranker, save_ranker

    data = split_dataset(load_dataset(dataset))
    retrieval = load_checkpoint(checkpoints["bprmf"]).model
    torch.manual_seed(0)
    ranker = Ranker(
        tiny_ranker_config(),
        retrieval.item_embeddings(),
        user_embeddings=retrieval.user_embeddings(data, USER_STAGE),
    )
    report = ranker.fit(data, progress=False)
    path = tmp_path_factory.mktemp("residual-ranker") / "ranker.pt"
    return save_ranker(ranker, path, dataset_path=str(dataset), epochs=report["epochs"])


FEATURES = dict(
    history_len=100,
    history_features=("event", "hour", "device", "location"),
    cand_features=("price", "margin", "popularity", "freshness"),
    cand_codes=("seller", "category"),
)  # what the package's ranking_features profile serves


@pytest.fixture(scope="session")
def features_ranker_checkpoint(checkpoints, dataset, tmp_path_factory) -> Path:
    """A ranker reading 100 events with every history code, candidate feature and candidate
    code (seller, category), trained (one short epoch) over the 128-d BPR-MF's item
    embeddings."""
    from trainer.data.loaders import load_dataset
    from trainer.models.base import load_checkpoint
    from trainer.models.ranker import Ranker, save_ranker
    from trainer.ranking.features import code_vocabularies

    market = load_dataset(dataset)
    data = split_dataset(market)
    retrieval = load_checkpoint(checkpoints["bprmf"]).model
    torch.manual_seed(0)
    ranker = Ranker(
        tiny_ranker_config(**FEATURES),
        retrieval.item_embeddings(),
        vocabularies=code_vocabularies(market, FEATURES["cand_codes"]),
    )
    report = ranker.fit(data, progress=False)
    path = tmp_path_factory.mktemp("features-ranker") / "ranker.pt"
    return save_ranker(ranker, path, dataset_path=str(dataset), epochs=report["epochs"])
