"""Shared test configuration: the project root on sys.path and the real-data location."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from trainer.paths import shared_data_dir  # noqa: E402

# Small models train much faster on one thread than on two contended cores (measured: a small
# fit took 73 s with 2 threads and 3.5 s with 1 on a loaded 2-core machine).
torch.set_num_threads(1)


@pytest.fixture
def real_dataset():
    """Path of a real dataset under ../shared/data, or a skip naming what is missing."""

    def locate(name: str) -> Path:
        folder = shared_data_dir() / name
        if not folder.is_dir():
            pytest.skip(f"real dataset {name!r} not found at {folder} (needs ../shared/data)")
        return folder

    return locate
