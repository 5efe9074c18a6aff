"""Checked request parameters: a bad value is a 400 page naming the parameter, never a 500."""

from __future__ import annotations

import re
from typing import Any

MAX_ID = 200  # longest accepted id (as the JSON API)
MAX_QUERY = 200  # longest search text
# Ids reach YQL as quoted literals: letters, digits and a few separators only, so no quote,
# backslash or control character can get there.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_./:@+\- ]*")


class BadParameter(ValueError):
    def __init__(self, name: str, message: str) -> None:
        self.name = name
        super().__init__(f"{name}: {message}")


def identifier(name: str, value: Any, required: bool = True) -> str | None:
    if value is None or value == "":
        if required:
            raise BadParameter(name, "required")
        return None
    if not isinstance(value, str) or len(value) > MAX_ID or not ID_PATTERN.fullmatch(value):
        raise BadParameter(
            name,
            f"must be an id of at most {MAX_ID} letters, digits, spaces or _ . / : @ + -",
        )
    return value


def integer(name: str, value: Any, low: int, high: int, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(str(value).strip())
    except ValueError:
        raise BadParameter(name, f"must be an integer in [{low}, {high}], got {value!r}") from None
    if not low <= number <= high:
        raise BadParameter(name, f"must be an integer in [{low}, {high}], got {number}")
    return number


def choice(name: str, value: Any, options: tuple[str, ...], default: str) -> str:
    if value is None or value == "":
        return default
    if value not in options:
        raise BadParameter(name, f"must be one of {', '.join(options)}, got {value!r}")
    return value


def search_text(value: Any) -> str:
    text = (value or "").strip() if isinstance(value, str) else ""
    if not text:
        raise BadParameter("q", "required: type a word to search for")
    if len(text) > MAX_QUERY or any(ord(c) < 32 for c in text):
        raise BadParameter("q", f"at most {MAX_QUERY} characters without control characters")
    return text


def local_path(value: Any, default: str = "/") -> str:
    """A redirect target inside this site (no scheme, no host, no '//'): no open redirect."""
    if not isinstance(value, str) or not value.startswith("/") or value.startswith("//"):
        return default
    if "\\" in value or any(ord(c) < 32 for c in value) or len(value) > 2000:
        return default
    return value
