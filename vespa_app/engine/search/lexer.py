"""The one regex lexer behind the YQL and ranking-expression parsers.

Both languages are tokenized the same way: skip whitespace, match one alternative of a pattern
whose named groups are the token kinds, and end with an `("end", "", len(text))` token. Each
parser brings its own pattern and its own error (YQL and expressions report differently)."""

from __future__ import annotations

import re
from collections.abc import Callable

Token = tuple[str, str, int]  # (kind = the named group, text, start position)


def lex(text: str, pattern: re.Pattern[str], error: Callable[[int, int], Exception]) -> list[Token]:
    """Tokens of `text`; `error(pos, char_pos)` builds the exception for text no group matches
    (`pos` is where the failed token began, `char_pos` its first non-space character)."""
    out: list[Token] = []
    pos = 0
    while True:
        start = pos
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            break
        m = pattern.match(text, pos)
        if not m or m.end() == pos:
            raise error(start, pos)
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind), m.start(kind)))
        pos = m.end()
    out.append(("end", "", len(text)))
    return out
