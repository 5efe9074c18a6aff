"""Parser for Vespa ranking expressions.

Reference: docs.vespa.ai/en/reference/ranking/ranking-expressions.html.

Produces a small AST; `ranking.py` compiles it against a rank profile. Operator precedence
(lowest first): `||`, `&&`, comparisons, `+ -`, `* / %`, `^`, unary `- !`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vespa_app.engine.schema import TypeSyntaxError
from vespa_app.engine.search.lexer import Token, lex
from vespa_app.engine.search.tensors import AGGREGATORS, Tensor, TensorError, parse_tensor_literal


class ExpressionError(ValueError):
    """A ranking expression that does not parse, or uses a construct outside the subset."""

    def __init__(self, message: str, unsupported: bool = False):
        super().__init__(message)
        self.unsupported = unsupported


# -- AST ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Num:
    value: float


@dataclass(frozen=True)
class Literal:
    tensor: Tensor


@dataclass(frozen=True)
class Unary:
    op: str  # "-" or "!"
    arg: object


@dataclass(frozen=True)
class Binary:
    op: str
    left: object
    right: object


@dataclass(frozen=True)
class If:
    cond: object
    then: object
    other: object


@dataclass(frozen=True)
class Call:
    """A built-in math function on scalars (elementwise on tensors)."""

    name: str
    args: tuple


@dataclass(frozen=True)
class Feature:
    """A rank feature: `name(args).output`; args are raw words (`field`, `embedding`)."""

    name: str
    args: tuple[str, ...]
    output: str | None

    @property
    def canonical(self) -> str:
        text = self.name + (f"({','.join(self.args)})" if self.args else "")
        return text + (f".{self.output}" if self.output else "")


@dataclass(frozen=True)
class Ref:
    """A bare name or a call with arguments: a profile function, a lambda variable, or a
    feature without arguments (`now`, `firstPhase`), resolved at compile time."""

    name: str
    args: tuple | None  # None = written without parentheses


@dataclass(frozen=True)
class Lambda:
    params: tuple[str, ...]
    body: object


@dataclass(frozen=True)
class TensorFn:
    """Tensor functions: reduce, rename, map, join, concat, cell_cast, l2_normalize,
    cosine_similarity, euclidean_distance, normalizers (global-phase only)."""

    name: str
    args: tuple  # expressions and, where the function wants them, words / Lambda


@dataclass(frozen=True)
class Slice:
    arg: object
    address: tuple[tuple[str | None, object], ...]  # (dimension or None, label text or expr)


MATH1 = {
    "exp", "log", "log10", "sqrt", "abs", "sigmoid", "tanh", "cos", "sin", "tan", "acos", "asin",
    "atan", "cosh", "sinh", "floor", "ceil", "isNan", "relu", "fabs", "square", "erf", "elu",
}  # fmt: skip
MATH2 = {"pow", "min", "max", "fmod", "atan2", "ldexp", "bit", "hamming"}
FEATURES = {
    "attribute", "query", "constant", "closeness", "distance", "now", "age", "freshness",
    "firstPhase", "secondPhase", "onnx", "onnxModel", "bm25",
}  # fmt: skip
NORMALIZERS = {"normalize_linear", "reciprocal_rank", "reciprocal_rank_fusion"}
TENSOR_FNS = {
    "reduce", "rename", "map", "join", "concat", "cell_cast", "l2_normalize", "cosine_similarity",
    "euclidean_distance", "merge", "reduce_join",
} | NORMALIZERS  # fmt: skip
UNSUPPORTED_FEATURES = {
    "nativeRank", "nativeFieldMatch", "nativeProximity", "nativeAttributeMatch", "fieldMatch",
    "attributeMatch", "fieldTermMatch", "term", "queryTermCount", "random", "textSimilarity",
    "matches", "matchCount", "elementCompleteness", "elementSimilarity", "closest", "itemRawScore",
    "rawScore", "dotProduct", "tensorFromWeightedSet", "tensorFromLabels", "xgboost", "lightgbm",
    "onnx_vespa", "tokenize", "value", "fieldLength", "fieldInfo", "distanceToPath", "foreach",
    "randomNormal", "globalSequence", "uniqueId", "lcg", "firstPhaseRank", "debugWait",
    "nearestNeighbor",
}  # fmt: skip


# -- tokenizer ----------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
    r"|(?P<name>[A-Za-z_$][A-Za-z0-9_$]*)"
    r"|(?P<str>\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*')"
    r"|(?P<op>==|!=|~=|<=|>=|&&|\|\||[-+*/%^<>!(),.{}\[\]:@]))"
)


def _tokenize(text: str) -> list[Token]:
    return lex(
        text.rstrip(),
        _TOKEN,
        lambda start, pos: ExpressionError(
            f"unexpected character '{text[pos]}' at position {start}"
        ),
    )


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0
        self.lambda_vars: list[set[str]] = []

    def peek(self, k: int = 0) -> tuple[str, str, int]:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def next(self) -> tuple[str, str, int]:
        t = self.toks[self.i]
        self.i += 1
        return t

    def accept(self, value: str) -> bool:
        if self.peek()[1] == value and self.peek()[0] in ("op", "name"):
            self.i += 1
            return True
        return False

    def expect(self, value: str) -> None:
        if not self.accept(value):
            _kind, v, pos = self.peek()
            raise ExpressionError(f"expected '{value}' at position {pos}, found '{v or 'end'}'")

    def word(self) -> str:
        kind, v, pos = self.next()
        if kind not in ("name", "num", "str"):
            raise ExpressionError(f"expected a name at position {pos}, found '{v or 'end'}'")
        return v.strip("\"'") if kind == "str" else v

    def parse(self) -> object:
        e = self.expr()
        if self.peek()[0] != "end":
            raise ExpressionError(f"unexpected '{self.peek()[1]}' at position {self.peek()[2]}")
        return e

    def expr(self) -> object:
        left = self.and_()
        while self.accept("||"):
            left = Binary("||", left, self.and_())
        return left

    def and_(self) -> object:
        left = self.cmp()
        while self.accept("&&"):
            left = Binary("&&", left, self.cmp())
        return left

    def cmp(self) -> object:
        left = self.add()
        while self.peek()[0] == "op" and self.peek()[1] in ("==", "!=", "~=", "<", "<=", ">", ">="):
            op = self.next()[1]
            left = Binary(op, left, self.add())
        return left

    def add(self) -> object:
        left = self.mul()
        while self.peek()[0] == "op" and self.peek()[1] in ("+", "-"):
            op = self.next()[1]
            left = Binary(op, left, self.mul())
        return left

    def mul(self) -> object:
        left = self.pow()
        while self.peek()[0] == "op" and self.peek()[1] in ("*", "/", "%"):
            op = self.next()[1]
            left = Binary(op, left, self.pow())
        return left

    def pow(self) -> object:
        base = self.unary()
        if self.accept("^"):
            return Binary("^", base, self.pow())
        return base

    def unary(self) -> object:
        if self.accept("-"):
            arg = self.unary()
            return Num(-arg.value) if isinstance(arg, Num) else Unary("-", arg)
        if self.accept("!"):
            return Unary("!", self.unary())
        return self.postfix(self.primary())

    def postfix(self, node: object) -> object:
        while self.peek()[0] == "op" and self.peek()[1] == "{":
            self.next()
            node = Slice(node, self.address())
        return node

    def address(self) -> tuple:
        parts: list[tuple[str | None, object]] = []
        if self.accept("}"):
            return ()
        while True:
            if self.peek()[0] in ("name", "num", "str") and self.peek(1)[1] == ":":
                dim = self.word()
                self.expect(":")
                parts.append((dim, self._label_or_expr()))
            else:
                parts.append((None, self._label_or_expr()))
            if self.accept(","):
                continue
            self.expect("}")
            return tuple(parts)

    def _label_or_expr(self) -> object:
        kind, v, _ = self.peek()
        if kind in ("num", "str") or (kind == "name" and self.peek(1)[1] in (",", "}")):
            self.next()
            return v.strip("\"'")
        if self.accept("("):
            e = self.expr()
            self.expect(")")
            return e
        return self.expr()

    def primary(self) -> object:
        kind, v, pos = self.peek()
        if kind == "num":
            self.next()
            return Num(float(v))
        if kind == "str":
            raise ExpressionError(f"string literal at position {pos}", unsupported=True)
        if v == "(":
            self.next()
            e = self.expr()
            self.expect(")")
            return e
        if kind != "name":
            raise ExpressionError(f"unexpected '{v or 'end'}' at position {pos}")
        self.next()
        if v == "tensor":
            return self.tensor_literal(pos)
        if v == "if":
            self.expect("(")
            cond = self.expr()
            self.expect(",")
            then = self.expr()
            self.expect(",")
            other = self.expr()
            if self.accept(","):
                self.expr()  # the optional true-probability argument
            self.expect(")")
            return If(cond, then, other)
        if v in ("true", "false"):
            return Num(1.0 if v == "true" else 0.0)
        if v in ("f", "function") and self.peek()[1] == "(" and self._is_lambda():
            return self.lambda_()
        if any(v in s for s in self.lambda_vars):
            return Ref(v, None)
        if v in UNSUPPORTED_FEATURES:
            raise ExpressionError(v, unsupported=True)
        if v in FEATURES:
            return self.feature(v)
        if v in TENSOR_FNS:
            return self.tensor_fn(v)
        if v in ("sum", "avg", "count", "prod", "median") and self.peek()[1] == "(":
            return self.reduce_shorthand(v)
        if (v in MATH1 or v in MATH2) and self.peek()[1] == "(":
            args = self.call_args()
            if (
                v in ("min", "max")
                and len(args) == 2
                and isinstance(args[1], Ref)
                and args[1].args is None
            ):
                # max(t, dim) is a reduce when the second argument is a dimension name
                return TensorFn("reduce", (args[0], v, args[1].name))
            want = 1 if v in MATH1 else 2
            if len(args) != want:
                raise ExpressionError(f"{v}() takes {want} argument(s), got {len(args)}")
            return Call(v, tuple(args))
        if self.peek()[1] == "(":
            return Ref(v, tuple(self.call_args()))
        return Ref(v, None)

    def _is_lambda(self) -> bool:
        j = self.i + 1
        while self.toks[j][0] == "name" or self.toks[j][1] == ",":
            j += 1
        return self.toks[j][1] == ")" and self.toks[j + 1][1] == "("

    def lambda_(self) -> Lambda:
        self.expect("(")
        params: list[str] = []
        while not self.accept(")"):
            params.append(self.word())
            self.accept(",")
        self.expect("(")
        self.lambda_vars.append(set(params))
        body = self.expr()
        self.lambda_vars.pop()
        self.expect(")")
        return Lambda(tuple(params), body)

    def call_args(self) -> list:
        self.expect("(")
        args: list = []
        if self.accept(")"):
            return args
        while True:
            args.append(self.expr())
            if self.accept(")"):
                return args
            self.expect(",")

    def feature(self, name: str) -> object:
        args: list[str] = []
        if self.accept("("):
            depth = 0
            cur = ""
            while True:
                kind, v, _pos = self.next()
                if kind == "end":
                    raise ExpressionError(f"unterminated {name}(")
                if v == "(":
                    depth += 1
                elif v == ")":
                    if depth == 0:
                        break
                    depth -= 1
                if v == "," and depth == 0:
                    args.append(cur)
                    cur = ""
                else:
                    cur += v.strip('"') if kind == "str" else v
            args.append(cur)
            args = [a for a in args if a != ""] if args == [""] else args
        output = None
        if self.peek()[1] == "." and self.peek(1)[0] == "name":
            self.next()
            output = self.next()[1]
            while self.peek()[1] == "." and self.peek(1)[0] in ("name", "num"):
                self.next()
                output += "." + self.next()[1]
        return Feature(name, tuple(args), output)

    def tensor_fn(self, name: str) -> TensorFn:
        self.expect("(")
        if name == "reduce":
            t = self.expr()
            self.expect(",")
            agg = self.word()
            if agg not in AGGREGATORS:
                raise ExpressionError(f"unknown aggregator '{agg}'")
            dims = []
            while self.accept(","):
                dims.append(self.word())
            self.expect(")")
            return TensorFn("reduce", (t, agg, *dims))
        if name == "rename":
            t = self.expr()
            self.expect(",")
            old = self.dim_list()
            self.expect(",")
            new = self.dim_list()
            self.expect(")")
            return TensorFn("rename", (t, old, new))
        if name in ("map", "join"):
            args = [self.expr()]
            if name == "join":
                self.expect(",")
                args.append(self.expr())
            self.expect(",")
            _kind, v, pos = self.next()
            if v not in ("f", "function"):
                raise ExpressionError(f"{name}: expected a lambda f(x)(...) at position {pos}")
            lam = self.lambda_()
            self.expect(")")
            return TensorFn(name, (*args, lam))
        if name in ("concat", "cosine_similarity", "euclidean_distance"):
            a = self.expr()
            self.expect(",")
            b = self.expr()
            self.expect(",")
            dim = self.word()
            self.expect(")")
            return TensorFn(name, (a, b, dim))
        if name in ("l2_normalize", "cell_cast"):
            t = self.expr()
            self.expect(",")
            w = self.word()
            self.expect(")")
            return TensorFn(name, (t, w))
        if name in NORMALIZERS:
            args = []
            while True:
                args.append(self.expr())
                if self.accept(")"):
                    break
                self.expect(",")
            return TensorFn(name, tuple(args))
        raise ExpressionError(name, unsupported=True)

    def dim_list(self) -> tuple[str, ...]:
        if self.accept("("):
            dims = [self.word()]
            while self.accept(","):
                dims.append(self.word())
            self.expect(")")
            return tuple(dims)
        return (self.word(),)

    def reduce_shorthand(self, agg: str) -> TensorFn:
        self.expect("(")
        t = self.expr()
        dims = []
        while self.accept(","):
            dims.append(self.word())
        self.expect(")")
        return TensorFn("reduce", (t, agg, *dims))

    def tensor_literal(self, pos: int) -> Literal:
        # Find the end of `tensor<...>(...):` then of the value, by bracket matching on text.
        text = self.text
        m = re.compile(r"tensor\s*(?:<\s*\w+\s*>)?\s*\([^)]*\)\s*:\s*", re.S).match(text, pos)
        if not m:
            raise ExpressionError(f"bad tensor literal at position {pos}")
        end = _matching_end(text, m.end())
        try:
            lit = parse_tensor_literal(text[pos:end], None)
        except (TensorError, TypeSyntaxError) as e:
            raise ExpressionError(f"bad tensor literal: {e}") from None
        while self.peek()[0] != "end" and self.peek()[2] < end:
            self.next()
        return Literal(lit)


def _matching_end(text: str, start: int) -> int:
    opener = text[start] if start < len(text) else ""
    if opener not in "[{":
        raise ExpressionError(f"expected '[' or '{{' at position {start}")
    depth = 0
    for i in range(start, len(text)):
        if text[i] in "[{":
            depth += 1
        elif text[i] in "]}":
            depth -= 1
            if depth == 0:
                return i + 1
    raise ExpressionError("unterminated tensor literal")


def parse_expression(text: str) -> object:
    """Parse a ranking expression; raises ExpressionError."""
    return _Parser(text).parse()
