"""Vectorised parsing of the whitespace-separated integer files every research format uses.

The published recommendation datasets are plain text: one user per line (``user item item ...``)
or one pair per line (``user item``). Splitting a million tokens one by one in Python is slow, so
:func:`read_int_tokens` works on the raw bytes with numpy: it finds every token, its value, its line
and its position in the line in a handful of array operations, and on bad input names the first
offending token by file, line and field.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainer.data.validation import DataProblem, DataValidationError

# Longest decimal token that fits an int64 without overflow checks.
MAX_DIGITS = 18
_POWERS = 10 ** np.arange(MAX_DIGITS, dtype=np.int64)


@dataclass(frozen=True)
class TextProblem(DataProblem):
    """A problem in a text file; ``row`` is the 1-based line number an editor shows."""

    def __str__(self) -> str:
        where = f"{self.file}, line {self.row}" if self.row is not None else self.file
        return f"{where}, field '{self.field}': {self.message}"


def fail(path: Path | str, line: int | None, field: str, message: str) -> DataValidationError:
    """The error for one problem in a text file (callers ``raise fail(...)``)."""
    return DataValidationError([TextProblem(str(path), line, field, message)])


FieldName = Callable[[int], str]


def user_then_items(position: int) -> str:
    """Field names of ``user item item ...`` lines: 'user', 'item 1', 'item 2', ..."""
    return "user" if position == 0 else f"item {position}"


@dataclass(frozen=True)
class IntTokens:
    """Every integer token of a text file, in file order."""

    path: Path
    values: np.ndarray  # (T,) int64
    line: np.ndarray  # (T,) int64, 1-based line of each token
    position: np.ndarray  # (T,) int64, 0-based position of the token within its line
    field_name: FieldName

    def __len__(self) -> int:
        return len(self.values)

    def problem(self, token: int, message: str) -> DataValidationError:
        """The error for token number ``token``, naming its line and field."""
        return fail(
            self.path,
            int(self.line[token]),
            self.field_name(int(self.position[token])),
            message,
        )

    def line_starts(self) -> np.ndarray:
        """(L,) index of the first token of each non-blank line."""
        return np.flatnonzero(self.position == 0)


def read_int_tokens(
    path: Path, field_name: FieldName = user_then_items, skip_lines: int = 0
) -> IntTokens:
    """Parse a file of non-negative integers separated by spaces/tabs and newlines.

    Blank lines carry no data and are skipped; anything that is not a digit or whitespace is an
    error naming the token, its line and its field. ``skip_lines`` drops header lines.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise fail(path, None, "-", f"cannot read the file: {error}") from error
    buf = np.frombuffer(data, dtype=np.uint8)
    newline = buf == 10
    first_line = 1
    if skip_lines:
        ends = np.flatnonzero(newline)
        cut = int(ends[skip_lines - 1]) + 1 if len(ends) >= skip_lines else len(buf)
        buf, newline = buf[cut:], newline[cut:]
        first_line += skip_lines
    digit = (buf >= 48) & (buf <= 57)
    space = newline | (buf == 32) | (buf == 9) | (buf == 13)
    bad = ~(digit | space)
    if bad.any():
        at = int(np.argmax(bad))
        raise _bad_token(path, buf, newline, at, first_line, field_name)
    if not digit.any():
        raise fail(path, None, "-", "the file is empty (no data lines)")
    previous = np.concatenate(([False], digit[:-1]))
    following = np.concatenate((digit[1:], [False]))
    starts = np.flatnonzero(digit & ~previous)
    ends = np.flatnonzero(digit & ~following)
    lines_before = np.cumsum(newline, dtype=np.int64)
    line = lines_before[starts] + first_line
    first_of_line = np.searchsorted(line, line, side="left")
    position = np.arange(len(starts), dtype=np.int64) - first_of_line
    tokens = IntTokens(path, np.empty(0, np.int64), line, position, field_name)
    length = ends - starts + 1
    if (length > MAX_DIGITS).any():
        token = int(np.argmax(length > MAX_DIGITS))
        raise tokens.problem(token, f"integer with more than {MAX_DIGITS} digits")
    digits = (buf[digit] - 48).astype(np.int64)
    digit_positions = np.flatnonzero(digit)
    owner = np.cumsum(digit[digit_positions] & ~previous[digit_positions]) - 1
    weights = _POWERS[ends[owner] - digit_positions]
    offsets = np.concatenate(([0], np.cumsum(length)[:-1]))
    values = np.add.reduceat(digits * weights, offsets)
    return IntTokens(path, values, line, position, field_name)


def _bad_token(
    path: Path, buf: np.ndarray, newline: np.ndarray, at: int, first_line: int, field_name
) -> DataValidationError:
    """Name the whitespace-delimited token around byte ``at`` (only called on an error)."""
    raw = buf.tobytes()
    start = at
    while start > 0 and raw[start - 1 : start] not in (b" ", b"\t", b"\n", b"\r"):
        start -= 1
    end = at
    while end < len(raw) and raw[end : end + 1] not in (b" ", b"\t", b"\n", b"\r"):
        end += 1
    line_start = raw.rfind(b"\n", 0, start) + 1
    position = len(raw[line_start:start].split())
    line = int(newline[:at].sum()) + first_line
    token = raw[start:end].decode("utf-8", errors="replace")
    return fail(path, line, field_name(position), f"not a non-negative integer: {token!r}")


def check_min_id(tokens: IntTokens, mask: np.ndarray, minimum: int, what: str) -> None:
    """Ids below ``minimum`` (0 in a 1-based file) are errors naming the first one."""
    low = mask & (tokens.values < minimum)
    if low.any():
        token = int(np.argmax(low))
        raise tokens.problem(
            token, f"{what} id {tokens.values[token]} is below {minimum} (ids start at {minimum})"
        )


def check_unique_lines(tokens: IntTokens, what: str = "user") -> np.ndarray:
    """Rows of the line-leading ids; a repeated one is an error naming both lines."""
    heads = tokens.line_starts()
    ids = tokens.values[heads]
    order = np.argsort(ids, kind="stable")
    repeated = np.flatnonzero(ids[order][1:] == ids[order][:-1])
    if len(repeated):
        first, again = heads[order[repeated[0]]], heads[order[repeated[0] + 1]]
        raise tokens.problem(
            int(again),
            f"{what} {tokens.values[again]} appears again (first on line {tokens.line[first]})",
        )
    return heads


def read_json(path: Path) -> Any:
    """Parse a JSON file; a syntax error names the file and line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise fail(path, None, "-", f"cannot read the file: {error}") from error
    if not text.strip():
        raise fail(path, None, "-", "the file is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise fail(path, error.lineno, "-", f"invalid JSON: {error.msg}") from error
