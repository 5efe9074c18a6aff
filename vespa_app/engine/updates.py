"""Partial updates (`PUT /document/v1/...`, spec §3 "Update").

`parse_update` validates the whole request up front (so a bad field rejects
the request before anything is written); `apply_update` is then a pure function
the single writer runs against the current document, in feed order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vespa_app.engine.values import (
    NUMERIC_KINDS,
    FieldValueError,
    UnsupportedError,
    convert_value,
    is_dense,
    mapped_addresses,
    type_spec,
    unknown_field_message,
)

ARITHMETIC = ("increment", "decrement", "multiply", "divide")
_UNSUPPORTED_OPS = ("match", "modify")


@dataclass(frozen=True)
class FieldOp:
    field: str
    kind: str  # field kind: string, int, ..., array, tensor
    element_kind: str | None  # element kind for arrays, cell type for tensors
    op: str  # assign, increment, decrement, multiply, divide, add, remove
    value: Any  # already converted to the stored form


def parse_update(
    schema: Any, doc_type: str, fields: Any, ignore_undefined: bool
) -> tuple[list[FieldOp], bool]:
    """Validate an update body's `fields`; returns (operations in request order, ignored-any)."""
    if not isinstance(fields, dict):
        raise FieldValueError("'fields' must be a JSON object")
    ops: list[FieldOp] = []
    ignored = False
    for name, body in fields.items():
        if any(c in name for c in "[{."):
            raise UnsupportedError(f"field path update '{name}'")
        field = schema.fields.get(name)
        if field is None:
            if ignore_undefined:
                ignored = True
                continue
            raise FieldValueError(unknown_field_message(schema, doc_type, name))
        if not isinstance(body, dict) or not body:
            raise FieldValueError(
                f"Field '{name}': an update must be an object like {{\"assign\": value}}"
            )
        for op, value in body.items():
            ops.append(_parse_op(name, field.type, op, value))
    return ops, ignored


def _parse_op(name: str, ftype: Any, op: str, value: Any) -> FieldOp:
    kind = ftype.kind
    element = (
        ftype.element.kind
        if kind == "array"
        else (ftype.tensor.cell_type if kind == "tensor" else None)
    )
    if op in _UNSUPPORTED_OPS:
        raise UnsupportedError(f"'{op}' update operation")
    if op == "assign":
        converted = None if value is None else convert_value(name, ftype, value)
        return FieldOp(name, kind, element, op, converted)
    if op in ARITHMETIC:
        if kind not in NUMERIC_KINDS:
            raise FieldValueError(
                f"Field '{name}' of type {type_spec(ftype)}: '{op}' needs a numeric field"
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FieldValueError(f"Field '{name}': '{op}' needs a number")
        return FieldOp(name, kind, element, op, float(value))
    if op in ("add", "remove"):
        if kind == "array":
            if not isinstance(value, list):
                raise FieldValueError(
                    f"Field '{name}' of type {type_spec(ftype)}: '{op}' needs an array"
                )
            return FieldOp(
                name, kind, element, op, [convert_value(name, ftype.element, v) for v in value]
            )
        if kind == "tensor" and not is_dense(ftype.tensor):
            if op == "add":
                if not isinstance(value, dict) or "cells" not in value:
                    raise FieldValueError(f"Field '{name}': tensor add needs {{\"cells\": ...}}")
                return FieldOp(name, kind, element, op, convert_value(name, ftype, value))
            return FieldOp(name, kind, element, op, mapped_addresses(name, ftype.tensor, value))
        raise FieldValueError(
            f"Field '{name}' of type {type_spec(ftype)}: '{op}' is not applicable"
        )
    raise FieldValueError(f"Field '{name}': unknown update operation '{op}'")


def _arithmetic(op: FieldOp, current: Any) -> Any:
    # Vespa applies arithmetic in double; a field without a value starts from the type's default, 0.
    base = np.float64(0.0 if current is None else current)
    operand = np.float64(op.value)
    with np.errstate(divide="ignore", invalid="ignore"):
        result = {
            "increment": base + operand,
            "decrement": base - operand,
            "multiply": base * operand,
            "divide": base / operand,
        }[op.op]
    if op.kind in ("int", "long"):
        if not np.isfinite(result):
            raise FieldValueError(
                f"Field '{op.field}': '{op.op}' by {op.value} gives no {op.kind} value"
            )
        return int(result)  # truncates toward zero like Vespa's cast
    if op.kind == "float":
        return float(np.float32(result))
    return float(result)


def apply_update(fields: dict[str, Any], ops: list[FieldOp]) -> dict[str, Any]:
    """Return a new field dict with `ops` applied in order (the input is never mutated)."""
    out = dict(fields)
    for op in ops:
        current = out.get(op.field)
        if op.op == "assign":
            new = op.value
        elif op.op in ARITHMETIC:
            new = _arithmetic(op, current)
        elif op.kind == "array":
            if op.op == "add":
                new = list(current or []) + list(op.value)
            else:
                new = [v for v in (current or []) if v not in op.value]
        elif op.op == "add":
            new = {**(current or {}), **op.value}
        else:
            new = {k: v for k, v in (current or {}).items() if k not in op.value}
        if new is None or (isinstance(new, list) and not new):
            out.pop(op.field, None)
        else:
            out[op.field] = new
    return out
