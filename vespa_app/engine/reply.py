"""HTTP replies as plain data, so handlers are testable without a server."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

JSON_TYPE = "application/json;charset=utf-8"


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        return dumps(self.body)


def _finite(value: Any) -> Any:
    """Non-finite numbers as Vespa renders them: strings "NaN", "Infinity", "-Infinity"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def dumps(body: Any) -> bytes:
    """JSON with the shortest round-trip float repr (float32 0.4 reads 0.4000000059604645)."""
    # Reply bodies are trees built per request, never cyclic: skipping the cycle check saves
    # a good part of encoding a 500-hit result.
    try:
        return json.dumps(
            body, separators=(",", ":"), allow_nan=False, check_circular=False
        ).encode()
    except ValueError:
        return json.dumps(_finite(body), separators=(",", ":"), check_circular=False).encode()
