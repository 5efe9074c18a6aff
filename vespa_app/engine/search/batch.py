"""Evaluate a rank-profile expression over all hits of a phase at once (numpy, batched ONNX).

The per-hit closures of ranking.py are the reference: Vespa evaluates an expression once per
hit, and so do they. This module compiles the same AST into functions of a `Batch` (the
phase's positions and rows) that return one value per hit, which is the same arithmetic
(float64 math, results cast to the tensor's cell type) done for every hit in one numpy call:

- a scalar per hit is a float64 array of shape (N,); a hit-independent value stays a float or a
  `Tensor` (query-only subexpressions are the per-hit compiler's closures, cached per query);
- a dense tensor per hit is a `BT`: its type and an array of shape (N, *type.shape);
- an ``onnx(model)`` whose inputs depend on the hit runs ONCE per phase: the per-hit inputs are
  stacked along the model's first axis when that axis is symbolic in every input (the batch
  dimension of an exported model; rows are scored independently, so each hit's output rows are
  its per-hit output), otherwise the model runs hit by hit on prepared arrays;
- one-dimension mapped attributes per hit are a `BM` (labels x hits with a presence mask),
  joined with scalars or query tensors of the same dimension and reduced;
- anything else (normalizers, slices with computed labels, mixed tensors, l2_normalize, ...)
  is `NotBatchable` at compile time and the phase keeps the per-hit path.

At run time a value combination the batch path does not handle, or any evaluation error,
raises `Fallback`; the executor then evaluates that phase per hit, which produces Vespa's result
or its exact error message. tests/vespa_app/test_batch_ranking.py checks both paths agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from vespa_app.engine.schema import OnnxModel, TensorDim, TensorType
from vespa_app.engine.search import tensors as T
from vespa_app.engine.search.expression import (
    Binary,
    Call,
    Feature,
    If,
    Lambda,
    Literal,
    Num,
    Ref,
    Slice,
    TensorFn,
    Unary,
    parse_expression,
)
from vespa_app.engine.search.tensors import Tensor, TensorError

if TYPE_CHECKING:
    from vespa_app.engine.search.ranking import Ctx, ProfileCompiler, QueryState

ONNX_CHUNK = 4096  # hits per batched onnxruntime call (bounds the input arrays' memory)


class NotBatchable(Exception):
    """The expression uses a construct the batch compiler does not vectorise."""


class Fallback(Exception):
    """A value combination the batch path does not handle at run time: evaluate per hit."""


@dataclass
class BT:
    """One dense tensor per hit: `data` has shape (N, *type.shape) and the cell type's dtype."""

    type: TensorType
    data: np.ndarray

    def hit(self, i: int) -> Tensor:
        return Tensor(self.type, dense=self.data[i])


@dataclass
class BM:
    """One mapped tensor with a single dimension per hit: `values[i, j]` is hit i's cell for
    `labels[j]` when `present[i, j]` (values already rounded to the cell type)."""

    type: TensorType
    labels: list[str]
    values: np.ndarray  # (N, L) float64
    present: np.ndarray  # (N, L) bool

    def hit(self, i: int) -> Tensor:
        cells = {
            (label,): float(self.values[i, j])
            for j, label in enumerate(self.labels)
            if self.present[i, j]
        }
        return Tensor(self.type, cells=cells)

    def with_values(self, values: np.ndarray, cell_type: str) -> BM:
        ttype = TensorType(cell_type, self.type.dims)
        rounded = T.cast_cells(values, cell_type).astype(np.float64)
        return BM(ttype, self.labels, rounded, self.present)


class Batch:
    """The hits of one phase: positions into the matched rows, their rows, window indices."""

    __slots__ = ("cache", "ctx", "n", "pos", "qs", "rows", "win")

    def __init__(self, qs: QueryState, ctx: Ctx, pos: np.ndarray, rows: np.ndarray, win=None):
        self.qs = qs
        self.ctx = ctx  # for query-only closures (they read qs only)
        self.pos = pos
        self.rows = rows
        self.win = win
        self.n = len(pos)
        self.cache: dict[object, object] = {}


BFn = Callable[[Batch], object]
# parameter name -> (per-hit fn or None when doc-dependent, batch fn, doc_dependent)
Env = dict[str, tuple[object, BFn, bool]]

_DOC_FEATURES = {
    "attribute", "closeness", "distance", "age", "freshness", "firstPhase", "secondPhase", "bm25",
}  # fmt: skip


def scores(value: object, n: int) -> np.ndarray:
    """A phase's value as one float64 score per hit (what `scalar_of` gives per hit)."""
    if isinstance(value, np.ndarray):
        return value.astype(np.float64, copy=False)
    if isinstance(value, BT):
        if math.prod(value.type.shape) != 1:
            raise Fallback
        return value.data.reshape(n).astype(np.float64)
    if isinstance(value, BM):
        if (value.present.sum(axis=1) > 1).any():
            raise Fallback
        return np.where(value.present, value.values, 0.0).sum(axis=1)
    try:
        return np.full(n, T.scalar_of(value))  # type: ignore[arg-type]
    except TensorError:
        raise Fallback from None


def per_hit(value: object, i: int) -> object:
    """Hit i's value in the per-hit representation (float or Tensor)."""
    if isinstance(value, np.ndarray):
        return float(value[i])
    if isinstance(value, (BT, BM)):
        return value.hit(i)
    return value


class BatchCompiler:
    """Compiles expressions of one profile into batch functions, next to a `ProfileCompiler`."""

    def __init__(self, pc: ProfileCompiler):
        self.pc = pc
        self._stack: list[str] = []
        self._onnx: dict[str, BFn] = {}

    def compile_text(self, text: str) -> BFn | None:
        """The batch function of an expression, or None when it has to run per hit."""
        try:
            return self.compile(parse_expression(text), {})
        except (NotBatchable, RecursionError):
            return None

    # -- dependence (no compilation, so no side effects such as normalizer slots) -----------

    def depends(self, node: object, env: Env) -> bool:
        if isinstance(node, (Num, Literal)):
            return False
        if isinstance(node, Unary):
            return self.depends(node.arg, env)
        if isinstance(node, Binary):
            return self.depends(node.left, env) or self.depends(node.right, env)
        if isinstance(node, If):
            return any(self.depends(x, env) for x in (node.cond, node.then, node.other))
        if isinstance(node, Call):
            return any(self.depends(a, env) for a in node.args)
        if isinstance(node, Slice):
            return self.depends(node.arg, env) or any(
                not isinstance(lab, str) and self.depends(lab, env) for _, lab in node.address
            )
        if isinstance(node, TensorFn):
            if node.name in ("normalize_linear", "reciprocal_rank", "reciprocal_rank_fusion"):
                return True
            return any(self.depends(a, env) for a in node.args if _is_expr(a))
        if isinstance(node, Feature):
            if node.name in _DOC_FEATURES:
                return True
            if node.name in ("onnx", "onnxModel"):
                return self._model_depends(self._model(node.args[0]))
            return False
        if isinstance(node, Ref):
            if node.name in env and node.args is None:
                return env[node.name][2]
            fn = self.pc.profile.functions.get(node.name)
            if fn is None or node.name in self._stack:
                raise NotBatchable(node.name)
            args = node.args or ()
            bound = {
                p: (None, _never, self.depends(a, env)) for p, a in zip(fn.args, args, strict=True)
            }
            self._stack.append(fn.name)
            try:
                return self.depends(parse_expression(fn.expression), bound)
            finally:
                self._stack.pop()
        raise NotBatchable(repr(node))

    def _model(self, name: str) -> OnnxModel:
        model = self.pc.profile.onnx_models.get(name) or self.pc.schema.onnx_models.get(name)
        if model is None:
            raise NotBatchable(name)
        return model

    def _model_depends(self, model: OnnxModel) -> bool:
        if model.name in self._stack:
            raise NotBatchable(model.name)
        self._stack.append(model.name)
        try:
            return any(self.depends(parse_expression(src), {}) for _, src in model.inputs)
        finally:
            self._stack.pop()

    # -- compilation -----------------------------------------------------------------------

    def compile(self, node: object, env: Env) -> BFn:
        if not self.depends(node, env):
            hit_env = {k: (v[0], False) for k, v in env.items() if not v[2]}
            fn, _ = self.pc.compile(node, hit_env)  # query-only: cached once per query

            def const(b: Batch, fn=fn):
                return fn(b.ctx)

            return const
        return self._compile(node, env)

    def _compile(self, node: object, env: Env) -> BFn:
        if isinstance(node, Unary):
            f = self.compile(node.arg, env)
            if node.op == "-":
                return lambda b: _map(np.negative, f(b))
            return lambda b: _map(lambda x: np.asarray(x == 0, dtype=np.float64), f(b))
        if isinstance(node, Binary):
            from vespa_app.engine.search.ranking import _BINOPS

            fa, fb = self.compile(node.left, env), self.compile(node.right, env)
            if node.op in ("&&", "||"):
                both = node.op == "&&"

                def logic(b: Batch):
                    x = _truths(fa(b), b.n)
                    y = _truths(fb(b), b.n)
                    return np.asarray((x & y) if both else (x | y), dtype=np.float64)

                return logic
            op = _BINOPS[node.op]
            if node.op == "/":
                op = np.divide
            return lambda b: _join(fa(b), fb(b), op)
        if isinstance(node, If):
            fc, ft, fo = (self.compile(x, env) for x in (node.cond, node.then, node.other))

            def pick(b: Batch):
                cond = _truths(fc(b), b.n)
                t, o = ft(b), fo(b)
                if isinstance(t, (BT, Tensor)) or isinstance(o, (BT, Tensor)):
                    raise Fallback
                return np.where(cond, np.asarray(t, np.float64), np.asarray(o, np.float64))

            return pick
        if isinstance(node, Call):
            from vespa_app.engine.search.ranking import _MATH

            mfn = _MATH.get(node.name)
            if mfn is None:
                raise NotBatchable(node.name)
            fs = [self.compile(a, env) for a in node.args]
            if len(fs) == 1:
                f0 = fs[0]
                return lambda b: _map(mfn, f0(b))
            f0, f1 = fs
            return lambda b: _join(f0(b), f1(b), mfn)
        if isinstance(node, Slice):
            return self._slice(node, env)
        if isinstance(node, TensorFn):
            return self._tensor_fn(node, env)
        if isinstance(node, Feature):
            return self._feature(node)
        if isinstance(node, Ref):
            return self._ref(node, env)
        raise NotBatchable(repr(node))

    def _slice(self, node: Slice, env: Env) -> BFn:
        if any(not isinstance(lab, str) for _, lab in node.address):
            raise NotBatchable("slice with a computed label")
        base = self.compile(node.arg, env)
        address = node.address

        def run(b: Batch):
            t = base(b)
            if not isinstance(t, BT):
                raise Fallback
            names = [d.name for d in t.type.dims]
            addr: dict[str, str] = {}
            for dim, lab in address:
                if dim is None:
                    if len(names) != 1:
                        raise Fallback
                    dim = names[0]
                addr[dim] = lab
            if any(d not in names for d in addr):
                raise Fallback
            keep = [d for d in t.type.dims if d.name not in addr]
            idx: list = [slice(None)]
            for d in t.type.dims:
                if d.name in addr:
                    try:
                        i = int(float(addr[d.name]))
                    except ValueError:
                        raise Fallback from None
                    if not 0 <= i < (d.size or 0):
                        if not keep:
                            return np.zeros(b.n)
                        ttype = TensorType(t.type.cell_type, tuple(keep))
                        return BT(ttype, np.zeros((b.n, *ttype.shape), t.data.dtype))
                    idx.append(i)
                else:
                    idx.append(slice(None))
            out = t.data[tuple(idx)]
            if not keep:
                return out.astype(np.float64)
            return BT(TensorType(t.type.cell_type, tuple(keep)), np.array(out))

        return run

    def _tensor_fn(self, node: TensorFn, env: Env) -> BFn:
        name, args = node.name, node.args
        if name == "reduce":
            f = self.compile(args[0], env)
            agg, dims = args[1], tuple(args[2:])
            return lambda b: _reduce(f(b), agg, dims, b.n)
        if name == "rename":
            f = self.compile(args[0], env)
            old, new = args[1], args[2]
            return lambda b: _rename(f(b), old, new)
        if name == "map":
            from vespa_app.engine.search.ranking import _lambda_fn

            f = self.compile(args[0], env)
            lam = _lambda_fn(args[1])
            return lambda b: _map(lam, f(b))
        if name == "join":
            from vespa_app.engine.search.ranking import _lambda_fn

            fa, fb = self.compile(args[0], env), self.compile(args[1], env)
            lam = _lambda_fn(args[2])
            return lambda b: _join(fa(b), fb(b), lam)
        if name == "concat":
            fa, fb = self.compile(args[0], env), self.compile(args[1], env)
            dim = args[2]
            return lambda b: _concat(fa(b), fb(b), dim, b.n)
        if name == "cell_cast":
            f = self.compile(args[0], env)
            ct = args[1]

            def cast(b: Batch):
                v = f(b)
                if isinstance(v, BT):
                    return BT(TensorType(ct, v.type.dims), T.cast_cells(v.data, ct))
                if isinstance(v, (Tensor, BM)):
                    raise Fallback
                return v

            return cast
        raise NotBatchable(name)

    def _feature(self, node: Feature) -> BFn:
        from vespa_app.engine.search.ranking import DEFAULT_MAX_AGE, MAX_DISTANCE

        name, args = node.name, node.args
        schema = self.pc.schema
        if name == "attribute":
            fname = args[0]
            f = schema.fields[fname]
            if f.type.kind == "tensor":
                tt = f.type.tensor
                if tt is not None and tt.is_mapped and len(tt.dims) == 1:

                    def mapped(b: Batch, fname=fname, tt=tt):
                        mc = b.qs.segment.mapped_columns.get(fname)
                        if mc is None or not mc.usable:
                            raise Fallback
                        labels = list(mc.labels)
                        width = len(labels)
                        values = mc.values[b.rows, :width].astype(np.float64)
                        return BM(tt, labels, values, mc.present[b.rows, :width])

                    return mapped
                if tt is None or not tt.is_dense:
                    raise NotBatchable(f"attribute({fname}) of a mixed tensor")

                def dense(b: Batch, fname=fname, tt=tt):
                    seg = b.qs.segment
                    data = seg.dense[fname][b.rows]
                    missing = ~seg.has_dense[fname][b.rows]
                    if missing.any():
                        data[missing] = 0
                    return BT(tt, data.reshape((b.n, *tt.shape)))

                return dense
            return lambda b: b.qs.segment.numeric[fname][b.rows].astype(np.float64)
        if name in ("closeness", "distance"):
            key = ("field", args[0]) if len(args) == 1 else (args[0], args[1])
            table = "closeness" if name == "closeness" else "distance"
            missing = 0.0 if name == "closeness" else MAX_DISTANCE

            def nn(b: Batch):
                arr = getattr(b.qs, table).get(key)
                if arr is None:
                    return np.full(b.n, missing)
                return np.asarray(arr, dtype=np.float64)[b.pos]

            return nn
        if name in ("age", "freshness"):
            fname = args[0]
            if name == "age":
                return lambda b: b.qs.now - b.qs.segment.numeric[fname][b.rows]
            max_age = float(
                self.pc.profile.rank_properties.get(f"freshness({fname}).maxAge", DEFAULT_MAX_AGE)
            )

            def fresh(b: Batch):
                age = b.qs.now - b.qs.segment.numeric[fname][b.rows]
                return np.maximum(1.0 - age / max_age, 0.0)

            return fresh
        if name in ("firstPhase", "secondPhase"):
            attr = "first_phase" if name == "firstPhase" else "second_phase"
            return lambda b: np.asarray(getattr(b.qs, attr), dtype=np.float64)[b.pos]
        if name == "bm25":
            fname = args[0]

            def bm25(b: Batch):
                arr = b.qs.bm25.get(fname)
                return np.zeros(b.n) if arr is None else np.asarray(arr, np.float64)[b.pos]

            return bm25
        if name in ("onnx", "onnxModel"):
            return self._onnx_output(node)
        raise NotBatchable(node.canonical)

    # -- ONNX ------------------------------------------------------------------------------

    def _onnx_output(self, node: Feature) -> BFn:
        model = self._model(node.args[0])
        output = node.output
        sess = self.pc.onnx.session(model)
        names = [o.name for o in sess.get_outputs()]
        if output:
            aliases = {alias: n for n, alias in model.outputs}
            out_name = aliases.get(output, output)
        else:
            out_name = model.outputs[0][0] if model.outputs else names[0]
        run = self._onnx_model(model)
        return lambda b: run(b)[out_name]

    def _onnx_model(self, model: OnnxModel) -> BFn:
        if model.name in self._onnx:
            return self._onnx[model.name]
        from vespa_app.engine.search.ranking import _ORT_DTYPES, _onnx_input, _onnx_output

        sess = self.pc.onnx.session(model)
        meta = {i.name: i for i in sess.get_inputs()}
        self._stack.append(model.name)
        try:
            feeds = [
                (name, self.compile(parse_expression(src), {}), meta[name])
                for name, src in model.inputs
            ]
        finally:
            self._stack.pop()
        out_names = [o.name for o in sess.get_outputs()]
        # the first axis is a batch axis when it is symbolic in every input
        stackable = all(
            info.shape and not isinstance(info.shape[0], int) for _, _, info in feeds
        ) and len(feeds) == len(meta)
        mname = model.name

        def run(b: Batch) -> dict[str, BT]:
            key = ("onnx", mname)
            hit = b.cache.get(key)
            if hit is not None:
                return hit  # type: ignore[return-value]
            arrays: dict[str, np.ndarray] = {}
            for name, f, info in feeds:
                dtype = _ORT_DTYPES[info.type]
                shape = list(info.shape)
                v = f(b)
                try:
                    if isinstance(v, BT):
                        arr = _axis_order(v, mname, name)
                        _check_shape(arr.shape[1:], shape)
                        arrays[name] = arr.astype(dtype)
                    else:
                        one = _onnx_input(mname, name, v, dtype, shape)
                        arrays[name] = np.broadcast_to(one, (b.n, *one.shape))
                except Exception:
                    raise Fallback from None
            try:
                outs = _run_model(sess, arrays, b.n, stackable)
            except Exception:
                raise Fallback from None
            result = {}
            for oname, arr in zip(out_names, outs, strict=True):
                one = _onnx_output(arr[0])  # the per-hit output's type
                result[oname] = BT(one.type, T.cast_cells(arr, one.type.cell_type))
            b.qs.onnx_runs[mname] += b.n
            b.cache[key] = result
            return result

        self._onnx[model.name] = run
        return run

    # -- references ------------------------------------------------------------------------

    def _ref(self, node: Ref, env: Env) -> BFn:
        if node.name in env and node.args is None:
            return env[node.name][1]
        fn = self.pc.profile.functions[node.name]
        args = node.args or ()
        bound: Env = {}
        for p, a in zip(fn.args, args, strict=True):
            dep = self.depends(a, env)
            hit_fn = None
            if not dep:
                hit_env = {k: (v[0], False) for k, v in env.items() if not v[2]}
                hit_fn = self.pc.compile(a, hit_env)[0]
            bound[p] = (hit_fn, self.compile(a, env), dep)
        self._stack.append(fn.name)
        try:
            body = self.compile(parse_expression(fn.expression), bound)
        finally:
            self._stack.pop()
        if args:
            return body
        key = ("fn", fn.name)

        def memo(b: Batch, body=body, key=key):
            c = b.cache
            if key in c:
                return c[key]
            v = body(b)
            c[key] = v
            return v

        return memo


# -- value operations ---------------------------------------------------------------------------


def _never(b: Batch):
    raise Fallback


def _is_expr(a: object) -> bool:
    return not isinstance(a, (str, tuple, Lambda))


def _truths(v: object, n: int) -> np.ndarray:
    return scores(v, n) != 0


def _map(fn: Callable, v: object) -> object:
    with np.errstate(all="ignore"):
        if isinstance(v, BM):
            out = np.broadcast_to(np.asarray(fn(v.values)), v.values.shape)
            return v.with_values(out, T.decayed(v.type.cell_type))
        if isinstance(v, BT):
            cell = T.decayed(v.type.cell_type)
            out = np.broadcast_to(np.asarray(fn(v.data.astype(np.float64))), v.data.shape)
            return BT(TensorType(cell, v.type.dims), T.cast_cells(out, cell))
        if isinstance(v, np.ndarray):
            return np.broadcast_to(np.asarray(fn(v), dtype=np.float64), v.shape)
        try:
            return T.map_tensor(v, fn)  # type: ignore[arg-type]
        except TensorError:
            raise Fallback from None


def _lead(v: object) -> tuple[tuple[TensorDim, ...], np.ndarray, str | None]:
    """(dims, data with a leading hit axis of N or 1, cell type or None for a scalar)."""
    if isinstance(v, BT):
        return v.type.dims, v.data, v.type.cell_type
    if isinstance(v, Tensor):
        if v.dense is None:
            raise Fallback
        return v.type.dims, v.dense[None], v.type.cell_type
    if isinstance(v, np.ndarray):
        return (), v, None
    return (), np.asarray([v], dtype=np.float64), None


def _join_mapped(a: object, b: object, fn: Callable) -> BM:
    """A per-hit mapped tensor joined with a scalar or a query tensor of the same dimension."""
    m, other, m_left = (a, b, True) if isinstance(a, BM) else (b, a, False)
    assert isinstance(m, BM)
    with np.errstate(all="ignore"):
        if isinstance(other, (BM, BT)):
            raise Fallback
        if not isinstance(other, Tensor):  # a scalar: map over the cells
            x = other if not isinstance(other, np.ndarray) else other[:, None]
            out = fn(m.values, x) if m_left else fn(x, m.values)
            return m.with_values(np.broadcast_to(out, m.values.shape), T.decayed(m.type.cell_type))
        if other.cells is None or other.type.dims != m.type.dims:
            raise Fallback  # dense, or a product over other dimensions
        consts = np.array([other.cells.get((label,), np.nan) for label in m.labels])
        matched = np.array([(label,) in other.cells for label in m.labels], dtype=bool)
        out = fn(m.values, consts[None, :]) if m_left else fn(consts[None, :], m.values)
        cell = T.result_cell_type(m.type.cell_type, other.type.cell_type)
        joined = m.with_values(np.broadcast_to(out, m.values.shape), cell)
        return BM(joined.type, m.labels, joined.values, m.present & matched[None, :])


def _join(a: object, b: object, fn: Callable) -> object:
    if isinstance(a, BM) or isinstance(b, BM):
        return _join_mapped(a, b, fn)
    if not isinstance(a, (BT, Tensor)) and not isinstance(b, (BT, Tensor)):
        with np.errstate(all="ignore"):
            out = fn(a, b)
        return np.asarray(out, dtype=np.float64)
    da, xa, ca = _lead(a)
    db, xb, cb = _lead(b)
    with np.errstate(all="ignore"):
        if ca is None or cb is None:  # scalar with a tensor: map over its cells
            dims, cell = (db, cb) if ca is None else (da, ca)
            cell = T.decayed(cell)  # type: ignore[arg-type]
            ttype = TensorType(cell, dims)
            shape = (1,) * len(dims)
            sa = xa.reshape(-1, *shape) if ca is None else xa
            sb = xb.reshape(-1, *shape) if cb is None else xb
            out = fn(sa.astype(np.float64), sb.astype(np.float64))
        else:
            try:
                union = T._union_dims(TensorType(ca, da), TensorType(cb, db))
            except TensorError:
                raise Fallback from None
            ttype = TensorType(T.result_cell_type(ca, cb), tuple(union))
            out = fn(
                _expand(da, xa, union).astype(np.float64), _expand(db, xb, union).astype(np.float64)
            )
    n = max(xa.shape[0], xb.shape[0])
    out = np.broadcast_to(out, (n, *ttype.shape))
    return BT(ttype, T.cast_cells(out, ttype.cell_type))


def _expand(dims: tuple[TensorDim, ...], data: np.ndarray, union: list[TensorDim]) -> np.ndarray:
    own = {d.name: d.size for d in dims}
    return data.reshape(data.shape[0], *[own.get(d.name) or 1 for d in union])


def _reduce_mapped(v: BM, agg: str, dims: tuple[str, ...]) -> np.ndarray:
    """Every cell of each hit reduced to one number; no cells reduce to 0 (as per hit)."""
    names = [d.name for d in v.type.dims]
    if any(d not in names for d in dims) or agg == "median":
        raise Fallback
    count = v.present.sum(axis=1)
    with np.errstate(all="ignore"):
        if agg == "count":
            return count.astype(np.float64)
        if agg in ("sum", "avg"):
            total = np.where(v.present, v.values, 0.0).sum(axis=1)
            out = total if agg == "sum" else total / np.maximum(count, 1)
        elif agg == "prod":
            out = np.where(v.present, v.values, 1.0).prod(axis=1)
        elif agg == "max":
            out = np.where(v.present, v.values, -np.inf).max(axis=1, initial=-np.inf)
        else:
            out = np.where(v.present, v.values, np.inf).min(axis=1, initial=np.inf)
    return np.where(count > 0, out, 0.0)


def _reduce(v: object, agg: str, dims: tuple[str, ...], n: int) -> object:
    if isinstance(v, BM):
        return _reduce_mapped(v, agg, dims)
    if isinstance(v, np.ndarray):
        return np.ones(n) if agg == "count" else v
    if not isinstance(v, BT):
        try:
            return T.reduce(v, agg, dims)  # type: ignore[arg-type]
        except TensorError:
            raise Fallback from None
    names = [d.name for d in v.type.dims]
    if any(d not in names for d in dims):
        raise Fallback
    keep = [d for d in v.type.dims if dims and d.name not in dims]
    axes = tuple(i + 1 for i, name in enumerate(names) if not dims or name in dims)
    if math.prod(v.type.shape) == 0:
        out = np.zeros((n, *[d.size or 0 for d in keep]))
    else:
        out = T._REDUCERS[agg](v.data.astype(np.float64), axes)
    if not keep:
        return np.asarray(out, dtype=np.float64).reshape(n)
    ttype = TensorType(T.decayed(v.type.cell_type), tuple(keep))
    return BT(ttype, T.cast_cells(out, ttype.cell_type))


def _along(v: object, dim: str) -> tuple[tuple[TensorDim, ...], np.ndarray, str]:
    """As tensors.concat's _as_dense_along, with a leading hit axis of N or 1."""
    if isinstance(v, BM) or (isinstance(v, Tensor) and v.dense is None):
        raise Fallback
    if isinstance(v, (BT, Tensor)):
        dims, data, cell = _lead(v)
        if any(d.name == dim for d in dims):
            return dims, data, cell  # type: ignore[return-value]
        widened = tuple(sorted([*dims, TensorDim(dim, 1)], key=lambda d: d.name))
        return widened, data.reshape(data.shape[0], *[d.size for d in widened]), cell  # type: ignore[return-value]
    column = np.asarray(v, dtype=np.float64).reshape(-1, 1)  # a scalar: dim[1], double cells
    return (TensorDim(dim, 1),), column, "double"


def _concat(a: object, b: object, dim: str, n: int) -> BT:
    da, xa, ca = _along(a, dim)
    db, xb, cb = _along(b, dim)
    others_a = tuple(d for d in da if d.name != dim)
    others_b = tuple(d for d in db if d.name != dim)
    try:
        others = T._union_dims(TensorType("double", others_a), TensorType("double", others_b))
    except TensorError:
        raise Fallback from None
    na = next(d.size for d in da if d.name == dim) or 0
    nb = next(d.size for d in db if d.name == dim) or 0
    dims = sorted([*others, TensorDim(dim, na + nb)], key=lambda d: d.name)
    axis = 1 + [d.name for d in dims].index(dim)

    def widen(own_dims: tuple[TensorDim, ...], data: np.ndarray, size: int) -> np.ndarray:
        own = {d.name: d.size for d in own_dims}
        shaped = data.reshape(data.shape[0], *[own.get(d.name) or 1 for d in dims])
        return np.broadcast_to(shaped, (n, *[size if d.name == dim else d.size for d in dims]))

    out = np.concatenate([widen(da, xa, na), widen(db, xb, nb)], axis=axis)
    ttype = TensorType(T.result_cell_type(ca, cb), tuple(dims))
    return BT(ttype, T.cast_cells(out, ttype.cell_type))


def _rename(v: object, old: tuple[str, ...], new: tuple[str, ...]) -> BT:
    if not isinstance(v, BT) or len(old) != len(new):
        raise Fallback
    names = [d.name for d in v.type.dims]
    if any(o not in names for o in old):
        raise Fallback
    mapping = dict(zip(old, new, strict=True))
    renamed = [TensorDim(mapping.get(d.name, d.name), d.size) for d in v.type.dims]
    if len({d.name for d in renamed}) != len(renamed):
        raise Fallback
    order = sorted(range(len(renamed)), key=lambda i: renamed[i].name)
    ttype = TensorType(v.type.cell_type, tuple(renamed[i] for i in order))
    return BT(ttype, np.transpose(v.data, (0, *[i + 1 for i in order])))


def _axis_order(v: BT, model: str, name: str) -> np.ndarray:
    """Per-hit tensors with dims d0, d1, ... -> (N, axis0, axis1, ...) arrays."""
    names = [d.name for d in v.type.dims]
    if not all(n.startswith("d") and n[1:].isdigit() for n in names):
        raise Fallback
    order = sorted(range(len(names)), key=lambda i: int(names[i][1:]))
    return np.transpose(v.data, (0, *[i + 1 for i in order]))


def _check_shape(got: tuple[int, ...], want: list) -> None:
    if len(got) != len(want) or any(
        isinstance(w, int) and w not in (-1, g) for w, g in zip(want, got, strict=True)
    ):
        raise Fallback


def _run_model(sess, arrays: dict[str, np.ndarray], n: int, stackable: bool) -> list[np.ndarray]:
    """Outputs with a leading hit axis: (N, *per-hit output shape)."""
    if n == 0:
        raise Fallback
    rows = {a.shape[1] for a in arrays.values()}
    if stackable and len(rows) == 1:
        b = rows.pop()
        parts: list[list[np.ndarray]] = []
        for start in range(0, n, ONNX_CHUNK):
            stop = min(start + ONNX_CHUNK, n)
            feed = {
                k: np.ascontiguousarray(a[start:stop]).reshape((stop - start) * b, *a.shape[2:])
                for k, a in arrays.items()
            }
            outs = sess.run(None, feed)
            if any(o.ndim == 0 or o.shape[0] != (stop - start) * b for o in outs):
                raise Fallback  # the model does not keep the batch axis: per hit
            parts.append([o.reshape(stop - start, b, *o.shape[1:]) for o in outs])
        return [np.concatenate(p, axis=0) for p in zip(*parts, strict=True)]
    per_hit = [
        sess.run(None, {k: np.ascontiguousarray(a[i]) for k, a in arrays.items()}) for i in range(n)
    ]
    return [np.stack([h[j] for h in per_hit]) for j in range(len(per_hit[0]))]
