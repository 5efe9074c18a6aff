"""Reply encoding: orjson's fast path and the json module's path render the same values."""

from __future__ import annotations

import json

import numpy as np

from vespa_app.engine.reply import dumps


def test_plain_body_is_compact_utf8_json_with_round_trip_floats():
    body = {"root": {"relevance": 0.1 + 0.2, "fields": {"title": "café", "n": 3, "ok": True}}}
    out = dumps(body)
    assert b" " not in out.replace(b"caf", b"")  # compact separators
    assert "café".encode() in out  # UTF-8, not \\u escapes
    assert json.loads(out) == body
    assert json.loads(out)["root"]["relevance"] == 0.30000000000000004


def test_numpy_doubles_and_widened_float32_keep_their_value():
    widened = float(np.float32(0.4))  # how the engine hands a float cell to the renderer
    out = json.loads(dumps({"a": np.float64(0.25), "b": widened, "c": np.int64(7)}))
    assert out == {"a": 0.25, "b": 0.4000000059604645, "c": 7}


def test_non_finite_numbers_render_as_vespa_strings_and_none_as_null():
    body = {
        "relevance": float("-inf"),
        "features": {"x": float("nan"), "y": float("inf"), "z": 1.5},
        "list": [float("inf"), None, 2],
    }
    out = json.loads(dumps(body))
    assert out == {
        "relevance": "-Infinity",
        "features": {"x": "NaN", "y": "Infinity", "z": 1.5},
        "list": ["Infinity", None, 2],
    }


def test_values_orjson_refuses_take_the_json_path():
    class Score(float):
        pass

    out = json.loads(dumps({"big": 2**70, "score": Score(1.5)}))
    assert out == {"big": 2**70, "score": 1.5}
