"""Compile rank-profile expressions into Python closures and evaluate them per hit.

Spec §6.4/§6.5 (docs.vespa.ai/en/reference/ranking/rank-features.html, ranking/onnx.html).
A compiled node is `fn(ctx) -> float | Tensor`. Nodes whose value depends on the query only
(query inputs, constants, `now`, ONNX models fed by those) are evaluated once per query and
cached, which is what makes a query-only history encoder run once per query.

Each phase and feature list also gets a batch function (batch.py) that evaluates the same
expression over all hits of the phase in numpy, with per-hit ONNX models run once per phase;
these per-hit closures stay the reference and the fallback.
"""

from __future__ import annotations

import itertools
import math
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from vespa_app.engine.schema import Constant, OnnxModel, RankProfile, Schema, TensorDim, TensorType
from vespa_app.engine.search import tensors as T
from vespa_app.engine.search.batch import BatchCompiler, BFn
from vespa_app.engine.search.expression import (
    Binary,
    Call,
    ExpressionError,
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
    from vespa_app.engine.search.index import Segment

DEFAULT_MAX_AGE = 7776000.0
# VESPA_ENGINE_BATCH=0 turns batch evaluation off (per-hit only), to compare the two paths.
BATCH_EVALUATION = os.environ.get("VESPA_ENGINE_BATCH", "1") != "0"
MAX_DISTANCE = 1.7976931348623157e308


class EvalError(RuntimeError):
    """A ranking expression failed on a value (e.g. tensor type mismatch at run time)."""


@dataclass
class QueryState:
    """Everything a compiled expression reads that is fixed for one query and one schema."""

    segment: Segment
    inputs: dict[str, float | Tensor]
    now: float
    # (kind, name) -> array over matched positions; kind is "field" or "label"
    closeness: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    distance: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    bm25: dict[str, np.ndarray] = field(default_factory=dict)
    first_phase: np.ndarray | None = None
    second_phase: np.ndarray | None = None
    normalized: dict[int, np.ndarray] = field(default_factory=dict)
    qcache: dict[int, object] = field(default_factory=dict)
    onnx_runs: Counter = field(default_factory=Counter)


class Ctx:
    """Per-hit evaluation context; one object reused across hits."""

    __slots__ = ("cache", "pos", "qs", "row", "win")

    def __init__(self, qs: QueryState):
        self.qs = qs
        self.pos = 0
        self.row = 0
        self.win = 0  # position inside the global-phase window (normalizers)
        self.cache: dict[int, object] = {}

    def at(self, pos: int, row: int, win: int = 0) -> Ctx:
        self.pos = pos
        self.row = row
        self.win = win
        self.cache.clear()
        return self


Fn = Callable[[Ctx], object]


@dataclass
class Normalizer:
    slot: int
    kind: str  # normalize_linear | reciprocal_rank
    arg: Fn
    k: float = 60.0


@dataclass
class CompiledProfile:
    profile: RankProfile
    first_phase: Fn | None
    second_phase: Fn | None
    global_phase: Fn | None
    normalizers: list[Normalizer]
    match_features: list[tuple[str, Fn]]
    summary_features: list[tuple[str, Fn]]
    inputs: dict[str, TensorType | None]
    uses_bm25: set[str]
    # batch versions (batch.py); None where the expression has to be evaluated per hit
    first_phase_batch: BFn | None = None
    second_phase_batch: BFn | None = None
    global_phase_batch: BFn | None = None
    match_features_batch: list[tuple[str, BFn]] | None = None
    summary_features_batch: list[tuple[str, BFn]] | None = None


class OnnxRunner:
    """One onnxruntime session per model file, shared by every profile that names it."""

    def __init__(self) -> None:
        self._sessions: dict[str, object] = {}

    def session(self, model: OnnxModel):
        import onnxruntime as ort

        key = str(model.path)
        if key not in self._sessions:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            self._sessions[key] = ort.InferenceSession(
                key, sess_options=opts, providers=["CPUExecutionProvider"]
            )
        return self._sessions[key]


_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(bool)": np.bool_,
}


def _to_scalar(v: object) -> float:
    try:
        return T.scalar_of(v)  # type: ignore[arg-type]
    except TensorError as e:
        raise EvalError(str(e)) from None


def _truth(v: object) -> bool:
    return _to_scalar(v) != 0.0


_BINOPS: dict[str, Callable] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: (
        np.divide(a, b) if isinstance(a, np.ndarray) or isinstance(b, np.ndarray) else _div(a, b)
    ),
    "%": lambda a, b: np.fmod(a, b),
    "^": lambda a, b: np.power(a, b),
    "==": lambda a, b: np.asarray(a == b, dtype=np.float64),
    "!=": lambda a, b: np.asarray(a != b, dtype=np.float64),
    "~=": lambda a, b: np.asarray(
        np.abs(a - b) <= 1e-6 * np.maximum(np.abs(a), np.abs(b)), dtype=np.float64
    ),
    "<": lambda a, b: np.asarray(a < b, dtype=np.float64),
    "<=": lambda a, b: np.asarray(a <= b, dtype=np.float64),
    ">": lambda a, b: np.asarray(a > b, dtype=np.float64),
    ">=": lambda a, b: np.asarray(a >= b, dtype=np.float64),
    "&&": lambda a, b: np.asarray((a != 0) & (b != 0), dtype=np.float64),
    "||": lambda a, b: np.asarray((a != 0) | (b != 0), dtype=np.float64),
}


def _div(a: float, b: float) -> float:
    if b == 0:
        if a == 0 or math.isnan(a):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


_MATH: dict[str, Callable] = {
    "exp": np.exp, "log": np.log, "log10": np.log10, "sqrt": np.sqrt, "abs": np.abs, "fabs": np.abs,
    "sigmoid": _sigmoid, "tanh": np.tanh, "cos": np.cos, "sin": np.sin, "tan": np.tan,
    "acos": np.arccos, "asin": np.arcsin, "atan": np.arctan, "cosh": np.cosh, "sinh": np.sinh,
    "floor": np.floor, "ceil": np.ceil, "relu": lambda x: np.maximum(x, 0.0),
    "isNan": lambda x: np.asarray(np.isnan(x), dtype=np.float64), "square": np.square,
    "elu": lambda x: np.where(x < 0, np.exp(x) - 1, x),
    "erf": np.vectorize(math.erf, otypes=[np.float64]),
    "pow": np.power, "min": np.minimum, "max": np.maximum, "fmod": np.fmod, "atan2": np.arctan2,
    "ldexp": lambda a, b: a * np.power(2.0, np.trunc(b)),
}  # fmt: skip


def _apply1(fn: Callable, v: object) -> object:
    with np.errstate(all="ignore"):
        return T.map_tensor(v, fn)  # type: ignore[arg-type]


def _apply2(fn: Callable, a: object, b: object) -> object:
    with np.errstate(all="ignore"):
        try:
            return T.join(a, b, fn)  # type: ignore[arg-type]
        except TensorError as e:
            raise EvalError(str(e)) from None


class ProfileCompiler:
    """Compiles one rank profile of one schema."""

    def __init__(self, schema: Schema, profile: RankProfile, onnx: OnnxRunner):
        self.schema = schema
        self.profile = profile
        self.onnx = onnx
        self.normalizers: list[Normalizer] = []
        self.uses_bm25: set[str] = set()
        self._slots = itertools.count()
        self._stack: list[str] = []
        self._onnx_fns: dict[str, tuple[Fn, bool]] = {}
        self._constants: dict[str, float | Tensor] = {}
        self._in_global = False

    # -- entry points ----------------------------------------------------------------------

    def compile_profile(self) -> CompiledProfile:
        p = self.profile
        first = self.compile_text(p.first_phase.expression) if p.first_phase.expression else None
        second = self.compile_text(p.second_phase.expression) if p.second_phase.expression else None
        self._in_global = True
        glob = self.compile_text(p.global_phase.expression) if p.global_phase.expression else None
        self._in_global = False
        match = [(n.replace(" ", ""), self.compile_text(n)) for n in p.match_features]
        summary = [(n.replace(" ", ""), self.compile_text(n)) for n in p.summary_features]
        bc = BatchCompiler(self)

        def batch(text: str | None) -> BFn | None:
            return bc.compile_text(text) if text and BATCH_EVALUATION else None

        def batch_list(names: list[str]) -> list[tuple[str, BFn]] | None:
            fns = [(n.replace(" ", ""), batch(n)) for n in names]
            return None if any(f is None for _, f in fns) else fns  # type: ignore[return-value]

        return CompiledProfile(
            profile=p,
            first_phase=first,
            second_phase=second,
            global_phase=glob,
            normalizers=self.normalizers,
            match_features=match,
            summary_features=summary,
            inputs={name: inp.type for name, inp in p.inputs.items()},
            uses_bm25=self.uses_bm25,
            first_phase_batch=batch(p.first_phase.expression),
            second_phase_batch=batch(p.second_phase.expression),
            global_phase_batch=batch(p.global_phase.expression),
            match_features_batch=batch_list(p.match_features),
            summary_features_batch=batch_list(p.summary_features),
        )

    def compile_text(self, text: str) -> Fn:
        fn, _ = self.compile(parse_expression(text), {})
        return fn

    # -- compilation -----------------------------------------------------------------------

    def compile(self, node: object, env: dict[str, tuple[Fn, bool]]) -> tuple[Fn, bool]:
        """Returns (fn, doc_dependent)."""
        fn, dep = self._compile(node, env)
        if dep or isinstance(node, (Num, Literal)):
            return fn, dep
        key = next(self._slots)

        def cached(ctx: Ctx, fn=fn, key=key):
            qc = ctx.qs.qcache
            if key in qc:
                return qc[key]
            v = fn(ctx)
            qc[key] = v
            return v

        return cached, False

    def _compile(self, node: object, env: dict[str, tuple[Fn, bool]]) -> tuple[Fn, bool]:
        if isinstance(node, Num):
            v = node.value
            return (lambda ctx: v), False
        if isinstance(node, Literal):
            t = node.tensor
            return (lambda ctx: t), False
        if isinstance(node, Unary):
            f, dep = self.compile(node.arg, env)
            if node.op == "-":
                return (lambda ctx: _apply1(np.negative, f(ctx))), dep
            return (
                lambda ctx: _apply1(lambda x: np.asarray(x == 0, dtype=np.float64), f(ctx))
            ), dep
        if isinstance(node, Binary):
            a, da = self.compile(node.left, env)
            b, db = self.compile(node.right, env)
            op = _BINOPS[node.op]
            if node.op == "&&":
                return (lambda ctx: 1.0 if _truth(a(ctx)) and _truth(b(ctx)) else 0.0), da or db
            if node.op == "||":
                return (lambda ctx: 1.0 if _truth(a(ctx)) or _truth(b(ctx)) else 0.0), da or db
            return (lambda ctx: _apply2(op, a(ctx), b(ctx))), da or db
        if isinstance(node, If):
            c, dc = self.compile(node.cond, env)
            t, dt = self.compile(node.then, env)
            o, do = self.compile(node.other, env)
            return (lambda ctx: t(ctx) if _truth(c(ctx)) else o(ctx)), dc or dt or do
        if isinstance(node, Call):
            fns = [self.compile(a, env) for a in node.args]
            mfn = _MATH.get(node.name)
            if mfn is None:
                raise ExpressionError(f"{node.name}()", unsupported=True)
            dep = any(d for _, d in fns)
            if len(fns) == 1:
                f0 = fns[0][0]
                return (lambda ctx: _apply1(mfn, f0(ctx))), dep
            f0, f1 = fns[0][0], fns[1][0]
            return (lambda ctx: _apply2(mfn, f0(ctx), f1(ctx))), dep
        if isinstance(node, Slice):
            return self._slice(node, env)
        if isinstance(node, TensorFn):
            return self._tensor_fn(node, env)
        if isinstance(node, Feature):
            return self._feature(node, env)
        if isinstance(node, Ref):
            return self._ref(node, env)
        if isinstance(node, Lambda):
            raise ExpressionError("a lambda outside map/join")
        raise ExpressionError(f"cannot compile {node!r}")

    def _slice(self, node: Slice, env) -> tuple[Fn, bool]:
        base, dep = self.compile(node.arg, env)
        parts: list[tuple[str | None, object]] = []
        for dim, label in node.address:
            if isinstance(label, str):
                parts.append((dim, label))
            else:
                f, d = self.compile(label, env)
                dep = dep or d
                parts.append((dim, f))

        def run(ctx: Ctx):
            t = base(ctx)
            if not isinstance(t, Tensor):
                raise EvalError("cannot slice a scalar")
            addr: dict[str, str] = {}
            for dim, lab in parts:
                if dim is None:
                    if len(t.type.dims) != 1:
                        raise EvalError(f"slice without dimension names on {t.type.spec}")
                    dim = t.type.dims[0].name
                if callable(lab):
                    val = _to_scalar(lab(ctx))
                    addr[dim] = str(int(val)) if float(val).is_integer() else str(val)
                else:
                    addr[dim] = lab
            try:
                return T.slice_tensor(t, addr)
            except TensorError as e:
                raise EvalError(str(e)) from None

        return run, dep

    def _tensor_fn(self, node: TensorFn, env) -> tuple[Fn, bool]:
        name, args = node.name, node.args
        if name in ("normalize_linear", "reciprocal_rank", "reciprocal_rank_fusion"):
            return self._normalizer(node, env)
        if name == "reduce":
            f, dep = self.compile(args[0], env)
            agg, dims = args[1], tuple(args[2:])
            return (lambda ctx: self._guard(T.reduce, f(ctx), agg, dims)), dep
        if name == "rename":
            f, dep = self.compile(args[0], env)
            old, new = args[1], args[2]

            def ren(ctx):
                t = f(ctx)
                if not isinstance(t, Tensor):
                    raise EvalError("rename of a scalar")
                return self._guard(T.rename, t, old, new)

            return ren, dep
        if name == "map":
            f, dep = self.compile(args[0], env)
            lam = _lambda_fn(args[1])
            return (lambda ctx: _apply1(lam, f(ctx))), dep
        if name == "join":
            a, da = self.compile(args[0], env)
            b, db = self.compile(args[1], env)
            lam = _lambda_fn(args[2])
            return (lambda ctx: _apply2(lam, a(ctx), b(ctx))), da or db
        if name == "concat":
            a, da = self.compile(args[0], env)
            b, db = self.compile(args[1], env)
            dim = args[2]
            return (lambda ctx: self._guard(T.concat, a(ctx), b(ctx), dim)), da or db
        if name == "cell_cast":
            f, dep = self.compile(args[0], env)
            ct = args[1]
            if ct not in ("float", "double", "bfloat16", "int8"):
                raise ExpressionError(f"cell_cast to {ct}")
            return (lambda ctx: T.cell_cast(f(ctx), ct)), dep
        if name == "l2_normalize":
            f, dep = self.compile(args[0], env)
            dim = args[1]

            def l2n(ctx):
                t = f(ctx)
                norm = _apply1(
                    np.sqrt, self._guard(T.reduce, _apply2(np.multiply, t, t), "sum", (dim,))
                )
                return _apply2(np.divide, t, norm)

            return l2n, dep
        if name in ("cosine_similarity", "euclidean_distance"):
            a, da = self.compile(args[0], env)
            b, db = self.compile(args[1], env)
            dim = args[2]

            def sim(ctx):
                x, y = a(ctx), b(ctx)
                if name == "euclidean_distance":
                    d = _apply2(np.subtract, x, y)
                    return _apply1(
                        np.sqrt, self._guard(T.reduce, _apply2(np.multiply, d, d), "sum", (dim,))
                    )
                dot = self._guard(T.reduce, _apply2(np.multiply, x, y), "sum", (dim,))
                nx = self._guard(T.reduce, _apply2(np.multiply, x, x), "sum", (dim,))
                ny = self._guard(T.reduce, _apply2(np.multiply, y, y), "sum", (dim,))
                return _apply2(np.divide, dot, _apply1(np.sqrt, _apply2(np.multiply, nx, ny)))

            return sim, da or db
        raise ExpressionError(name, unsupported=True)

    @staticmethod
    def _guard(fn, *args):
        try:
            return fn(*args)
        except TensorError as e:
            raise EvalError(str(e)) from None

    def _normalizer(self, node: TensorFn, env) -> tuple[Fn, bool]:
        if not self._in_global:
            raise ExpressionError(f"{node.name} outside global-phase")
        if node.name == "reciprocal_rank_fusion":
            parts = [self._normalizer(TensorFn("reciprocal_rank", (a,)), env)[0] for a in node.args]
            return (lambda ctx: float(sum(_to_scalar(p(ctx)) for p in parts))), True
        arg, _ = self.compile(node.args[0], env)
        k = 60.0
        if node.name == "reciprocal_rank" and len(node.args) > 1:
            if not isinstance(node.args[1], Num):
                raise ExpressionError("reciprocal_rank: k must be a number")
            k = node.args[1].value
        slot = len(self.normalizers)
        self.normalizers.append(Normalizer(slot, node.name, arg, k))
        return (lambda ctx: float(ctx.qs.normalized[slot][ctx.win])), True

    # -- features --------------------------------------------------------------------------

    def _feature(self, node: Feature, env) -> tuple[Fn, bool]:
        name, args, output = node.name, node.args, node.output
        seg_schema = self.schema
        if name == "attribute":
            self._nargs(node, 1)
            fname = args[0]
            f = seg_schema.fields.get(fname)
            if f is None or not f.is_attribute:
                raise ExpressionError(f"attribute({fname}): no attribute field '{fname}'")
            if f.type.kind == "tensor":
                return (lambda ctx: ctx.qs.segment.tensor_value(fname, ctx.row)), True
            if f.type.kind in ("string", "array"):
                raise ExpressionError(f"attribute({fname}) of type {f.type.spec}", unsupported=True)
            return (lambda ctx: float(ctx.qs.segment.numeric[fname][ctx.row])), True
        if name == "query":
            self._nargs(node, 1)
            qname = args[0]
            return (lambda ctx: ctx.qs.inputs.get(qname, 0.0)), False
        if name == "constant":
            self._nargs(node, 1)
            value = self._constant(args[0])
            return (lambda ctx: value), False
        if name in ("closeness", "distance"):
            if len(args) == 1:
                args = ("field", args[0])
            if len(args) != 2 or args[0] not in ("field", "label"):
                raise ExpressionError(f"{node.canonical}", unsupported=True)
            key = (args[0], args[1])
            if args[0] == "field":
                f = seg_schema.fields.get(args[1])
                if f is None or f.type.kind != "tensor":
                    raise ExpressionError(f"{node.canonical}: no tensor field '{args[1]}'")
            if name == "closeness":

                def close(ctx, key=key):
                    arr = ctx.qs.closeness.get(key)
                    return 0.0 if arr is None else float(arr[ctx.pos])

                return close, True

            def dist(ctx, key=key):
                arr = ctx.qs.distance.get(key)
                return MAX_DISTANCE if arr is None else float(arr[ctx.pos])

            return dist, True
        if name == "now":
            return (lambda ctx: ctx.qs.now), False
        if name in ("age", "freshness"):
            self._nargs(node, 1)
            fname = args[0]
            f = seg_schema.fields.get(fname)
            if f is None or not f.is_attribute or not f.type.is_numeric:
                raise ExpressionError(f"{name}({fname}): no numeric attribute '{fname}'")
            if output is not None:
                raise ExpressionError(node.canonical, unsupported=True)
            if name == "age":
                return (
                    lambda ctx: ctx.qs.now - float(ctx.qs.segment.numeric[fname][ctx.row])
                ), True
            max_age = float(
                self.profile.rank_properties.get(f"freshness({fname}).maxAge", DEFAULT_MAX_AGE)
            )

            def fresh(ctx):
                age = ctx.qs.now - float(ctx.qs.segment.numeric[fname][ctx.row])
                return max(1.0 - age / max_age, 0.0)

            return fresh, True
        if name == "firstPhase":
            return (lambda ctx: float(ctx.qs.first_phase[ctx.pos])), True  # type: ignore[index]
        if name == "secondPhase":
            return (lambda ctx: float(ctx.qs.second_phase[ctx.pos])), True  # type: ignore[index]
        if name == "bm25":
            self._nargs(node, 1)
            fname = args[0]
            f = seg_schema.fields.get(fname)
            if f is None or not f.is_text_index:
                raise ExpressionError(f"bm25({fname}): no index field '{fname}'")
            self.uses_bm25.add(fname)

            def bm25(ctx):
                arr = ctx.qs.bm25.get(fname)
                return 0.0 if arr is None else float(arr[ctx.pos])

            return bm25, True
        if name in ("onnx", "onnxModel"):
            self._nargs(node, 1)
            return self._onnx(args[0], output, env)
        raise ExpressionError(node.canonical, unsupported=True)

    def _nargs(self, node: Feature, n: int) -> None:
        if len(node.args) != n:
            raise ExpressionError(f"{node.canonical}: expected {n} argument(s)")

    def _constant(self, name: str) -> float | Tensor:
        if name in self._constants:
            return self._constants[name]
        c: Constant | None = self.profile.constants.get(name) or self.schema.constants.get(name)
        if c is None:
            raise ExpressionError(f"constant({name}): no such constant")
        value: float | Tensor
        if c.type is None:
            value = float(c.value)
        else:
            try:
                value = T.parse_tensor_literal(_constant_text(c), c.type)
            except TensorError as e:
                raise ExpressionError(f"constant({name}): {e}") from None
        self._constants[name] = value
        return value

    def _onnx(self, model_name: str, output: str | None, env) -> tuple[Fn, bool]:
        model = self.profile.onnx_models.get(model_name) or self.schema.onnx_models.get(model_name)
        if model is None:
            raise ExpressionError(f"onnx({model_name}): no onnx-model '{model_name}'")
        out_name = None
        sub = None
        if output:
            head, _, sub = output.partition(".")
            sub = sub or None
            aliases = {alias: name for name, alias in model.outputs}
            out_name = aliases.get(head, head)
        run, dep = self._onnx_model(model)
        sess = self.onnx.session(model)
        names = [o.name for o in sess.get_outputs()]
        if out_name is None:
            out_name = model.outputs[0][0] if model.outputs else names[0]
        if out_name not in names:
            raise ExpressionError(
                f"onnx({model_name}).{output}: the model has no output '{out_name}'"
            )
        if sub is not None:
            raise ExpressionError(f"onnx({model_name}).{output}", unsupported=True)
        return (lambda ctx: run(ctx)[out_name]), dep

    def _onnx_model(self, model: OnnxModel) -> tuple[Fn, bool]:
        if model.name in self._onnx_fns:
            return self._onnx_fns[model.name]
        if model.name in self._stack:
            raise ExpressionError(f"onnx-model '{model.name}' depends on itself")
        self._stack.append(model.name)
        sess = self.onnx.session(model)
        meta = {i.name: i for i in sess.get_inputs()}
        feeds: list[tuple[str, Fn, np.dtype, list]] = []
        dep = False
        for in_name, source in model.inputs:
            f, d = self.compile(parse_expression(source), {})
            dep = dep or d
            info = meta[in_name]
            dtype = _ORT_DTYPES.get(info.type)
            if dtype is None:
                raise ExpressionError(
                    f"onnx-model '{model.name}': input '{in_name}' has type {info.type}"
                )
            feeds.append((in_name, f, dtype, list(info.shape)))
        self._stack.pop()
        mname = model.name

        def run(ctx: Ctx) -> dict[str, Tensor]:
            cache = ctx.cache if dep else ctx.qs.qcache
            key = ("onnx", mname)
            hit = cache.get(key)  # type: ignore[call-overload]
            if hit is not None:
                return hit
            feed = {}
            for in_name, f, dtype, shape in feeds:
                feed[in_name] = _onnx_input(mname, in_name, f(ctx), dtype, shape)
            outs = sess.run(None, feed)
            result = {
                o.name: _onnx_output(v) for o, v in zip(sess.get_outputs(), outs, strict=True)
            }
            ctx.qs.onnx_runs[mname] += 1
            cache[key] = result  # type: ignore[index]
            return result

        self._onnx_fns[model.name] = (run, dep)
        return run, dep

    # -- references ------------------------------------------------------------------------

    def _ref(self, node: Ref, env) -> tuple[Fn, bool]:
        if node.name in env and node.args is None:
            return env[node.name]
        fn = self.profile.functions.get(node.name)
        if fn is None:
            raise ExpressionError(f"unknown function or feature '{node.name}'")
        args = node.args or ()
        if len(args) != len(fn.args):
            raise ExpressionError(
                f"function '{fn.name}' takes {len(fn.args)} argument(s), got {len(args)}"
            )
        if fn.name in self._stack:
            raise ExpressionError(f"function '{fn.name}' calls itself")
        bound = {p: self.compile(a, env) for p, a in zip(fn.args, args, strict=True)}
        self._stack.append(fn.name)
        try:
            body, dep = self.compile(parse_expression(fn.expression), bound)
        finally:
            self._stack.pop()
        if not dep or args:
            return body, dep
        key = next(self._slots)

        def memo(ctx: Ctx, body=body, key=key):
            c = ctx.cache
            if key in c:
                return c[key]
            v = body(ctx)
            c[key] = v
            return v

        return memo, dep


def _constant_text(c: Constant) -> str:
    """Constant files hold Vespa's tensor JSON; inline constants hold a literal."""
    text = c.value.strip()
    if not text.startswith("{") or '"' not in text:
        return text
    import json

    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return text
    if isinstance(data, dict) and "values" in data:
        return json.dumps(data["values"])
    if isinstance(data, dict) and "cells" in data:
        cells = data["cells"]
        if isinstance(cells, dict):
            return json.dumps(cells)
        parts = []
        for cell in cells:
            addr = ",".join(f"{k}:{json.dumps(v)}" for k, v in cell["address"].items())
            parts.append(f"{{{addr}}}:{cell['value']}")
        return "{" + ",".join(parts) + "}"
    return text


def _lambda_fn(lam: Lambda) -> Callable:
    """Elementwise numpy function of a `f(x,y)(...)` lambda."""

    def ev(node, vals: dict[str, object]):
        if isinstance(node, Num):
            return node.value
        if isinstance(node, Ref) and node.args is None and node.name in vals:
            return vals[node.name]
        if isinstance(node, Unary):
            v = ev(node.arg, vals)
            return np.negative(v) if node.op == "-" else np.asarray(v == 0, dtype=np.float64)
        if isinstance(node, Binary):
            return _BINOPS[node.op](ev(node.left, vals), ev(node.right, vals))
        if isinstance(node, Call) and node.name in _MATH:
            return _MATH[node.name](*[ev(a, vals) for a in node.args])
        if isinstance(node, If):
            return np.where(ev(node.cond, vals) != 0, ev(node.then, vals), ev(node.other, vals))
        raise EvalError(f"unsupported construct in lambda: {node!r}")

    params = lam.params

    def fn(*xs):
        return ev(lam.body, dict(zip(params, xs, strict=True)))

    return fn


def _onnx_input(model: str, name: str, v: object, dtype, shape: list) -> np.ndarray:
    """Tensor with dims d0, d1, ... -> numpy array in axis order, cast to the model's type."""
    if isinstance(v, Tensor):
        if v.dense is None:
            raise EvalError(f"onnx({model}) input '{name}': mapped tensors are not supported")
        names = v.dim_names
        order = sorted(range(len(names)), key=lambda i: _axis_of(names[i], model, name))
        arr = np.transpose(v.dense, order)
    else:
        arr = np.asarray(v, dtype=np.float64)
    want = [s if isinstance(s, int) else -1 for s in shape]
    if len(want) != arr.ndim or any(
        w not in (-1, a) for w, a in zip(want, arr.shape, strict=False)
    ):
        raise EvalError(
            f"onnx({model}) input '{name}': shape {list(arr.shape)} given, model wants {shape}"
        )
    return arr.astype(dtype)


def _axis_of(dim: str, model: str, name: str) -> int:
    if not (dim.startswith("d") and dim[1:].isdigit()):
        raise EvalError(f"onnx({model}) input '{name}': dimension '{dim}' is not named d0, d1, ...")
    return int(dim[1:])


def _onnx_output(arr: np.ndarray) -> Tensor:
    arr = np.asarray(arr)
    cell = "double" if arr.dtype == np.float64 else "float"
    dims = tuple(TensorDim(f"d{i}", int(n)) for i, n in enumerate(arr.shape))
    if len(dims) > 10:
        raise EvalError("onnx outputs with more than 10 dimensions are not supported")
    return Tensor.from_dense(TensorType(cell, dims), arr)


def compile_profiles(schema: Schema, onnx: OnnxRunner) -> dict[str, CompiledProfile]:
    """Compile every served profile of a schema (built-in nativeRank `default` is skipped)."""
    out: dict[str, CompiledProfile] = {}
    for name, profile in schema.rank_profiles.items():
        if profile.builtin and name == "default":
            continue
        out[name] = ProfileCompiler(schema, profile, onnx).compile_profile()
    return out
