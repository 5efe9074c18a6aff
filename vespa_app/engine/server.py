"""ASGI front of the engine: routing, body limits, gzip, health, backpressure (spec §2).

Served by hypercorn, which speaks HTTP/1.1 and cleartext HTTP/2 (prior
knowledge and `Upgrade: h2c`) on one port: pyvespa's sync client uses the
former, its async client the latter. Request bodies are read up to a limit
(413 beyond), gzip-decoded when `Content-Encoding: gzip` (any other encoding is
a 400 naming it), then handed to the document API or the search engine. Blocking
search work runs in a bounded thread pool; beyond its queue bound /search/
answers 503, as Vespa does when no handler thread is free.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import zlib
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qsl

from vespa_app.engine.documents import DocumentApi
from vespa_app.engine.reply import JSON_TYPE, Reply

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_SEARCH_ERRORS = {
    3: "Illegal query",
    4: "Invalid query parameter",
    12: "Timed out",
    18: "Internal server error.",
}


class BodyError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def search_error(status: int, code: int, message: str) -> Reply:
    """Vespa's search result shape for a failed query."""
    error = {"code": code, "summary": _SEARCH_ERRORS.get(code, "Error"), "message": message}
    root = {"id": "toplevel", "relevance": 1.0, "fields": {"totalCount": 0}, "errors": [error]}
    return Reply(status, {"root": root})


class EngineApp:
    """The ASGI application.

    `search` is anything with `search(url_params, body) -> (status, dict)`.
    """

    def __init__(
        self,
        documents: DocumentApi,
        search: Any | None,
        *,
        application_name: str = "default",
        max_body_bytes: int = 64 * 1024 * 1024,
        search_threads: int = 4,
        max_queued_queries: int = 64,
    ) -> None:
        self.documents = documents
        self.search = search
        self.application_name = application_name
        self.max_body_bytes = max_body_bytes
        self.max_queued_queries = max_queued_queries
        self._search_pool = ThreadPoolExecutor(
            max_workers=search_threads, thread_name_prefix="search"
        )
        self._queries_in_flight = 0
        self._queries_lock = threading.Lock()
        self.started = time.time()

    def close(self) -> None:
        self._search_pool.shutdown(wait=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        try:
            reply = await self._route(scope, receive)
        except Exception as e:
            log.exception("internal error on %s %s", scope.get("method"), scope.get("path"))
            reply = Reply(500, {"message": f"Internal server error: {e}"})
        await self._send(send, reply)

    @staticmethod
    async def _send(send: Send, reply: Reply) -> None:
        payload = reply.encode()
        headers = [
            (b"content-type", JSON_TYPE.encode()),
            (b"content-length", str(len(payload)).encode()),
        ]
        headers += [(k.lower().encode(), v.encode()) for k, v in reply.headers.items()]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise BodyError(
                    413, f"Request body exceeds the limit of {self.max_body_bytes} bytes"
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        encoding = ""
        for name, value in scope.get("headers", []):
            if name.lower() == b"content-encoding":
                encoding = value.decode("latin-1").strip().lower()
        if encoding in ("", "identity"):
            return body
        if encoding != "gzip":
            raise BodyError(400, f"Unsupported Content-Encoding '{encoding}'")
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out = decoder.decompress(body, self.max_body_bytes + 1)
        except zlib.error as e:
            raise BodyError(400, f"Could not gunzip the request body: {e}") from e
        if len(out) > self.max_body_bytes or decoder.unconsumed_tail:
            raise BodyError(
                413, f"Decompressed request body exceeds the limit of {self.max_body_bytes} bytes"
            )
        return out

    async def _route(self, scope: Scope, receive: Receive) -> Reply:
        method = scope["method"].upper()
        path = scope["path"]
        raw_path = (scope.get("raw_path") or path.encode()).decode("latin-1")
        params = dict(
            parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        )
        if path == "/ApplicationStatus":
            return self._only_get(method, path) or self._application_status()
        if path == "/state/v1/health":
            return self._only_get(method, path) or Reply(
                200, {"time": int(time.time() * 1000), "status": {"code": "up"}}
            )
        if path in ("/search/", "/search"):
            if method not in ("GET", "POST"):
                return search_error(
                    405, 4, f"'{method}' not allowed at '{path}'. Allowed methods are: GET, POST"
                )
            try:
                body = await self._read_body(scope, receive)
            except BodyError as e:
                return search_error(e.status, 4, str(e))
            return await self._search(params, body)
        if path.startswith("/document/v1"):
            try:
                body = await self._read_body(scope, receive)
            except BodyError as e:
                return Reply(e.status, {"pathId": raw_path, "message": str(e)})
            return await self.documents.handle(method, raw_path, params, body)
        return Reply(404, {"code": 404, "message": f"Nothing at '{path}'"})

    @staticmethod
    def _only_get(method: str, path: str) -> Reply | None:
        if method in ("GET", "HEAD"):
            return None
        return Reply(
            405,
            {
                "code": 405,
                "message": f"'{method}' not allowed at '{path}'. Allowed methods are: GET",
            },
        )

    def _application_status(self) -> Reply:
        return Reply(
            200,
            {
                "application": {"meta": {"name": self.application_name, "generation": 1}},
                "engine": "vespa_app embedded engine",
                "uptime_seconds": round(time.time() - self.started, 3),
                # vectors acknowledged but not yet in their HNSW graph (exact-searched meanwhile)
                "pending_vectors": self.search.pending_vectors() if self.search else 0,
            },
        )

    async def _search(self, params: dict[str, str], raw_body: bytes) -> Reply:
        body: dict[str, Any] | None = None
        if raw_body.strip():
            try:
                body = json.loads(raw_body)
            except (ValueError, UnicodeDecodeError) as e:
                return search_error(400, 3, f"Could not parse the JSON request body: {e}")
            if not isinstance(body, dict):
                return search_error(400, 3, "The JSON request body must be an object")
        if self.search is None:
            return search_error(
                500, 18, "Unsupported by local engine: /search/ (search module not installed)"
            )
        with self._queries_lock:
            if self._queries_in_flight >= self.max_queued_queries:
                return search_error(
                    503, 18, f"Overloaded: {self._queries_in_flight} queries in flight"
                )
            self._queries_in_flight += 1
        try:
            loop = asyncio.get_running_loop()
            status, result = await loop.run_in_executor(
                self._search_pool, self.search.search, params, body
            )
        except Exception as e:
            log.exception("search failed")
            return search_error(500, 18, f"Internal error while searching: {e}")
        finally:
            with self._queries_lock:
                self._queries_in_flight -= 1
        return Reply(status, result)
