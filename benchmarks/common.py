"""Helpers shared by the benchmarks: the results file, the reproduce command, peak memory."""

from __future__ import annotations

import json
import platform
import resource
import sys
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict[str, Any]:
    import os

    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


def write_results(name: str, results: dict[str, Any], module: str | None = None) -> Path:
    """Save ``results`` with the command line and machine to benchmarks/results/NAME.json.

    ``module`` is the benchmark module when it differs from ``name`` (several result files from
    one benchmark, e.g. one per dataset).
    """
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python -m benchmarks." + (module or name), *sys.argv[1:]])
    payload = {
        "benchmark": name,
        "command": command,
        "machine": machine(),
        **results,
    }
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=False, default=float) + "\n")
    return path
