"""A small synchronous Vespa client: read a document, search, partial update.

It speaks the HTTP API of Vespa 8 (and of the embedded engine, docs/vespa-subset.md §3-§4) over
httpx with one pooled connection set, so a webapp worker reuses connections between requests.
Every failure becomes one of three exceptions with the request and Vespa's own message, so
callers can tell "the document is not there" (``None`` from :meth:`VespaClient.get_document`)
from "Vespa refused the request" (:class:`VespaQueryError`) from "Vespa did not answer"
(:class:`VespaUnavailable`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import orjson


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


def _messages(response: httpx.Response) -> list[str]:
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
    """Thread-safe (httpx.Client is): one instance per process is enough."""

    def __init__(self, base_url: str, timeout: float = 2.0, max_connections: int = 16) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"vespa url must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_connections),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> VespaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, what: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as e:
            raise VespaUnavailable(
                f"{what}: no answer from {self.base_url} in {self.timeout}s"
            ) from e
        except httpx.HTTPError as e:
            raise VespaUnavailable(f"{what}: {self.base_url} unreachable: {e}") from e

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
            payload = orjson.loads(response.content)  # several times faster than json on 500 hits
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
