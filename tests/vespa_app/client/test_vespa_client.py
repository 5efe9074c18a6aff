"""VespaClient's transport: failures map to the client's exceptions, bodies round-trip."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from vespa_app.client.vespa import VespaClient, VespaQueryError, VespaUnavailable


class _Echo(BaseHTTPRequestHandler):
    """Answers every request with what it received; 404 for documents named 'missing'."""

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path.endswith("/missing"):
            self.send_response(404)
            payload = b'{"message": "not found"}'
        elif "/search/" in self.path and json.loads(body).get("yql") == "bad":
            self.send_response(400)
            payload = b'{"root": {"errors": [{"code": 4, "message": "bad yql"}]}}'
        else:
            self.send_response(200)
            received = {"path": self.path, "method": self.command, "body": body.decode()}
            payload = json.dumps({"root": {"fields": received}, "fields": received}).encode()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass


@pytest.fixture(scope="module")
def echo_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_requests_carry_path_prefix_query_and_json_body(echo_url):
    with VespaClient(echo_url + "/vespa/", timeout=5.0) as client:
        fields = client.get_document("user", "u 1")
        assert fields["path"] == "/vespa/document/v1/user/user/docid/u%201"
        payload = client.search({"yql": "select * from product where true", "q": np.float32(0.5)})
        sent = json.loads(payload["root"]["fields"]["body"])
        assert sent["yql"] == "select * from product where true" and sent["q"] == 0.5
        assert sent["timeout"] == "5.0s"
        client.update_document("user", "u1", {"recent_product_ids": ["p1"]})


def test_missing_document_is_none_and_vespa_errors_name_their_message(echo_url):
    with VespaClient(echo_url) as client:
        assert client.get_document("user", "missing") is None
        with pytest.raises(VespaQueryError, match=r"ranking query: HTTP 400: bad yql"):
            client.search({"yql": "bad"}, what="ranking query")


def test_a_server_that_never_answers_is_a_timeout():
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts connections, never reads or answers
    try:
        client = VespaClient(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.3)
        with pytest.raises(VespaUnavailable, match=r"no answer from .* in 0\.3s"):
            client.search({"yql": "select * from product where true"})
    finally:
        silent.close()


def test_refused_connection_is_unreachable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    client = VespaClient(f"http://127.0.0.1:{port}", timeout=0.5)
    with pytest.raises(VespaUnavailable, match="unreachable"):
        client.get_document("user", "u1")
