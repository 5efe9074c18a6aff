"""Field values: JSON in (validated, converted to stored Python values) and JSON out (spec §3).

Stored forms (the contract the search side reads, see store.py):
string -> str; int/long -> int; float -> float rounded to float32 and widened
(`float(np.float32(v))`); double -> float; bool -> bool; array<T> -> list;
dense indexed tensor -> numpy.ndarray shaped by the dimensions in alphabetical
order (float32 cells for float/bfloat16/int8 tensors, float64 for double);
single mapped dimension tensor -> dict[str, float].

Schema objects are read by attribute only (`FieldType.kind/element/tensor`,
`TensorType.cell_type/dims`, `TensorDim.name/size`), the interface defined by
vespa_app/engine/schema.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_INT_RANGE = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_HEX_DIGITS = {"float": 8, "double": 16, "bfloat16": 4, "int8": 2}
NUMERIC_KINDS = ("int", "long", "float", "double")


class FieldValueError(ValueError):
    """A request value that does not fit the field; the message names the field."""


class UnsupportedError(ValueError):
    """A construct inside Vespa's API but outside the engine's subset (spec §1)."""

    def __init__(self, construct: str) -> None:
        super().__init__(f"Unsupported by local engine: {construct}")


# --------------------------------------------------------------------------- types


def tensor_spec(tensor: Any) -> str:
    """Vespa's canonical type string: dimensions sorted by name, `tensor(...)` for double cells."""
    dims = ",".join(
        f"{d.name}[{d.size}]" if d.size is not None else f"{d.name}{{}}"
        for d in sorted_dims(tensor)
    )
    cell = "" if tensor.cell_type == "double" else f"<{tensor.cell_type}>"
    return f"tensor{cell}({dims})"


def type_spec(ftype: Any) -> str:
    """A field type as text, used to detect type changes between package versions."""
    if ftype.kind == "array":
        return f"array<{type_spec(ftype.element)}>"
    if ftype.kind == "tensor":
        return tensor_spec(ftype.tensor)
    return ftype.kind


def sorted_dims(tensor: Any) -> list[Any]:
    return sorted(tensor.dims, key=lambda d: d.name)


def is_dense(tensor: Any) -> bool:
    return all(d.size is not None for d in tensor.dims)


def _check_tensor_supported(tensor: Any) -> None:
    mapped = [d for d in tensor.dims if d.size is None]
    if mapped and (len(mapped) > 1 or len(mapped) < len(tensor.dims)):
        raise UnsupportedError(f"tensor type {tensor_spec(tensor)} (mixed or multi-mapped)")


# --------------------------------------------------------------------------- input


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "null"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def round_cells(values: np.ndarray | float, cell_type: str) -> np.ndarray:
    """Round double values to the tensor cell type and widen to the storage dtype."""
    arr = np.asarray(values, dtype=np.float64)
    if cell_type == "double":
        return arr.copy()
    if cell_type == "float":
        return arr.astype(np.float32)
    if cell_type == "bfloat16":  # Vespa converts by dropping the low 16 bits of the float32
        bits = arr.astype(np.float32).view(np.uint32) & np.uint32(0xFFFF0000)
        return bits.view(np.float32)
    if cell_type == "int8":  # C-style cast: truncate toward zero, keep the low byte
        ints = np.trunc(np.nan_to_num(arr)).astype(np.int64)
        return ints.astype(np.int8).astype(np.float32)
    raise UnsupportedError(f"tensor cell type '{cell_type}'")


def convert_scalar(field: str, kind: str, value: Any) -> Any:
    if kind == "string":
        if not isinstance(value, str):
            raise FieldValueError(
                f"Field '{field}' of type string: expected a string, got {_describe(value)}"
            )
        return value
    if kind in _INT_RANGE:
        lo, hi = _INT_RANGE[kind]
        if not isinstance(value, int) or isinstance(value, bool):
            raise FieldValueError(
                f"Field '{field}' of type {kind}: expected an integer, got {_describe(value)}"
            )
        if not lo <= value <= hi:
            raise FieldValueError(
                f"Field '{field}' of type {kind}: {value} is out of range [{lo}, {hi}]"
            )
        return value
    if kind in ("float", "double"):
        if not _is_number(value):
            raise FieldValueError(
                f"Field '{field}' of type {kind}: expected a number, got {_describe(value)}"
            )
        return float(np.float32(value)) if kind == "float" else float(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise FieldValueError(
                f"Field '{field}' of type bool: expected true or false, got {_describe(value)}"
            )
        return value
    raise UnsupportedError(f"field type '{kind}'")


def convert_value(field: str, ftype: Any, value: Any) -> Any:
    """Validate one JSON field value and return its stored form."""
    if ftype.kind == "array":
        if not isinstance(value, list):
            raise FieldValueError(
                f"Field '{field}' of type {type_spec(ftype)}: "
                f"expected an array, got {_describe(value)}"
            )
        return [convert_value(field, ftype.element, v) for v in value]
    if ftype.kind == "tensor":
        return convert_tensor(field, ftype.tensor, value)
    return convert_scalar(field, ftype.kind, value)


def _dense_from_hex(field: str, tensor: Any, text: str, size: int) -> np.ndarray:
    digits = _HEX_DIGITS[tensor.cell_type]
    if len(text) != digits * size:
        raise FieldValueError(
            f"Field '{field}' of type {tensor_spec(tensor)}: hex string has {len(text)} digits, "
            f"expected {digits * size} ({size} cells)"
        )
    try:
        raw = bytes.fromhex(text)
    except ValueError as e:
        raise FieldValueError(
            f"Field '{field}': invalid hex string for {tensor_spec(tensor)}"
        ) from e
    dtype = {"float": ">f4", "double": ">f8", "int8": "i1"}.get(tensor.cell_type)
    if dtype is None:  # bfloat16: the high half of a float32
        halves = np.frombuffer(raw, dtype=">u2").astype(np.uint32) << np.uint32(16)
        return halves.view(np.float32).astype(np.float64)
    return np.frombuffer(raw, dtype=dtype).astype(np.float64)


def _dense_label(field: str, dim: Any, label: Any) -> int:
    try:
        index = int(label)
    except (TypeError, ValueError):
        index = -1
    if not 0 <= index < dim.size or str(label).strip() != str(index):
        raise FieldValueError(
            f"Field '{field}': label '{label}' is not an index of dimension {dim.name}[{dim.size}]"
        )
    return index


def convert_tensor(field: str, tensor: Any, value: Any) -> np.ndarray | dict[str, float]:
    """Tensor JSON input forms (document-json-format) to the stored form."""
    _check_tensor_supported(tensor)
    spec = tensor_spec(tensor)
    if isinstance(value, dict) and "blocks" in value:
        raise UnsupportedError("tensor 'blocks' (mixed tensor) input")
    if is_dense(tensor):
        dims = sorted_dims(tensor)
        shape = tuple(d.size for d in dims)
        size = int(np.prod(shape))
        if isinstance(value, dict) and "values" in value:
            value = value["values"]
        if isinstance(value, str):
            flat = _dense_from_hex(field, tensor, value, size)
        elif isinstance(value, list):
            arr = _numeric_array(field, spec, value)
            if arr.shape != shape and arr.ndim != 1:
                raise FieldValueError(
                    f"Field '{field}' of type {spec}: nested values have shape {arr.shape}"
                )
            if arr.size != size:
                raise FieldValueError(
                    f"Field '{field}' of type {spec}: got {arr.size} values, expected {size}"
                )
            flat = arr.reshape(-1)
        elif isinstance(value, dict) and isinstance(value.get("cells"), list):
            flat = np.zeros(size, dtype=np.float64)
            strides = np.cumprod((1, *shape[::-1]))[:-1][::-1]
            for cell in value["cells"]:
                address, number = _verbose_cell(field, spec, cell)
                if set(address) != {d.name for d in dims}:
                    raise FieldValueError(
                        f"Field '{field}' of type {spec}: cell address {address} does not match"
                    )
                offset = sum(
                    int(s) * _dense_label(field, d, address[d.name])
                    for s, d in zip(strides, dims, strict=True)
                )
                flat[offset] = number
        else:
            raise FieldValueError(
                f"Field '{field}' of type {spec}: expected an array of {size} numbers"
            )
        return round_cells(flat, tensor.cell_type).reshape(shape)
    return _mapped_cells(field, tensor, value)


def _numeric_array(field: str, spec: str, value: list) -> np.ndarray:
    def check(v: Any) -> None:
        if isinstance(v, list):
            for x in v:
                check(x)
        elif not _is_number(v):
            raise FieldValueError(
                f"Field '{field}' of type {spec}: cell value {v!r} is not a number"
            )

    check(value)
    try:
        return np.asarray(value, dtype=np.float64)
    except ValueError as e:  # ragged nesting
        raise FieldValueError(
            f"Field '{field}' of type {spec}: values are not a regular array"
        ) from e


def _verbose_cell(field: str, spec: str, cell: Any) -> tuple[dict[str, str], float]:
    if (
        not isinstance(cell, dict)
        or not isinstance(cell.get("address"), dict)
        or not _is_number(cell.get("value"))
    ):
        raise FieldValueError(
            f'Field \'{field}\' of type {spec}: a cell must be {{"address": {{...}}, "value": n}}'
        )
    return {str(k): str(v) for k, v in cell["address"].items()}, float(cell["value"])


def _mapped_cells(field: str, tensor: Any, value: Any) -> dict[str, float]:
    """One mapped dimension: `{"a": 1}`, `{"cells": {"a": 1}}` or verbose cells."""
    spec = tensor_spec(tensor)
    dim = tensor.dims[0].name
    if not isinstance(value, dict):
        raise FieldValueError(
            f"Field '{field}' of type {spec}: expected an object of cells, got {_describe(value)}"
        )
    cells = (
        value.get("cells", value)
        if "cells" in value
        else {k: v for k, v in value.items() if k != "type"}
    )
    labels: list[str] = []
    numbers: list[float] = []
    if isinstance(cells, list):
        for cell in cells:
            address, number = _verbose_cell(field, spec, cell)
            if set(address) != {dim}:
                raise FieldValueError(
                    f"Field '{field}' of type {spec}: cell address {address} does not match"
                )
            labels.append(address[dim])
            numbers.append(number)
    elif isinstance(cells, dict):
        for label, number in cells.items():
            if not _is_number(number):
                raise FieldValueError(
                    f"Field '{field}' of type {spec}: cell '{label}' is not a number"
                )
            labels.append(str(label))
            numbers.append(float(number))
    else:
        raise FieldValueError(
            f"Field '{field}' of type {spec}: 'cells' must be an object or an array"
        )
    rounded = round_cells(np.asarray(numbers, dtype=np.float64), tensor.cell_type)
    return {label: float(v) for label, v in zip(labels, rounded, strict=True)}


def mapped_addresses(field: str, tensor: Any, value: Any) -> list[str]:
    """Labels from a tensor `remove` update: `{"addresses": [{"k": "a"}, ...]}` (or bare labels)."""
    spec = tensor_spec(tensor)
    dim = tensor.dims[0].name
    if not isinstance(value, dict) or not isinstance(value.get("addresses"), list):
        raise FieldValueError(
            f"Field '{field}' of type {spec}: remove needs {{\"addresses\": [...]}}"
        )
    labels = []
    for address in value["addresses"]:
        if isinstance(address, str):
            labels.append(address)
        elif isinstance(address, dict) and set(address) == {dim}:
            labels.append(str(address[dim]))
        else:
            raise FieldValueError(
                f"Field '{field}' of type {spec}: address {address!r} does not match"
            )
    return labels


# --------------------------------------------------------------------------- output


def render_value(ftype: Any, value: Any) -> Any:
    """Stored value -> JSON value as Vespa renders it; None means 'omit the field'."""
    if value is None:
        return None
    if ftype.kind == "tensor":
        spec = tensor_spec(ftype.tensor)
        if isinstance(value, np.ndarray):
            return {"type": spec, "values": value.astype(np.float64).tolist()}
        return {"type": spec, "cells": dict(value)}
    if ftype.kind == "array":
        if not value:
            return None
        # An empty string field is omitted, but inside an array it is an element like any
        # other: dropping or nulling it would shift the positions of the elements after it.
        if ftype.element.kind == "string":
            return list(value)
        return [render_value(ftype.element, v) for v in value]
    if ftype.kind == "string" and value == "":
        return None
    return value


def render_fields(
    schema: Any, fields: dict[str, Any], wanted: set[str] | None = None
) -> dict[str, Any]:
    """Render a stored document's fields in schema order; `wanted` limits them (fieldSet)."""
    out: dict[str, Any] = {}
    for name, spec in schema.fields.items():
        if name not in fields or (wanted is not None and name not in wanted):
            continue
        rendered = render_value(spec.type, fields[name])
        if rendered is not None:
            out[name] = rendered
    return out


def unknown_field_message(schema: Any, doc_type: str, name: str) -> str:
    return (
        f"No field '{name}' in the structure of type '{doc_type}', "
        f"which has the fields: [{', '.join(schema.fields)}]"
    )


def convert_document(
    schema: Any, doc_type: str, fields: Any, ignore_undefined: bool
) -> tuple[dict[str, Any], bool]:
    """Validate a put body's `fields` object; returns (stored fields, whether any were ignored)."""
    if not isinstance(fields, dict):
        raise FieldValueError("'fields' must be a JSON object")
    out: dict[str, Any] = {}
    ignored = False
    for name, value in fields.items():
        field = schema.fields.get(name)
        if field is None:
            if ignore_undefined:
                ignored = True
                continue
            raise FieldValueError(unknown_field_message(schema, doc_type, name))
        if value is None:
            continue
        out[name] = convert_value(name, field.type, value)
    return out, ignored
