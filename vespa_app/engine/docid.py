"""/document/v1 paths and Vespa document ids (spec §3).

A full id is `id:{namespace}:{type}::{local-id}`. The path carries the local id
percent-encoded after `/docid/`; it may itself contain `/`, `:` and `#`, so the
split is done on the raw (still encoded) path and each piece is decoded after.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

PREFIX = "/document/v1"


@dataclass(frozen=True)
class DocPath:
    """A parsed /document/v1 path.

    kind: "root" (`/document/v1/`), "type" (`.../{ns}/{type}/docid/`, visit and
    delete-where), "document" (`.../docid/{id}`), or "grouped" (`group/` and
    `number/` ids, streaming mode only, hence unsupported).
    """

    kind: str
    namespace: str = ""
    doc_type: str = ""
    local_id: str = ""

    @property
    def full_id(self) -> str:
        return full_id(self.namespace, self.doc_type, self.local_id)


def full_id(namespace: str, doc_type: str, local_id: str) -> str:
    return f"id:{namespace}:{doc_type}::{local_id}"


def parse_path(raw_path: str) -> DocPath | None:
    """Parse a raw request path below /document/v1; None when nothing lives there."""
    if raw_path in (PREFIX, PREFIX + "/"):
        return DocPath("root")
    if not raw_path.startswith(PREFIX + "/"):
        return None
    parts = raw_path[len(PREFIX) + 1 :].split("/")
    if len(parts) < 3 or not parts[0] or not parts[1]:
        return None
    namespace, doc_type, scheme = unquote(parts[0]), unquote(parts[1]), parts[2]
    rest = parts[3:]
    if scheme == "docid":
        local = unquote("/".join(rest))
        if not local:
            return DocPath("type", namespace, doc_type)
        return DocPath("document", namespace, doc_type, local)
    if scheme in ("group", "number") and rest:
        return DocPath("grouped", namespace, doc_type)
    return None


AVAILABLE_PATHS = (
    "/document/v1/",
    "/document/v1/{namespace}/{documentType}/docid/",
    "/document/v1/{namespace}/{documentType}/group/{group}/",
    "/document/v1/{namespace}/{documentType}/number/{number}/",
    "/document/v1/{namespace}/{documentType}/docid/{*}",
    "/document/v1/{namespace}/{documentType}/group/{group}/{*}",
    "/document/v1/{namespace}/{documentType}/number/{number}/{*}",
)

ALLOWED_METHODS = {
    "root": ("GET",),
    "type": ("POST", "GET", "PUT", "DELETE"),
    "document": ("POST", "GET", "PUT", "DELETE"),
    "grouped": ("POST", "GET", "PUT", "DELETE"),
}
