"""Where things live: the project root, the shared real datasets and the artifacts folder."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """Folder of the real datasets (``../shared/data`` beside the checkout unless overridden)."""
    override = os.environ.get("RECSYS_SHARED_DATA")
    return Path(override) if override else PROJECT_ROOT.parent / "shared" / "data"


def artifacts_dir() -> Path:
    """Root of everything the stages write (datasets, checkpoints, exports), by stage and name."""
    override = os.environ.get("RECSYS_ARTIFACTS")
    return Path(override) if override else PROJECT_ROOT / "artifacts"
