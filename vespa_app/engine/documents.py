"""/document/v1 handlers: put, update, get, remove, visit, delete-where (spec §3).

Every reply is `{"pathId", ...}` as in Vespa's DocumentV1ApiHandler; errors are
`{"pathId", "message"}` with the status codes of the spec. Writes go through the
store's single writer and are answered once durable.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import json
import re
import zlib
from typing import Any

from vespa_app.engine.docid import ALLOWED_METHODS, AVAILABLE_PATHS, DocPath, full_id, parse_path
from vespa_app.engine.reply import Reply
from vespa_app.engine.selection import SelectionError, compile_selection
from vespa_app.engine.services import Services
from vespa_app.engine.store import DocumentStore, Overloaded, WriteFailed
from vespa_app.engine.updates import parse_update
from vespa_app.engine.values import (
    FieldValueError,
    UnsupportedError,
    convert_document,
    render_fields,
)

DEFAULT_TIMEOUT_S = 180.0
MAX_WANTED_DOCUMENTS = 1024
# Known Vespa parameters whose effect the engine does not reproduce (rejected, never ignored).
_UNSUPPORTED_PARAMS = (
    "condition",
    "fromTimestamp",
    "toTimestamp",
    "includeRemoves",
    "destinationCluster",
)
_DROPPED_BODY_KEYS = ("put", "id", "update", "remove")


class RequestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_timeout(text: str) -> float:
    """Vespa time values: bare seconds, or with an `ms`, `s` or `m` unit."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m)?\s*", text)
    if not m:
        raise RequestError(400, f"Invalid timeout '{text}'")
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[m.group(2)]
    return float(m.group(1)) * scale


def _encode_continuation(doc_type: str, local_id: str) -> str:
    raw = json.dumps([doc_type, local_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_continuation(token: str) -> tuple[str, str]:
    try:
        doc_type, local_id = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return str(doc_type), str(local_id)
    except (ValueError, TypeError) as e:
        raise RequestError(400, f"Invalid continuation token '{token}'") from e


def slice_of(document_id: str, slices: int) -> int:
    """Stable slice assignment: crc32 of the full document id, modulo the slice count."""
    return zlib.crc32(document_id.encode()) % slices


class DocumentApi:
    def __init__(self, services: Services, schemas: dict[str, Any], store: DocumentStore) -> None:
        self.services = services
        self.schemas = schemas
        self.store = store
        self.clusters = {c.id: c for c in services.content_clusters}

    async def handle(
        self, method: str, raw_path: str, params: dict[str, str], body: bytes
    ) -> Reply:
        try:
            return await self._handle(method, raw_path, params, body)
        except RequestError as e:
            return Reply(e.status, {"pathId": raw_path, "message": str(e)})
        except UnsupportedError as e:
            return Reply(400, {"pathId": raw_path, "message": str(e)})
        except (FieldValueError, SelectionError) as e:
            return Reply(400, {"pathId": raw_path, "message": str(e)})
        except Overloaded as e:
            return Reply(429, {"pathId": raw_path, "message": str(e)})
        except WriteFailed as e:
            return Reply(e.status, {"pathId": raw_path, "message": str(e)})

    async def _handle(
        self, method: str, raw_path: str, params: dict[str, str], body: bytes
    ) -> Reply:
        path = parse_path(raw_path)
        if path is None:
            paths = "\n".join(AVAILABLE_PATHS)
            raise RequestError(404, f"Nothing at '{raw_path}'. Available paths are:\n{paths}")
        allowed = ALLOWED_METHODS[path.kind]
        if method not in allowed:
            raise RequestError(
                405,
                f"'{method}' not allowed at '{raw_path}'. "
                f"Allowed methods are: {', '.join(allowed)}",
            )
        if path.kind == "grouped":
            raise UnsupportedError("group/ and number/ document ids (streaming mode only)")
        for name in _UNSUPPORTED_PARAMS:
            if name in params:
                raise UnsupportedError(f"{name}")
        if params.get("format.tensors", "short") != "short":
            raise UnsupportedError(f"format.tensors={params['format.tensors']}")
        if params.get("bucketSpace", "default") != "default":
            raise UnsupportedError(f"bucketSpace={params['bucketSpace']}")
        if path.kind != "root":
            self._check_type(path)
        if path.kind == "document":
            if method == "GET":
                return self._get(raw_path, path, params)
            return await self._write(method, raw_path, path, params, body)
        if method == "GET":
            return self._visit(raw_path, path, params)
        if method == "DELETE":
            return await self._delete_where(raw_path, path, params)
        raise UnsupportedError("copy (POST) and update-where (PUT) by selection")

    def _check_type(self, path: DocPath) -> None:
        if path.doc_type not in self.services.document_types:
            raise RequestError(400, f"Document type {path.doc_type} does not exist")
        if path.namespace != path.doc_type:
            raise UnsupportedError(
                f"namespace '{path.namespace}' differs from document type '{path.doc_type}' "
                "(the project uses namespace = document type)"
            )

    # ------------------------------------------------------------------ get / write

    def _field_set(
        self, spec: str | None, doc_types: list[str]
    ) -> dict[str, set[str] | None] | None:
        """Parse fieldSet: None = ids only; else per type the wanted field names (None = all)."""
        if spec in (None, "[document]", "[all]"):
            return {t: None for t in doc_types}
        if spec == "[id]":
            return None
        m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*):([A-Za-z0-9_,]+)", spec)
        if not m:
            raise UnsupportedError(f"fieldSet '{spec}'")
        doc_type, names = m.group(1), m.group(2).split(",")
        if doc_type not in doc_types:
            raise RequestError(
                400, f"fieldSet '{spec}' names document type '{doc_type}', not one of {doc_types}"
            )
        for name in names:
            if name not in self.schemas[doc_type].fields:
                raise RequestError(400, f"Document type '{doc_type}' has no field '{name}'")
        return {t: (set(names) if t == doc_type else set()) for t in doc_types}

    def _get(self, raw_path: str, path: DocPath, params: dict[str, str]) -> Reply:
        wanted = self._field_set(params.get("fieldSet"), [path.doc_type])
        fields = self.store.get(path.doc_type, path.local_id)
        if fields is None:
            return Reply(404, {"pathId": raw_path, "id": path.full_id})
        body: dict[str, Any] = {"pathId": raw_path, "id": path.full_id}
        if wanted is not None:
            body["fields"] = render_fields(
                self.schemas[path.doc_type], fields, wanted[path.doc_type]
            )
        return Reply(200, body)

    def _json_body(self, body: bytes) -> dict[str, Any]:
        try:
            parsed = json.loads(body) if body.strip() else {}
        except (ValueError, UnicodeDecodeError) as e:
            raise RequestError(400, f"Could not parse JSON body: {e}") from e
        if not isinstance(parsed, dict):
            raise RequestError(400, "The request body must be a JSON object")
        if "condition" in parsed:
            raise UnsupportedError("condition")
        for key in parsed:
            if key not in ("fields", "create", *_DROPPED_BODY_KEYS):
                raise RequestError(400, f"Unknown key '{key}' in document operation")
        return parsed

    async def _write(
        self, method: str, raw_path: str, path: DocPath, params: dict[str, str], body: bytes
    ) -> Reply:
        timeout = parse_timeout(params.get("timeout", str(DEFAULT_TIMEOUT_S)))
        schema = self.schemas[path.doc_type]
        ignore = self.services.ignore_undefined_fields
        ignored = False
        if method == "POST":
            parsed = self._json_body(body)
            fields, ignored = convert_document(
                schema, path.doc_type, parsed.get("fields", {}), ignore
            )
            future = self.store.put(path.doc_type, path.local_id, fields)
        elif method == "PUT":
            parsed = self._json_body(body)
            create = params.get("create", "false").lower()
            if create not in ("true", "false"):
                raise RequestError(400, f"Invalid value for 'create': '{params['create']}'")
            create_flag = create == "true" or parsed.get("create") is True
            ops, ignored = parse_update(schema, path.doc_type, parsed.get("fields", {}), ignore)
            future = self.store.update(path.doc_type, path.local_id, ops, create_flag)
        else:
            future = self.store.remove(path.doc_type, path.local_id)
        await self._await(future, timeout)
        headers = {"X-Vespa-Ignored-Fields": "true"} if ignored else {}
        return Reply(200, {"pathId": raw_path, "id": path.full_id}, headers)

    @staticmethod
    async def _await(future: Any, timeout: float) -> Any:
        try:
            # shield: a timed-out request must not cancel an op the writer may have made durable
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), timeout)
        except TimeoutError as e:
            raise RequestError(504, f"Timed out after {timeout}s waiting for the operation") from e

    # ------------------------------------------------------------------ visit / delete-where

    def _visit_types(self, path: DocPath, params: dict[str, str]) -> tuple[str, list[str]]:
        cluster = params.get("cluster")
        if path.kind == "root":
            if not cluster:
                raise RequestError(
                    400,
                    "Must set 'cluster' parameter to a valid content cluster id when visiting "
                    "at a root /document/v1/ level",
                )
        elif not cluster:
            cluster = self.services.document_types[path.doc_type]
        if cluster not in self.clusters:
            only = ", ".join(f"'{c}'" for c in self.clusters)
            raise RequestError(
                400, f"Your Vespa deployment has no content cluster '{cluster}', only {only}"
            )
        types = list(self.clusters[cluster].document_types)
        if path.kind != "root":
            if path.doc_type not in types:
                raise RequestError(
                    400, f"Document type {path.doc_type} is not in content cluster '{cluster}'"
                )
            types = [path.doc_type]
        return cluster, types

    def _matcher(self, params: dict[str, str], types: list[str]) -> Any:
        selection = params.get("selection", "true") or "true"
        fields_by_type = {t: set(s.fields) for t, s in self.schemas.items()}
        predicate = compile_selection(selection, fields_by_type)
        slices, slice_id = 1, 0
        if "slices" in params or "sliceId" in params:
            try:
                slices, slice_id = int(params.get("slices", "")), int(params.get("sliceId", ""))
            except ValueError as e:
                raise RequestError(
                    400, "'slices' and 'sliceId' must both be set, as integers"
                ) from e
            if slices < 1 or not 0 <= slice_id < slices:
                raise RequestError(
                    400, f"'sliceId' must be in [0, {slices - 1}] and 'slices' positive"
                )

        def matches(doc_type: str, local_id: str, fields: dict[str, Any]) -> bool:
            if slices > 1 and slice_of(full_id(doc_type, doc_type, local_id), slices) != slice_id:
                return False
            return predicate(doc_type, fields)

        return matches

    def _visit(self, raw_path: str, path: DocPath, params: dict[str, str]) -> Reply:
        _, types = self._visit_types(path, params)
        matches = self._matcher(params, types)
        wanted = self._field_set(params.get("fieldSet"), types)
        try:
            count = int(params.get("wantedDocumentCount", "1"))
        except ValueError as e:
            raise RequestError(
                400, f"Invalid wantedDocumentCount '{params['wantedDocumentCount']}'"
            ) from e
        if not 1 <= count <= MAX_WANTED_DOCUMENTS:
            raise RequestError(400, f"wantedDocumentCount must be in [1, {MAX_WANTED_DOCUMENTS}]")
        after = _decode_continuation(params["continuation"]) if params.get("continuation") else None
        documents: list[dict[str, Any]] = []
        continuation = None
        with self.store.reading():
            keys = sorted((t, i) for t in sorted(types) for i, _ in self.store.iter_documents(t))
            start = 0
            if after is not None:
                start = bisect.bisect_right(keys, after)
            for pos in range(start, len(keys)):
                doc_type, local_id = keys[pos]
                fields = self.store.get(doc_type, local_id)
                if fields is None or not matches(doc_type, local_id, fields):
                    continue
                doc: dict[str, Any] = {"id": full_id(doc_type, doc_type, local_id)}
                if wanted is not None:
                    doc["fields"] = render_fields(self.schemas[doc_type], fields, wanted[doc_type])
                documents.append(doc)
                if len(documents) >= count:
                    if pos + 1 < len(keys):
                        continuation = _encode_continuation(doc_type, local_id)
                    break
        body: dict[str, Any] = {
            "pathId": raw_path,
            "documents": documents,
            "documentCount": len(documents),
        }
        if continuation is not None:
            body["continuation"] = continuation
        return Reply(200, body)

    async def _delete_where(self, raw_path: str, path: DocPath, params: dict[str, str]) -> Reply:
        if not params.get("selection"):
            raise RequestError(400, "Must specify non-empty 'selection' parameter")
        _, types = self._visit_types(path, params)
        matches = self._matcher(params, types)
        timeout = parse_timeout(params.get("timeout", str(DEFAULT_TIMEOUT_S)))
        total = 0
        for doc_type in types:
            future = self.store.remove_where(doc_type, matches)
            result = await self._await(future, timeout)
            total += result.count
        return Reply(200, {"pathId": raw_path, "documentCount": total})
