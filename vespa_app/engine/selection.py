"""Document selection subset for visit and delete-where (spec §3 "Visit").

Grammar: `true`, `false`, `<type>`, `<type>.<field> (== != < <= > >=) <literal>`
(either side may be the field), `and`, `or`, `not`, parentheses, double-quoted
strings, numbers, `true`/`false`/`null` literals. Keywords are case-insensitive.
A comparison against an array field holds when any element satisfies it, as in
Vespa; a field without a value only equals `null`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vespa_app.engine.values import UnsupportedError

Predicate = Callable[[str, dict[str, Any]], bool]

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<num>-?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)
    | (?P<str>"(?:[^"\\]|\\.)*")
    | (?P<op>==|!=|<=|>=|=~|<|>|=)
    | (?P<punct>[().])
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)


class SelectionError(ValueError):
    """An invalid selection expression (400)."""


@dataclass
class _Tok:
    kind: str
    text: str


def _tokenize(text: str) -> list[_Tok]:
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m:
            raise SelectionError(
                f"Illegal selection '{text}': unexpected character at position {pos}"
            )
        kind = m.lastgroup or ""
        tokens.append(_Tok(kind, m.group(kind)))
        pos = m.end()
    return tokens


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}
_FLIP = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_NULL = object()


def _comparable(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return True
    return isinstance(a, str) and isinstance(b, str)


class _Parser:
    def __init__(self, text: str, fields_by_type: dict[str, set[str]]) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0
        self.fields_by_type = fields_by_type

    def error(self, problem: str) -> SelectionError:
        return SelectionError(f"Illegal selection '{self.text}': {problem}")

    def peek(self) -> _Tok | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def keyword(self, word: str) -> bool:
        tok = self.peek()
        if tok and tok.kind == "ident" and tok.text.lower() == word:
            self.pos += 1
            return True
        return False

    def take(self) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise self.error("unexpected end of expression")
        self.pos += 1
        return tok

    def parse(self) -> Predicate:
        if not self.tokens:
            raise self.error("empty expression")
        node = self.parse_or()
        if self.peek() is not None:
            raise self.error(f"unexpected '{self.peek().text}'")
        return node

    def parse_or(self) -> Predicate:
        parts = [self.parse_and()]
        while self.keyword("or"):
            parts.append(self.parse_and())
        return parts[0] if len(parts) == 1 else lambda t, f: any(p(t, f) for p in parts)

    def parse_and(self) -> Predicate:
        parts = [self.parse_not()]
        while self.keyword("and"):
            parts.append(self.parse_not())
        return parts[0] if len(parts) == 1 else lambda t, f: all(p(t, f) for p in parts)

    def parse_not(self) -> Predicate:
        if self.keyword("not"):
            inner = self.parse_not()
            return lambda t, f: not inner(t, f)
        return self.parse_primary()

    def parse_primary(self) -> Predicate:
        tok = self.peek()
        if tok is not None and tok.text == "(":
            self.pos += 1
            inner = self.parse_or()
            if self.take().text != ")":
                raise self.error("missing ')'")
            return inner
        left = self.parse_operand()
        nxt = self.peek()
        if nxt is not None and nxt.kind == "op":
            op = self.take().text
            if op in ("=", "=~"):
                raise UnsupportedError(f"selection operator '{op}'")
            right = self.parse_operand()
            return self.comparison(left, op, right)
        if left[0] == "type":
            doc_type = left[1]
            return lambda t, f: t == doc_type
        if left[0] == "literal" and isinstance(left[1], bool):
            constant = left[1]
            return lambda t, f: constant
        raise self.error("expected a comparison")

    def parse_operand(self) -> tuple[str, Any]:
        tok = self.take()
        if tok.kind == "num":
            return (
                "literal",
                float(tok.text) if any(c in tok.text for c in ".eE") else int(tok.text),
            )
        if tok.kind == "str":
            return ("literal", json.loads(tok.text))
        if tok.kind != "ident":
            raise self.error(f"unexpected '{tok.text}'")
        low = tok.text.lower()
        if low in ("true", "false"):
            return ("literal", low == "true")
        if low == "null":
            return ("literal", _NULL)
        if low in ("id", "now"):
            raise UnsupportedError(f"selection term '{tok.text}'")
        if tok.text not in self.fields_by_type:
            raise self.error(f"document type '{tok.text}' not found")
        nxt = self.peek()
        if nxt is not None and nxt.text == ".":
            self.pos += 1
            field = self.take()
            if field.kind != "ident":
                raise self.error(f"expected a field name after '{tok.text}.'")
            if field.text not in self.fields_by_type[tok.text]:
                raise self.error(f"document type '{tok.text}' has no field '{field.text}'")
            if self.peek() is not None and self.peek().text == ".":
                raise UnsupportedError(f"selection field path '{tok.text}.{field.text}.'")
            return ("field", (tok.text, field.text))
        return ("type", tok.text)

    def comparison(self, left: tuple[str, Any], op: str, right: tuple[str, Any]) -> Predicate:
        if left[0] == "literal" and right[0] == "field":
            left, right, op = right, left, _FLIP[op]
        if left[0] != "field" or right[0] != "literal":
            raise self.error("a comparison needs a document field and a literal")
        (doc_type, field), literal = left[1], right[1]
        compare = _COMPARE[op]

        def predicate(t: str, fields: dict[str, Any]) -> bool:
            if t != doc_type:
                return False
            value = fields.get(field)
            if literal is _NULL:
                return (value is None) == (op == "==") if op in ("==", "!=") else False
            if value is None:
                return False
            values = value if isinstance(value, list) else [value]
            return any(_comparable(v, literal) and compare(v, literal) for v in values)

        return predicate


def compile_selection(text: str, fields_by_type: dict[str, set[str]]) -> Predicate:
    """Compile a selection into `predicate(doc_type, fields) -> bool`; raises SelectionError."""
    return _Parser(text, fields_by_type).parse()
