"""What a rank profile's ``cand`` function feeds the scorer, read from the expression itself.

A function source of an onnx-model input (``input "cand": cand``) has no declared type, so the
package check infers one: the tensor dimensions the expression produces and, along each dimension
built by ``concat`` or taken from a tensor attribute, which source fills each column (the
attribute's name for a tensor field's cells; for a scalar piece, the attributes it reads, with
``freshness(f)`` / ``age(f)`` reading ``f``). :func:`infer` walks the parsed expression (the
engine's parser) through function references; anything it does not follow gives ``None``
(unchecked), never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass

from vespa_app.engine.schema import RankProfile, Schema
from vespa_app.engine.search.expression import (
    Binary,
    Call,
    ExpressionError,
    Feature,
    If,
    Literal,
    Num,
    Ref,
    TensorFn,
    Unary,
    parse_expression,
)

# cand feature name (trainer.ranking.features.CAND_FEATURES) -> the attribute its column reads.
CAND_SOURCES = {
    "price": "price",
    "margin": "margin",
    "popularity": "popularity",
    "freshness": "created_at",
    # cand codes (RankerConfig.cand_codes): integer attributes written by the feeder
    "seller": "seller_idx",
    "category": "category_idx",
}
MAX_DEPTH = 32


@dataclass(frozen=True)
class Shape:
    """Dimensions (name -> size; empty = a scalar), column sources per dimension where known,
    and the attributes a scalar reads."""

    dims: dict[str, int]
    columns: dict[str, tuple[str, ...]]
    reads: frozenset[str] = frozenset()

    def label(self) -> str:
        return "+".join(sorted(self.reads)) or "constant"


def expected_columns(
    embedding_dim: int, cand_features: list[str], cand_codes: list[str] = ()
) -> tuple[str, ...]:
    """The cand columns a ranker was trained on: the embedding, then its feature columns, then
    its code columns."""
    extra = [*cand_features, *cand_codes]
    return ("embedding",) * embedding_dim + tuple(CAND_SOURCES.get(f, f) for f in extra)


def describe(columns: tuple[str, ...]) -> str:
    """``embedding[128], price, margin`` (runs of one source shown with their length)."""
    parts: list[str] = []
    i = 0
    while i < len(columns):
        j = i
        while j < len(columns) and columns[j] == columns[i]:
            j += 1
        parts.append(columns[i] if j - i == 1 else f"{columns[i]}[{j - i}]")
        i = j
    return ", ".join(parts)


def infer(text: str, schema: Schema, profile: RankProfile, depth: int = 0) -> Shape | None:
    """The shape of expression ``text`` in ``profile``, or None when it cannot be told."""
    if depth > MAX_DEPTH:
        return None
    try:
        node = parse_expression(text)
    except ExpressionError:
        return None
    return _node(node, schema, profile, depth)


def _scalar(reads=frozenset()) -> Shape:
    return Shape({}, {}, frozenset(reads))


def _node(node, schema: Schema, profile: RankProfile, depth: int) -> Shape | None:
    walk = lambda n: _node(n, schema, profile, depth)  # noqa: E731
    if isinstance(node, Num):
        return _scalar()
    if isinstance(node, Literal):
        dims = {d.name: d.size for d in node.tensor.type.dims}
        return Shape(dims, {}) if all(dims.values()) else None
    if isinstance(node, Unary):
        return walk(node.arg)
    if isinstance(node, Call):
        return _join([walk(a) for a in node.args])
    if isinstance(node, Binary):
        return _join([walk(node.left), walk(node.right)])
    if isinstance(node, If):
        cond, then, other = walk(node.cond), walk(node.then), walk(node.other)
        if cond is None or then is None or other is None or then.dims != other.dims:
            return None
        if then.dims:
            return then if then.columns == other.columns else Shape(then.dims, {})
        return _scalar(cond.reads | then.reads | other.reads)
    if isinstance(node, Ref):
        function = profile.functions.get(node.name)
        if function is None or function.args:
            return None
        return infer(function.expression, schema, profile, depth + 1)
    if isinstance(node, Feature):
        return _feature(node, schema, profile)
    if isinstance(node, TensorFn):
        return _tensor_fn(node, walk)
    return None


def _feature(node: Feature, schema: Schema, profile: RankProfile) -> Shape | None:
    if node.output is not None:
        return None
    if node.name == "attribute" and len(node.args) == 1:
        field = schema.fields.get(node.args[0])
        if field is None:
            return None
        tensor = field.type.tensor
        if tensor is None:
            return _scalar({node.args[0]})
        if not all(d.size for d in tensor.dims):
            return None
        return Shape(
            {d.name: d.size for d in tensor.dims},
            {d.name: (node.args[0],) * d.size for d in tensor.dims},
        )
    if node.name in ("freshness", "age") and len(node.args) == 1:
        return _scalar({node.args[0]})
    if node.name == "query" and len(node.args) == 1:
        declared = profile.inputs.get(node.args[0])
        if declared is None or declared.type is None:
            return _scalar()
        dims = {d.name: d.size for d in declared.type.dims}
        return Shape(dims, {}) if all(dims.values()) else None
    if node.name in ("closeness", "distance", "now", "bm25", "nativeRank"):
        return _scalar()
    return None


def _join(shapes: list[Shape | None]) -> Shape | None:
    if any(s is None for s in shapes):
        return None
    dims: dict[str, int] = {}
    columns: dict[str, tuple[str, ...]] = {}
    reads: frozenset[str] = frozenset()
    for shape in shapes:
        for name, size in shape.dims.items():
            if dims.setdefault(name, size) != size:
                return None
        for name, cols in shape.columns.items():
            columns.setdefault(name, cols)
        if not shape.dims:
            reads |= shape.reads
    return Shape(dims, columns, reads if not dims else frozenset())


def _tensor_fn(node: TensorFn, walk) -> Shape | None:
    name, args = node.name, node.args
    if name == "rename":
        shape = walk(args[0])
        old, new = args[1], args[2]
        if shape is None or len(old) != len(new) or any(o not in shape.dims for o in old):
            return None
        mapping = dict(zip(old, new, strict=True))
        return Shape(
            {mapping.get(d, d): s for d, s in shape.dims.items()},
            {mapping.get(d, d): c for d, c in shape.columns.items()},
        )
    if name == "concat":
        a, b, dim = walk(args[0]), walk(args[1]), args[2]
        if a is None or b is None:
            return None
        parts = []
        for shape in (a, b):
            size = shape.dims.get(dim, 1)
            cols = shape.columns.get(dim) or (
                (shape.label(),) if dim not in shape.dims and not shape.dims else None
            )
            parts.append((size, cols))
        others = _join([Shape({d: s for d, s in x.dims.items() if d != dim}, {}) for x in (a, b)])
        if others is None:
            return None
        dims = {**others.dims, dim: parts[0][0] + parts[1][0]}
        columns = {}
        if parts[0][1] is not None and parts[1][1] is not None:
            columns[dim] = parts[0][1] + parts[1][1]
        return Shape(dims, columns)
    if name in ("cell_cast", "l2_normalize", "map"):
        return walk(args[0])
    if name == "join":
        return _join([walk(args[0]), walk(args[1])])
    if name == "reduce":
        shape = walk(args[0])
        if shape is None:
            return None
        drop = set(args[2:]) or set(shape.dims)
        return Shape({d: s for d, s in shape.dims.items() if d not in drop}, {})
    return None
