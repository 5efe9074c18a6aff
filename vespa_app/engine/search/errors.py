"""Query errors in Vespa's shape (spec §4.4): code, summary and HTTP status."""

from __future__ import annotations

SUMMARIES = {
    3: "Illegal query",
    4: "Invalid query parameter",
    8: "Error in search reply.",
    12: "Timed out",
    18: "Internal server error.",
}
UNSUPPORTED_PREFIX = "Unsupported by local engine: "


class QueryError(Exception):
    """An error of one query; `source` names the schema it came from, when it is schema-specific."""

    def __init__(self, code: int, message: str, source: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.source = source

    def to_json(self) -> dict:
        out: dict = {"code": self.code, "summary": SUMMARIES.get(self.code, "Error")}
        if self.source:
            out["source"] = self.source
        out["message"] = self.message
        return out


def unsupported(construct: str) -> QueryError:
    return QueryError(4, UNSUPPORTED_PREFIX + construct)


def http_status(errors: list[QueryError], hits: int) -> int:
    """200 with at least one hit; else 400 for codes 3/4, 504 for 12, 503 overload, else 500."""
    if not errors or hits > 0:
        return 200
    codes = {e.code for e in errors}
    if codes <= {3, 4}:
        return 400
    if 12 in codes:
        return 504
    return 500
