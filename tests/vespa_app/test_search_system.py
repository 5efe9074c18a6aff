"""Runner for the declarative feed-and-query cases in tests/vespa_app/system/*.json.

The files follow Vespa's system-test JSON layout (sample-apps
commerce-product-ranking/application/tests/system-test): `{"name", "steps": [{"name",
"request": {"method", "uri", "parameters", "body"}, "response": {"code", "body"}}]}`.
Expected bodies are matched by containment: every key given must be present with an equal value
(numbers within 1e-6 relative), arrays element by element with the same length, and a string
ending in "..." matches any text starting with what precedes it. Files marked
`"engine_only": true` test refusals of the local engine and are skipped against real Vespa.

Runs against the embedded engine by default; set VESPA_URL (e.g. http://localhost:8080) to run
the same files against a real Vespa serving vespa_app/package.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import httpx
import pytest

from tests.vespa_app.conftest import PROJECT_PACKAGE

SYSTEM = Path(__file__).resolve().parent / "system"
CASES = sorted(SYSTEM.glob("*.json"))


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    url = os.environ.get("VESPA_URL")
    if url:
        yield url.rstrip("/")
        return
    from tests.vespa_app.conftest import EngineProcess

    engine = EngineProcess(PROJECT_PACKAGE, tmp_path_factory.mktemp("system") / "data").wait_ready()
    yield engine.url
    engine.stop()


def contains(actual, expected, path="body") -> None:
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: expected an object, got {actual!r}"
        for k, v in expected.items():
            assert k in actual, f"{path}: no key {k!r} in {sorted(actual)}"
            contains(actual[k], v, f"{path}.{k}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), (
            f"{path}: expected {len(expected)} elements, got {actual!r}"
        )
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            contains(a, e, f"{path}[{i}]")
    elif isinstance(expected, str) and expected.endswith("..."):
        assert isinstance(actual, str) and actual.startswith(expected[:-3]), f"{path}: {actual!r}"
    elif isinstance(expected, float) and not isinstance(actual, bool):
        assert isinstance(actual, (int, float)) and math.isclose(actual, expected, rel_tol=1e-6), (
            f"{path}: {actual!r} != {expected!r}"
        )
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_system_case(case: Path, base_url: str):
    spec = json.loads(case.read_text())
    if spec.get("engine_only") and os.environ.get("VESPA_URL"):
        pytest.skip("refusals of the local engine; real Vespa implements these constructs")
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for step in spec["steps"]:
            req = step["request"]
            method = req.get("method", "GET")
            body = req.get("body")
            response = client.request(
                method,
                req["uri"],
                params=req.get("parameters"),
                json=body if body is not None else None,
            )
            want = step.get("response", {})
            where = f"{case.name}: step {step.get('name', req['uri'])!r}"
            assert response.status_code == want.get("code", 200), f"{where}: {response.text}"
            if "body" in want:
                try:
                    contains(response.json(), want["body"])
                except AssertionError as e:
                    raise AssertionError(f"{where}: {e}") from None
