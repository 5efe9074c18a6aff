"""A small synchronous Vespa client: read a document, search, partial update.

It speaks the HTTP API of Vespa 8 (and of the embedded engine, docs/vespa-subset.md §3-§4) over
one urllib3 connection pool, so a webapp worker reuses connections between requests. urllib3
rather than httpx: receiving a 500-hit reply (~190 KB) costs ~0.2 ms of CPU with it against
~0.8 ms with httpx, and a recommendation makes up to four such round trips on a 2-core machine
(docs/serving-latency.md). JSON is written and read with orjson.
Every failure becomes one of three exceptions with the request and Vespa's own message, so
callers can tell "the document is not there" (``None`` from :meth:`VespaClient.get_document`)
from "Vespa refused the request" (:class:`VespaQueryError`) from "Vespa did not answer"
(:class:`VespaUnavailable`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import orjson
import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError, TimeoutError


class VespaError(RuntimeError):
    """Base class: a request to Vespa failed."""


class VespaUnavailable(VespaError):
    """No answer: connection refused, reset or timed out."""


class VespaQueryError(VespaError):
    """Vespa answered with an error (HTTP status and its messages)."""

    def __init__(self, what: str, status: int, messages: list[str]) -> None:
        self.status = status
        self.messages = messages
        super().__init__(f"{what}: HTTP {status}: {'; '.join(messages) or 'no message'}")


@dataclass(frozen=True)
class _Reply:
    status_code: int
    content: bytes

    def json(self) -> Any:
        return orjson.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


def _messages(response: _Reply) -> list[str]:
    try:
        body = response.json()
    except ValueError:
        return [response.text[:200]]
    if isinstance(body, dict):
        errors = (body.get("root") or {}).get("errors")
        if errors:
            return [str(e.get("message") or e.get("summary") or e) for e in errors]
        if "message" in body:
            return [str(body["message"])]
    return [str(body)[:200]]


class VespaClient:
    """Thread-safe (urllib3's pool is): one instance per process is enough."""

    def __init__(self, base_url: str, timeout: float = 2.0, max_connections: int = 16) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"vespa url must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._prefix = urlsplit(self.base_url).path  # a base URL may carry a path
        # One retry of the connection only: a pooled keep-alive connection the server closed
        # is re-opened, but a request that may have reached Vespa is never sent twice.
        retries = urllib3.Retry(total=1, connect=1, read=0, redirect=0, status=0, other=0)
        self._pool = urllib3.connection_from_url(
            self.base_url,
            maxsize=max_connections,
            timeout=urllib3.Timeout(total=timeout),
            retries=retries,
        )

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> VespaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(
        self,
        what: str,
        method: str,
        path: str,
        json: Any = None,
        params: dict[str, str] | None = None,
    ) -> _Reply:
        url = self._prefix + path + ("?" + urlencode(params) if params else "")
        headers = {"Accept": "application/json"}
        body = None
        if json is not None:
            body = orjson.dumps(json, option=orjson.OPT_SERIALIZE_NUMPY)
            headers["Content-Type"] = "application/json"
        try:
            response = self._pool.urlopen(
                method, url, body=body, headers=headers, preload_content=True
            )
        except urllib3.exceptions.MaxRetryError as e:
            raise self._unavailable(what, e.reason or e) from e
        except HTTPError as e:
            raise self._unavailable(what, e) from e
        return _Reply(response.status, response.data)

    def _unavailable(self, what: str, error: BaseException) -> VespaUnavailable:
        # NewConnectionError subclasses the connect timeout in urllib3 2: test it first.
        if isinstance(error, TimeoutError) and not isinstance(error, NewConnectionError):
            return VespaUnavailable(f"{what}: no answer from {self.base_url} in {self.timeout}s")
        return VespaUnavailable(f"{what}: {self.base_url} unreachable: {error}")

    @staticmethod
    def _doc_path(doc_type: str, doc_id: str) -> str:
        # namespace = document type, as model_export.feed writes them
        return f"/document/v1/{doc_type}/{doc_type}/docid/{quote(doc_id, safe='')}"

    def get_document(self, doc_type: str, doc_id: str) -> dict[str, Any] | None:
        """The document's fields, or None when it does not exist."""
        what = f"get {doc_type} {doc_id!r}"
        response = self._request(what, "GET", self._doc_path(doc_type, doc_id))
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise VespaQueryError(what, response.status_code, _messages(response))
        return response.json().get("fields", {})

    def update_document(
        self, doc_type: str, doc_id: str, assign: dict[str, Any], create: bool = True
    ) -> None:
        """Partial update assigning ``assign``'s fields; ``create`` makes a missing document."""
        what = f"update {doc_type} {doc_id!r}"
        body = {"fields": {name: {"assign": value} for name, value in assign.items()}}
        params = {"create": "true" if create else "false"}
        response = self._request(
            what, "PUT", self._doc_path(doc_type, doc_id), json=body, params=params
        )
        if response.status_code != 200:
            raise VespaQueryError(what, response.status_code, _messages(response))

    def search(self, body: dict[str, Any], what: str = "search") -> dict[str, Any]:
        """The response's ``root`` (and ``timing`` when asked); any error in it raises."""
        body = {"timeout": f"{self.timeout}s", **body}
        response = self._request(what, "POST", "/search/", json=body)
        try:
            payload = response.json()
        except ValueError:
            raise VespaQueryError(what, response.status_code, [response.text[:200]]) from None
        root = payload.get("root", {}) if isinstance(payload, dict) else {}
        # 200 with errors happens when some hits came back: still an error for this client,
        # whose queries touch one schema, so partial answers would hide a broken profile.
        if response.status_code != 200 or root.get("errors"):
            raise VespaQueryError(what, response.status_code, _messages(response))
        return payload

    @staticmethod
    def hits(payload: dict[str, Any]) -> list[dict[str, Any]]:
        return payload.get("root", {}).get("children", [])
