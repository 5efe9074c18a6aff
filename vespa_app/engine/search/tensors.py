"""Tensor values for ranking expressions: dense (numpy) and mapped (dict) tensors, literal
parsing (docs.vespa.ai/en/reference/ranking/tensor.html) and the short JSON form.

Dimensions are kept sorted by name as in Vespa's type normalisation; dense cells are a numpy
array whose axes follow that order. Cell types: float/bfloat16/int8 cells are held as float32
(bfloat16 values rounded, int8 values integral), double cells as float64. Scalars are Python
floats and never a Tensor.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vespa_app.engine.schema import TensorDim, TensorType, TypeSyntaxError, parse_tensor_type

Value = "float | Tensor"


class TensorError(ValueError):
    """A tensor value or operation that is invalid (bad literal, incompatible types)."""


def np_dtype(cell_type: str) -> type:
    return np.float64 if cell_type == "double" else np.float32


def round_bfloat16(a: np.ndarray) -> np.ndarray:
    """Round float32 values to the nearest bfloat16 (ties to even), kept as float32."""
    bits = np.asarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return rounded.astype(np.uint32).view(np.float32)


def cast_cells(values: np.ndarray, cell_type: str) -> np.ndarray:
    if cell_type == "double":
        return np.asarray(values, dtype=np.float64)
    out = np.asarray(values, dtype=np.float32)
    if cell_type == "bfloat16":
        return round_bfloat16(out)
    if cell_type == "int8":
        return np.clip(np.trunc(out), -128, 127).astype(np.float32)
    return out


def result_cell_type(a: str, b: str) -> str:
    """Cell type of a join of two tensors (bfloat16/int8 decay to float)."""
    if "double" in (a, b):
        return "double"
    return "float"


def decayed(cell_type: str) -> str:
    return "double" if cell_type == "double" else "float"


@dataclass
class Tensor:
    type: TensorType
    dense: np.ndarray | None = None  # shape = type.shape
    cells: dict[tuple[str, ...], float] | None = None  # mapped: address (dims order) -> value

    # -- construction ----------------------------------------------------------------------

    @staticmethod
    def from_dense(ttype: TensorType, values: np.ndarray) -> Tensor:
        arr = cast_cells(np.asarray(values), ttype.cell_type).reshape(ttype.shape)
        return Tensor(ttype, dense=arr)

    @staticmethod
    def from_cells(ttype: TensorType, cells: dict[tuple[str, ...], float]) -> Tensor:
        if ttype.is_dense:
            arr = np.zeros(ttype.shape, dtype=np_dtype(ttype.cell_type))
            for addr, v in cells.items():
                idx = []
                for d, label in zip(ttype.dims, addr, strict=True):
                    i = int(label)
                    if not 0 <= i < (d.size or 0):
                        raise TensorError(f"index {label} out of range for dimension {d.spec}")
                    idx.append(i)
                arr[tuple(idx)] = v
            return Tensor.from_dense(ttype, arr)
        if not ttype.is_mapped:
            raise TensorError(f"mixed tensor type {ttype.spec} is not supported")
        conv = _cell_converter(ttype.cell_type)
        return Tensor(ttype, cells={addr: conv(v) for addr, v in cells.items()})

    @staticmethod
    def zeros(ttype: TensorType) -> Tensor:
        if ttype.is_dense:
            return Tensor(ttype, dense=np.zeros(ttype.shape, dtype=np_dtype(ttype.cell_type)))
        return Tensor(ttype, cells={})

    # -- access ----------------------------------------------------------------------------

    @property
    def dim_names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.type.dims)

    def items(self) -> list[tuple[tuple[str, ...], float]]:
        if self.cells is not None:
            return list(self.cells.items())
        assert self.dense is not None
        return [(tuple(str(i) for i in idx), float(v)) for idx, v in np.ndenumerate(self.dense)]

    def to_json(self) -> dict:
        """Short form: dense -> {"type", "values"} (nested for several dims); mapped with one
        dimension -> {"type", "cells": {label: v}}; mapped with more -> verbose cells."""
        if self.dense is not None:
            return {"type": self.type.spec, "values": self.dense.astype(np.float64).tolist()}
        assert self.cells is not None
        if len(self.type.dims) == 1:
            return {
                "type": self.type.spec,
                "cells": {a[0]: float(v) for a, v in self.cells.items()},
            }
        return {
            "type": self.type.spec,
            "cells": [
                {"address": dict(zip(self.dim_names, a, strict=True)), "value": float(v)}
                for a, v in self.cells.items()
            ],
        }

    def __repr__(self) -> str:
        return json.dumps(self.to_json())


def _cell_converter(cell_type: str) -> Callable[[float], float]:
    if cell_type == "double":
        return float
    if cell_type == "bfloat16":
        return lambda v: float(round_bfloat16(np.array([v], dtype=np.float32))[0])
    if cell_type == "int8":
        return lambda v: float(max(-128, min(127, math.trunc(v))))
    return lambda v: float(np.float32(v))


def scalar_of(v: float | Tensor) -> float:
    """A value used where a scalar is needed: a tensor must have no dimensions or one cell."""
    if isinstance(v, Tensor):
        if v.dense is not None and v.dense.size == 1:
            return float(v.dense.reshape(-1)[0])
        if v.cells is not None and len(v.cells) <= 1:
            return float(next(iter(v.cells.values()), 0.0))
        raise TensorError(f"expected a scalar, got {v.type.spec}")
    return float(v)


# -- operations ---------------------------------------------------------------------------------


def join(a: float | Tensor, b: float | Tensor, fn: Callable) -> float | Tensor:
    """Vespa tensor join; `fn` works elementwise on numpy arrays or floats."""
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        return float(fn(a, b))
    if not isinstance(a, Tensor):
        assert isinstance(b, Tensor)
        return _map_cells(b, lambda x: fn(a, x), decayed(b.type.cell_type))
    if not isinstance(b, Tensor):
        return _map_cells(a, lambda x: fn(x, b), decayed(a.type.cell_type))
    cell_type = result_cell_type(a.type.cell_type, b.type.cell_type)
    if a.dense is not None and b.dense is not None:
        dims = _union_dims(a.type, b.type)
        xa = _expand(a, dims)
        xb = _expand(b, dims)
        out = fn(xa.astype(np.float64), xb.astype(np.float64))
        ttype = TensorType(cell_type, tuple(dims))
        return Tensor.from_dense(ttype, np.broadcast_to(out, ttype.shape))
    if a.cells is not None and b.cells is not None:
        dims = _union_dims(a.type, b.type)
        names = [d.name for d in dims]
        common = [n for n in a.dim_names if n in b.dim_names]
        ia = [a.dim_names.index(n) for n in common]
        ib = [b.dim_names.index(n) for n in common]
        index: dict[tuple[str, ...], list] = {}
        for addr, v in b.cells.items():
            index.setdefault(tuple(addr[i] for i in ib), []).append((addr, v))
        out_cells: dict[tuple[str, ...], float] = {}
        for addr_a, va in a.cells.items():
            for addr_b, vb in index.get(tuple(addr_a[i] for i in ia), []):
                label = dict(zip(a.dim_names, addr_a, strict=True))
                label.update(zip(b.dim_names, addr_b, strict=True))
                out_cells[tuple(label[n] for n in names)] = float(fn(va, vb))
        return Tensor.from_cells(TensorType(cell_type, tuple(dims)), out_cells)
    raise TensorError(f"joining {a.type.spec} with {b.type.spec} (mixed tensors) is not supported")


def _union_dims(a: TensorType, b: TensorType) -> list[TensorDim]:
    dims: dict[str, TensorDim] = {d.name: d for d in a.dims}
    for d in b.dims:
        if d.name in dims and dims[d.name] != d:
            other = dims[d.name]
            if (other.size is None) != (d.size is None):
                raise TensorError(
                    f"dimension '{d.name}' is mapped in one tensor, indexed in the other"
                )
            raise TensorError(f"dimension '{d.name}' has sizes {other.size} and {d.size}")
        dims[d.name] = d
    return sorted(dims.values(), key=lambda d: d.name)


def _expand(t: Tensor, dims: list[TensorDim]) -> np.ndarray:
    assert t.dense is not None
    own = {d.name: d.size for d in t.type.dims}
    shape = [own.get(d.name) or 1 for d in dims]
    return t.dense.reshape(shape)


def _map_cells(t: Tensor, fn: Callable, cell_type: str) -> Tensor:
    ttype = TensorType(cell_type, t.type.dims)
    if t.dense is not None:
        return Tensor.from_dense(ttype, fn(t.dense.astype(np.float64)))
    assert t.cells is not None
    return Tensor.from_cells(ttype, {a: float(fn(v)) for a, v in t.cells.items()})


def map_tensor(v: float | Tensor, fn: Callable) -> float | Tensor:
    if isinstance(v, Tensor):
        return _map_cells(v, fn, decayed(v.type.cell_type))
    return float(fn(v))


_REDUCERS: dict[str, Callable[[np.ndarray, tuple[int, ...]], np.ndarray]] = {
    "sum": lambda a, ax: np.sum(a, axis=ax),
    "avg": lambda a, ax: np.mean(a, axis=ax),
    "prod": lambda a, ax: np.prod(a, axis=ax),
    "max": lambda a, ax: np.max(a, axis=ax),
    "min": lambda a, ax: np.min(a, axis=ax),
    "median": lambda a, ax: np.median(a, axis=ax),
    "count": lambda a, ax: np.sum(np.ones_like(a), axis=ax),
}
AGGREGATORS = tuple(_REDUCERS)


def reduce(v: float | Tensor, agg: str, dims: tuple[str, ...] = ()) -> float | Tensor:
    if agg not in _REDUCERS:
        raise TensorError(f"unknown aggregator '{agg}'")
    if not isinstance(v, Tensor):
        return 1.0 if agg == "count" else float(v)
    for d in dims:
        if d not in v.dim_names:
            raise TensorError(f"reduce: {v.type.spec} has no dimension '{d}'")
    keep = [d for d in v.type.dims if dims and d.name not in dims]
    if v.dense is not None:
        axes = tuple(i for i, n in enumerate(v.dim_names) if not dims or n in dims)
        if v.dense.size == 0:
            out = np.zeros([d.size or 0 for d in keep])
        else:
            out = _REDUCERS[agg](v.dense.astype(np.float64), axes)
        if not keep:
            return float(out)
        return Tensor.from_dense(TensorType(decayed(v.type.cell_type), tuple(keep)), out)
    assert v.cells is not None
    keep_idx = [v.dim_names.index(d.name) for d in keep]
    groups: dict[tuple[str, ...], list[float]] = {}
    for addr, x in v.cells.items():
        groups.setdefault(tuple(addr[i] for i in keep_idx), []).append(x)
    if not keep:
        vals = groups.get((), [])
        return float(_REDUCERS[agg](np.array(vals, dtype=np.float64), (0,))) if vals else 0.0
    return Tensor.from_cells(
        TensorType(decayed(v.type.cell_type), tuple(keep)),
        {k: float(_REDUCERS[agg](np.array(x, dtype=np.float64), (0,))) for k, x in groups.items()},
    )


def rename(v: Tensor, old: tuple[str, ...], new: tuple[str, ...]) -> Tensor:
    if len(old) != len(new):
        raise TensorError("rename: the dimension lists differ in length")
    mapping = dict(zip(old, new, strict=True))
    for o in old:
        if o not in v.dim_names:
            raise TensorError(f"rename: {v.type.spec} has no dimension '{o}'")
    renamed = [TensorDim(mapping.get(d.name, d.name), d.size) for d in v.type.dims]
    order = sorted(range(len(renamed)), key=lambda i: renamed[i].name)
    ttype = TensorType(v.type.cell_type, tuple(renamed[i] for i in order))
    if len({d.name for d in renamed}) != len(renamed):
        raise TensorError("rename: duplicate dimension names")
    if v.dense is not None:
        return Tensor(ttype, dense=np.transpose(v.dense, order).copy())
    assert v.cells is not None
    return Tensor(ttype, cells={tuple(a[i] for i in order): x for a, x in v.cells.items()})


def concat(a: float | Tensor, b: float | Tensor, dim: str) -> Tensor:
    ta = _as_dense_along(a, dim)
    tb = _as_dense_along(b, dim)
    others_a = [d for d in ta.type.dims if d.name != dim]
    others_b = [d for d in tb.type.dims if d.name != dim]
    others = _union_dims(
        TensorType("double", tuple(others_a)), TensorType("double", tuple(others_b))
    )
    na = ta.type.dim(dim).size or 0  # type: ignore[union-attr]
    nb = tb.type.dim(dim).size or 0  # type: ignore[union-attr]
    dims = sorted([*others, TensorDim(dim, na + nb)], key=lambda d: d.name)
    axis = [d.name for d in dims].index(dim)

    def widen(t: Tensor, n: int) -> np.ndarray:
        shape = [n if d.name == dim else d.size for d in dims]
        return np.broadcast_to(_expand(t, [TensorDim(d.name, d.size) for d in dims]), shape)

    out = np.concatenate([widen(ta, na), widen(tb, nb)], axis=axis)
    cell = result_cell_type(ta.type.cell_type, tb.type.cell_type)
    return Tensor.from_dense(TensorType(cell, tuple(dims)), out)


def _as_dense_along(v: float | Tensor, dim: str) -> Tensor:
    if not isinstance(v, Tensor):
        return Tensor.from_dense(TensorType("double", (TensorDim(dim, 1),)), np.array([v]))
    if v.dense is None:
        raise TensorError("concat of mapped tensors is not supported")
    if dim in v.dim_names:
        return v
    dims = tuple(sorted([*v.type.dims, TensorDim(dim, 1)], key=lambda d: d.name))
    return Tensor.from_dense(
        TensorType(v.type.cell_type, dims), v.dense.reshape([d.size for d in dims])
    )


def cell_cast(v: float | Tensor, cell_type: str) -> float | Tensor:
    if not isinstance(v, Tensor):
        return v
    ttype = TensorType(cell_type, v.type.dims)
    if v.dense is not None:
        return Tensor.from_dense(ttype, v.dense)
    assert v.cells is not None
    return Tensor.from_cells(ttype, dict(v.cells))


def slice_tensor(v: float | Tensor, address: dict[str, str]) -> float | Tensor:
    if not isinstance(v, Tensor):
        raise TensorError("cannot slice a scalar")
    for name in address:
        if name not in v.dim_names:
            raise TensorError(f"slice: {v.type.spec} has no dimension '{name}'")
    keep = [d for d in v.type.dims if d.name not in address]
    if v.dense is not None:
        idx: list = []
        for d in v.type.dims:
            if d.name in address:
                i = int(float(address[d.name]))
                if not 0 <= i < (d.size or 0):
                    return (
                        0.0 if not keep else Tensor.zeros(TensorType(v.type.cell_type, tuple(keep)))
                    )
                idx.append(i)
            else:
                idx.append(slice(None))
        out = v.dense[tuple(idx)]
        if not keep:
            return float(out)
        return Tensor(TensorType(v.type.cell_type, tuple(keep)), dense=np.array(out))
    assert v.cells is not None
    pos = {n: i for i, n in enumerate(v.dim_names)}
    cells = {
        tuple(a[pos[d.name]] for d in keep): x
        for a, x in v.cells.items()
        if all(a[pos[n]] == lbl for n, lbl in address.items())
    }
    if not keep:
        return float(next(iter(cells.values()), 0.0))
    return Tensor(TensorType(v.type.cell_type, tuple(keep)), cells=cells)


# -- literal parsing ----------------------------------------------------------------------------

_TYPE_PREFIX = re.compile(r"^\s*(tensor\s*(?:<\s*\w+\s*>)?\s*\([^)]*\))\s*:\s*", re.S)


def parse_tensor_literal(text: str, expected: TensorType | None) -> Tensor:
    """Parse a tensor literal in any of the forms of §4.3; `expected` gives the type unless
    the text starts with an explicit `tensor<...>(...):` type."""
    m = _TYPE_PREFIX.match(text)
    if m:
        try:
            ttype = parse_tensor_type(m.group(1))
        except TypeSyntaxError as e:
            raise TensorError(f"bad tensor type '{e.construct}'") from None
        if expected is not None and (ttype.dims != expected.dims):
            raise TensorError(f"type {ttype.spec} does not match the expected {expected.spec}")
        body = text[m.end() :]
    else:
        if expected is None:
            raise TensorError("a tensor literal needs a type")
        ttype = expected
        body = text
    body = body.strip()
    if not body:
        raise TensorError("empty tensor value")
    if body[0] == "[":
        return _dense_literal(ttype, body)
    if body[0] == "{":
        return _brace_literal(ttype, body)
    raise TensorError(f"unexpected tensor value '{body[:30]}'")


def _dense_literal(ttype: TensorType, body: str) -> Tensor:
    if not ttype.is_dense:
        raise TensorError(f"an indexed literal given for {ttype.spec}")
    try:
        values = json.loads(body)
    except json.JSONDecodeError:
        raise TensorError(f"bad indexed tensor literal '{body[:30]}'") from None
    arr = np.asarray(values, dtype=np.float64)
    if arr.dtype == object:
        raise TensorError("ragged tensor literal")
    if arr.size != math.prod(ttype.shape) or (arr.ndim > 1 and arr.shape != ttype.shape):
        raise TensorError(
            f"{arr.size} values given for {ttype.spec}, which has {math.prod(ttype.shape)} cells"
        )
    return Tensor.from_dense(ttype, arr.reshape(ttype.shape))


class _LitScanner:
    def __init__(self, text: str):
        self.t = text
        self.i = 0

    def ws(self) -> None:
        while self.i < len(self.t) and self.t[self.i].isspace():
            self.i += 1

    def peek(self) -> str:
        self.ws()
        return self.t[self.i] if self.i < len(self.t) else ""

    def expect(self, c: str) -> None:
        if self.peek() != c:
            raise TensorError(f"expected '{c}' at position {self.i} of the tensor literal")
        self.i += 1

    def label(self) -> str:
        self.ws()
        if self.i < len(self.t) and self.t[self.i] in "\"'":
            q = self.t[self.i]
            end = self.t.find(q, self.i + 1)
            if end < 0:
                raise TensorError("unterminated label")
            out = self.t[self.i + 1 : end]
            self.i = end + 1
            return out
        m = re.compile(r"[^\s,:{}\[\]\"']+").match(self.t, self.i)
        if not m:
            raise TensorError(f"expected a label at position {self.i} of the tensor literal")
        self.i = m.end()
        return m.group(0)

    def number(self) -> float:
        self.ws()
        m = re.compile(
            r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:inf|Infinity|nan|NaN)"
        ).match(self.t, self.i)
        if not m:
            raise TensorError(f"expected a number at position {self.i} of the tensor literal")
        self.i = m.end()
        return float(m.group(0).replace("Infinity", "inf"))


def _brace_literal(ttype: TensorType, body: str) -> Tensor:
    """`{a: 1, "b/c": 2}` (one mapped or indexed dim), `{{x:a,y:0}:1, ...}` (general)."""
    s = _LitScanner(body)
    s.expect("{")
    cells: dict[tuple[str, ...], float] = {}
    names = [d.name for d in ttype.dims]
    if s.peek() == "}":
        s.i += 1
    else:
        while True:
            if s.peek() == "{":
                s.i += 1
                addr: dict[str, str] = {}
                if s.peek() != "}":
                    while True:
                        dim = s.label()
                        s.expect(":")
                        addr[dim] = s.label()
                        if s.peek() == ",":
                            s.i += 1
                            continue
                        break
                s.expect("}")
                if set(addr) != set(names):
                    raise TensorError(f"address {addr} does not match {ttype.spec}")
                key = tuple(addr[n] for n in names)
            else:
                if len(names) != 1:
                    raise TensorError(
                        f"short mapped form needs one dimension, {ttype.spec} has {len(names)}"
                    )
                key = (s.label(),)
            s.expect(":")
            cells[key] = s.number()
            if s.peek() == ",":
                s.i += 1
                continue
            break
        s.expect("}")
    if s.peek():
        raise TensorError("text after the tensor literal")
    return Tensor.from_cells(ttype, cells)
