"""Parser for the YQL subset of spec §5 (docs.vespa.ai/en/reference/querying/yql.html).

Accepts what pyvespa's query builder emits (`in_stock = True`,
`({targetHits:100}nearestNeighbor(...))`,
legacy `[{"targetHits": 10}]` annotations, single quotes, a trailing `;`). Raises `YqlError`
for malformed text and `Unsupported` for constructs outside the subset.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from vespa_app.engine.search.lexer import Token, lex


class YqlError(ValueError):
    """Malformed YQL; rendered as error 4 `Could not create query from YQL: <message>`."""


class Unsupported(ValueError):
    """A construct outside the subset; rendered as `Unsupported by local engine: <construct>`."""


# -- AST ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrueNode:
    value: bool


@dataclass(frozen=True)
class And:
    children: tuple


@dataclass(frozen=True)
class Or:
    children: tuple


@dataclass(frozen=True)
class Not:
    child: object


@dataclass(frozen=True)
class Compare:
    field: str
    op: str  # = < <= > >=
    value: float | bool
    is_long: bool = False


@dataclass(frozen=True)
class Range:
    field: str
    low: float
    high: float


@dataclass(frozen=True)
class Contains:
    field: str
    words: tuple[str, ...]  # one word, or a phrase
    phrase: bool = False
    annotations: dict = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class In:
    field: str
    values: tuple  # literals, or ("@", param) resolved later
    param: str | None = None


@dataclass(frozen=True)
class NearestNeighbor:
    field: str
    query_input: str
    annotations: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def target_hits(self) -> int:
        return int(self.annotations.get("targetHits", self.annotations.get("totalTargetHits", 0)))

    @property
    def label(self) -> str | None:
        return self.annotations.get("label")


@dataclass(frozen=True)
class Rank:
    children: tuple


@dataclass(frozen=True)
class UserQuery:
    annotations: dict = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class UserInput:
    text: str | None  # literal text, or None when read from `param`
    param: str | None
    annotations: dict = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class WeakAnd:
    children: tuple
    annotations: dict = field(default_factory=dict, hash=False, compare=False)


@dataclass
class Query:
    fields: tuple[str, ...] | None  # None = *
    sources: tuple[str, ...] | None  # None = sources *
    where: object
    order_by: list[tuple[str, bool]]  # (field or "[relevance]", descending)
    limit: int | None
    offset: int | None
    timeout_ms: int | None


# -- tokenizer ----------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<num>-?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?[lL]?)
    | (?P<name>[A-Za-z_][A-Za-z0-9_.]*)
    | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<op><=|>=|!=|[=<>!(){}\[\],;:@*|+-])
    )""",
    re.X,
)

SUPPORTED_ANNOTATIONS = {
    "targetHits", "totalTargetHits", "approximate", "hnsw.exploreAdditionalHits",
    "distanceThreshold", "label", "ranked", "filter", "defaultIndex", "grammar",
}  # fmt: skip
UNSUPPORTED_FUNCTIONS = {
    "wand", "near", "onear", "equiv", "text", "fuzzy", "dotProduct", "weightedSet", "sameElement",
    "geoLocation", "predicate", "nonEmpty", "matches", "uri", "substring", "prefix", "suffix",
    "regexp", "phrase", "geoBoundingBox",
}  # fmt: skip
INT32_MAX = 2**31 - 1


def _unquote(text: str) -> str:
    body = text[1:-1]
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


def _tokenize(text: str) -> list[Token]:
    return lex(
        text,
        _TOKEN,
        lambda _start, pos: YqlError(f"Unexpected character '{text[pos]}' at position {pos}"),
    )


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0

    # -- helpers ---------------------------------------------------------------------------

    def peek(self, k: int = 0) -> tuple[str, str, int]:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def next(self) -> tuple[str, str, int]:
        t = self.toks[self.i]
        if t[0] != "end":
            self.i += 1
        return t

    def is_kw(self, word: str, k: int = 0) -> bool:
        kind, v, _ = self.peek(k)
        return kind == "name" and v.lower() == word

    def accept_kw(self, word: str) -> bool:
        if self.is_kw(word):
            self.i += 1
            return True
        return False

    def accept(self, op: str) -> bool:
        kind, v, _ = self.peek()
        if kind == "op" and v == op:
            self.i += 1
            return True
        return False

    def expect(self, op: str) -> None:
        if not self.accept(op):
            self.fail(f"expected '{op}'")

    def fail(self, what: str):
        kind, v, pos = self.peek()
        found = "end of query" if kind == "end" else f"'{v}'"
        raise YqlError(f"{what} at position {pos}, found {found}")

    def name(self, what: str = "a field name") -> str:
        kind, v, _ = self.peek()
        if kind != "name":
            self.fail(f"expected {what}")
        self.i += 1
        return v

    def string(self) -> str:
        kind, v, _ = self.peek()
        if kind != "str":
            self.fail("expected a string")
        self.i += 1
        return _unquote(v)

    def integer(self) -> int:
        kind, v, _ = self.peek()
        if kind != "num" or not re.fullmatch(r"-?\d+[lL]?", v):
            self.fail("expected an integer")
        self.i += 1
        return int(v.rstrip("lL"))

    def number(self) -> tuple[float, bool]:
        kind, v, _ = self.peek()
        if kind == "name" and v in ("Infinity",):
            self.i += 1
            return float("inf"), False
        if kind == "op" and v == "-" and self.peek(1)[1] == "Infinity":
            self.i += 2
            return float("-inf"), False
        if kind != "num":
            self.fail("expected a number")
        self.i += 1
        is_long = v[-1] in "lL"
        text = v.rstrip("lL")
        if re.fullmatch(r"-?\d+", text):
            n = int(text)
            if not is_long and not -INT32_MAX - 1 <= n <= INT32_MAX:
                raise YqlError(f"Integer {text} is out of 32-bit range; write {text}L for a long")
            return float(n), is_long
        return float(text), False

    # -- grammar ---------------------------------------------------------------------------

    def parse(self) -> Query:
        if not self.accept_kw("select"):
            self.fail("expected 'select'")
        fields: tuple[str, ...] | None
        if self.accept("*"):
            fields = None
        else:
            names = [self.name()]
            while self.accept(","):
                names.append(self.name())
            fields = tuple(names)
        if not self.accept_kw("from"):
            self.fail("expected 'from'")
        sources: tuple[str, ...] | None
        if self.accept_kw("sources"):
            sources = None if self.accept("*") else self.source_list()
        else:
            sources = self.source_list()
        where: object = TrueNode(True)
        if self.accept_kw("where"):
            where = self.expr()
        order: list[tuple[str, bool]] = []
        limit = offset = timeout = None
        while True:
            if self.is_kw("order") and self.is_kw("by", 1):
                self.i += 2
                order.append(self.order_item())
                while self.accept(","):
                    order.append(self.order_item())
            elif self.accept_kw("limit"):
                limit = self.integer()
            elif self.accept_kw("offset"):
                offset = self.integer()
            elif self.accept_kw("timeout"):
                timeout = self.integer()
            else:
                break
        if self.accept("|"):
            raise Unsupported("grouping")
        self.accept(";")
        if self.peek()[0] != "end":
            self.fail("unexpected text")
        return Query(fields, sources, where, order, limit, offset, timeout)

    def source_list(self) -> tuple[str, ...]:
        names = [self.name("a source name")]
        while self.accept(","):
            names.append(self.name("a source name"))
        return tuple(names)

    def order_item(self) -> tuple[str, bool]:
        if self.accept("["):
            if not self.accept_kw("relevance"):
                self.fail("expected 'relevance'")
            self.expect("]")
            key = "[relevance]"
        else:
            kind, v, _ = self.peek()
            if kind == "op" and v in ("+", "-"):
                raise Unsupported("order by with +/- prefixes")
            key = self.name()
            if self.peek(0)[1] == "(":
                raise Unsupported(f"order by {key}(...)")
        desc = False
        if self.accept_kw("desc"):
            desc = True
        else:
            self.accept_kw("asc")
        return key, desc

    def expr(self) -> object:
        parts = [self.and_()]
        while self.accept_kw("or"):
            parts.append(self.and_())
        if len(parts) == 1:
            return parts[0]
        if any(isinstance(p, Not) for p in parts):
            raise Unsupported("negation directly under 'or'")
        return Or(tuple(parts))

    def and_(self) -> object:
        parts = [self.unary()]
        while self.accept_kw("and"):
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def unary(self) -> object:
        if self.accept("!"):
            return Not(self.unary())
        annots: dict = {}
        if self.peek()[1] in ("{", "["):
            annots = self.annotations()
        if self.accept("("):
            inner_annots: dict = {}
            if self.peek()[1] in ("{", "["):
                inner_annots = self.annotations()
                if self.accept(")"):
                    # `({defaultIndex: "title"})userInput(...)`: the parentheses wrap the annotation
                    return self.leaf({**annots, **inner_annots})
            if inner_annots:
                node = self.leaf(inner_annots)
                node = self.continue_expr(node)
            else:
                node = self.expr()
            self.expect(")")
            if annots:
                raise Unsupported("annotations on a parenthesized expression")
            return node
        return self.leaf(annots)

    def continue_expr(self, first: object) -> object:
        """Finish an expression whose first leaf was already parsed (after an annotation)."""
        parts = [first]
        while self.accept_kw("and"):
            parts.append(self.unary())
        node = parts[0] if len(parts) == 1 else And(tuple(parts))
        ors = [node]
        while self.accept_kw("or"):
            ors.append(self.and_())
        return ors[0] if len(ors) == 1 else Or(tuple(ors))

    def annotations(self) -> dict:
        legacy = self.accept("[")
        self.expect("{")
        out: dict = {}
        if not self.accept("}"):
            while True:
                kind, v, _ = self.next()
                if kind == "str":
                    key = _unquote(v)
                elif kind == "name":
                    key = v
                else:
                    self.i -= 1
                    self.fail("expected an annotation name")
                self.expect(":")
                out[key] = self.annotation_value()
                if self.accept("}"):
                    break
                self.expect(",")
        if legacy:
            self.expect("]")
        for key in out:
            if key not in SUPPORTED_ANNOTATIONS:
                raise Unsupported(f"annotation '{key}'")
        return out

    def annotation_value(self) -> object:
        kind, v, _ = self.next()
        if kind == "num":
            text = v.rstrip("lL")
            return int(text) if re.fullmatch(r"-?\d+", text) else float(text)
        if kind == "str":
            return _unquote(v)
        if kind == "name" and v.lower() in ("true", "false"):
            return v.lower() == "true"
        self.i -= 1
        self.fail("expected an annotation value")

    def leaf(self, annots: dict) -> object:
        kind, v, _pos = self.peek()
        if (
            kind == "name"
            and v.lower() in ("true", "false")
            and self.peek(1)[1] not in ("=", "<", ">", "<=", ">=")
        ):
            self.i += 1
            return TrueNode(v.lower() == "true")
        if kind != "name":
            self.fail("expected a query term")
        if self.peek(1)[1] == "(":
            return self.function(annots)
        fname = self.name()
        if self.accept_kw("contains"):
            return self.contains(fname, annots)
        if self.is_kw("matches"):
            raise Unsupported("matches")
        if self.accept_kw("in"):
            return self.in_(fname)
        kind, op, _ = self.peek()
        if kind == "op" and op in ("=", "<", "<=", ">", ">="):
            self.i += 1
            if (
                op == "="
                and self.peek()[0] == "name"
                and self.peek()[1].lower() in ("true", "false")
            ):
                return Compare(fname, "=", self.next()[1].lower() == "true")
            if op == "=" and self.peek()[0] == "str":
                raise Unsupported("'=' with a string (use contains)")
            value, is_long = self.number()
            return Compare(fname, op, value, is_long)
        if kind == "op" and op == "!=":
            raise Unsupported("'!='")
        self.fail(f"expected an operator after '{fname}'")

    def contains(self, fname: str, annots: dict) -> Contains:
        inner: dict = {}
        if self.peek()[1] in ("{", "["):
            inner = self.annotations()
        if self.accept("("):
            # `f contains ({annots}"word")`
            if self.peek()[1] in ("{", "["):
                inner.update(self.annotations())
            word = self.string()
            self.expect(")")
            return Contains(fname, (word,), annotations={**annots, **inner})
        kind, v, _ = self.peek()
        if kind == "name" and self.peek(1)[1] == "(":
            if v == "phrase":
                self.i += 1
                self.expect("(")
                words = [self.string()]
                while self.accept(","):
                    words.append(self.string())
                self.expect(")")
                return Contains(fname, tuple(words), phrase=True, annotations={**annots, **inner})
            raise Unsupported(v)
        return Contains(fname, (self.string(),), annotations={**annots, **inner})

    def in_(self, fname: str) -> In:
        self.expect("(")
        if self.accept("@"):
            param = self.name("a parameter name")
            self.expect(")")
            return In(fname, (), param)
        values: list = []
        while True:
            kind, _v, _ = self.peek()
            if kind == "str":
                values.append(self.string())
            elif kind == "num":
                num, _ = self.number()
                values.append(int(num) if float(num).is_integer() else num)
            else:
                self.fail("expected a string or number")
            if self.accept(")"):
                break
            self.expect(",")
        return In(fname, tuple(values))

    def function(self, annots: dict) -> object:
        fname = self.name()
        key = fname
        if key in UNSUPPORTED_FUNCTIONS:
            raise Unsupported(key)
        self.expect("(")
        if key == "nearestNeighbor":
            field_name = self.name()
            self.expect(",")
            q = self.name("a query input name")
            self.expect(")")
            return NearestNeighbor(field_name, q, annots)
        if key == "range":
            field_name = self.name()
            self.expect(",")
            low, _ = self.number()
            self.expect(",")
            high, _ = self.number()
            self.expect(")")
            return Range(field_name, low, high)
        if key == "rank":
            children = [self.expr()]
            while self.accept(","):
                children.append(self.expr())
            self.expect(")")
            return Rank(tuple(children))
        if key == "userQuery":
            self.expect(")")
            return UserQuery(annots)
        if key == "userInput":
            if self.accept("@"):
                param = self.name("a parameter name")
                self.expect(")")
                return UserInput(None, param, annots)
            text = self.string()
            self.expect(")")
            return UserInput(text, None, annots)
        if key == "weakAnd":
            children = [self.expr()]
            while self.accept(","):
                children.append(self.expr())
            self.expect(")")
            return WeakAnd(tuple(children), annots)
        raise Unsupported(f"{key}()")


def parse_yql(text: str) -> Query:
    """Parse YQL text; raises YqlError (malformed) or Unsupported."""
    if not text or not text.strip():
        raise YqlError("empty YQL")
    return _Parser(text).parse()


def parse_param_list(value: str) -> list[str]:
    """`seen=P1,P2` or `seen="P1","P2"` -> ["P1", "P2"] (quotes optional)."""
    out = []
    for part in value.split(","):
        part = part.strip()
        if len(part) >= 2 and part[0] == part[-1] and part[0] in "\"'":
            part = part[1:-1]
        if part:
            out.append(part)
    return out


def annotations_json(annots: dict) -> str:
    return json.dumps(annots, sort_keys=True)
