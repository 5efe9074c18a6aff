"""Field value conversion and rendering, tensor JSON forms, partial updates (spec §3)."""

from __future__ import annotations

import struct
from typing import ClassVar

import numpy as np
import pytest

from vespa_app.engine.schema import FieldType, TensorDim, TensorType
from vespa_app.engine.updates import apply_update, parse_update
from vespa_app.engine.values import (
    FieldValueError,
    UnsupportedError,
    convert_tensor,
    convert_value,
    render_value,
    tensor_spec,
)

DENSE = TensorType("float", (TensorDim("x", 3),))
GRID = TensorType("float", (TensorDim("a", 2), TensorDim("b", 3)))  # dims already alphabetical
MAPPED = TensorType("float", (TensorDim("category", None),))


def test_dense_input_forms_agree() -> None:
    expected = np.array([1.0, 2.5, -3.0], dtype=np.float32)
    hex_text = "".join(struct.pack(">f", v).hex() for v in expected)
    verbose = {
        "cells": [{"address": {"x": str(i)}, "value": float(v)} for i, v in enumerate(expected)]
    }
    for form in ([1, 2.5, -3], {"values": [1, 2.5, -3]}, {"values": hex_text}, verbose):
        got = convert_tensor("e", DENSE, form)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expected)


def test_dense_shape_and_errors() -> None:
    flat = convert_tensor("g", GRID, list(range(6)))
    nested = convert_tensor("g", GRID, [[0, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(flat, nested)
    assert flat.shape == (2, 3) and flat[1, 0] == 3  # right-most dimension varies fastest
    out_of_range = {"cells": [{"address": {"x": "3"}, "value": 1}]}
    for bad in ([1, 2], [1, 2, 3, 4], ["a", 1, 2], {"values": "00ff"}, "nope", out_of_range):
        with pytest.raises(FieldValueError, match="'e'"):
            convert_tensor("e", DENSE, bad)
    with pytest.raises(UnsupportedError):
        convert_tensor("e", DENSE, {"blocks": {}})


def test_cell_types_round_like_vespa() -> None:
    bf16 = TensorType("bfloat16", (TensorDim("x", 2),))
    got = convert_tensor("b", bf16, [1.0 + 2**-10, -2.5])
    assert got.tolist() == [1.0, -2.5]  # low mantissa bits dropped
    int8 = TensorType("int8", (TensorDim("x", 3),))
    assert convert_tensor("i", int8, [1.9, -1.9, 127]).tolist() == [1.0, -1.0, 127.0]
    double = TensorType("double", (TensorDim("x", 1),))
    assert convert_tensor("d", double, [0.1]).dtype == np.float64
    assert tensor_spec(double) == "tensor(x[1])" and tensor_spec(GRID) == "tensor<float>(a[2],b[3])"


def test_mapped_input_forms_agree() -> None:
    want = {"shoes": float(np.float32(0.7)), "home/kitchen": 0.5}
    for form in (
        {"shoes": 0.7, "home/kitchen": 0.5},
        {"cells": {"shoes": 0.7, "home/kitchen": 0.5}},
        {"cells": [{"address": {"category": "shoes"}, "value": 0.7},
                   {"address": {"category": "home/kitchen"}, "value": 0.5}]},
        {"type": "tensor<float>(category{})", "cells": {"shoes": 0.7, "home/kitchen": 0.5}},
    ):  # fmt: skip
        assert convert_tensor("m", MAPPED, form) == want
    with pytest.raises(FieldValueError):
        convert_tensor("m", MAPPED, {"cells": [{"address": {"other": "a"}, "value": 1}]})


def test_rendering() -> None:
    tensor = FieldType("tensor", tensor=GRID)
    assert render_value(tensor, np.arange(6, dtype=np.float32).reshape(2, 3)) == {
        "type": "tensor<float>(a[2],b[3])",
        "values": [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]],
    }
    assert render_value(FieldType("string"), "") is None
    assert render_value(FieldType("array", element=FieldType("string")), []) is None
    # Inside an array an empty string is an element: positions after it must not shift.
    strings = FieldType("array", element=FieldType("string"))
    assert render_value(strings, ["", "click", ""]) == ["", "click", ""]
    assert convert_value("p", FieldType("float"), 0.4) == 0.4000000059604645
    assert convert_value("l", FieldType("long"), 2**40) == 2**40
    with pytest.raises(FieldValueError):
        convert_value("i", FieldType("int"), 2**40)
    with pytest.raises(FieldValueError):
        convert_value("f", FieldType("float"), True)


class _Field:
    def __init__(self, ftype: FieldType) -> None:
        self.type = ftype


class _Schema:
    fields: ClassVar[dict[str, _Field]] = {
        "pop": _Field(FieldType("float")),
        "n": _Field(FieldType("int")),
        "tags": _Field(FieldType("array", element=FieldType("string"))),
        "m": _Field(FieldType("tensor", tensor=MAPPED)),
        "title": _Field(FieldType("string")),
    }


def test_updates_apply_in_order_without_mutating() -> None:
    doc = {"pop": 1.0, "n": 7, "tags": ["a", "b", "a"], "m": {"x": 1.0}, "title": "t"}
    ops, ignored = parse_update(
        _Schema(),
        "d",
        {
            "pop": {"increment": 1.5, "multiply": 2},
            "n": {"divide": 2},
            "tags": {"add": ["c"]},
            "m": {"add": {"cells": {"y": 2.0}}},
            "title": {"assign": None},
        },
        False,
    )
    assert not ignored
    new = apply_update(doc, ops)
    assert new == {"pop": 5.0, "n": 3, "tags": ["a", "b", "a", "c"], "m": {"x": 1.0, "y": 2.0}}
    assert doc["tags"] == ["a", "b", "a"] and "title" in doc
    removal = {"tags": {"remove": ["a"]}, "m": {"remove": {"addresses": [{"category": "x"}]}}}
    ops, _ = parse_update(_Schema(), "d", removal, False)
    assert apply_update(new, ops) == {"pop": 5.0, "n": 3, "tags": ["b", "c"], "m": {"y": 2.0}}
    ops, _ = parse_update(_Schema(), "d", {"pop": {"increment": 2}}, False)
    assert apply_update({}, ops) == {"pop": 2.0}  # a missing numeric starts at 0


def test_update_errors() -> None:
    with pytest.raises(FieldValueError, match="No field 'zz'"):
        parse_update(_Schema(), "d", {"zz": {"assign": 1}}, False)
    assert parse_update(_Schema(), "d", {"zz": {"assign": 1}}, True) == ([], True)
    with pytest.raises(UnsupportedError):
        parse_update(_Schema(), "d", {"tags[0]": {"assign": "x"}}, False)
    with pytest.raises(UnsupportedError):
        parse_update(_Schema(), "d", {"m": {"modify": {}}}, False)
    with pytest.raises(FieldValueError, match="'title'"):
        parse_update(_Schema(), "d", {"title": {"add": ["x"]}}, False)
    with pytest.raises(FieldValueError, match="unknown update operation"):
        parse_update(_Schema(), "d", {"n": {"frobnicate": 1}}, False)
    ops, _ = parse_update(_Schema(), "d", {"n": {"divide": 0}}, False)
    with pytest.raises(FieldValueError):
        apply_update({"n": 1}, ops)
