"""Where the CPU of one recommendation request goes: engine calls, HTTP layer, client.

Issue 7's load target is bound by CPU per request (2 cores, several clients), so this benchmark
splits one request's CPU on the load benchmark's build (artifacts/pipeline_load/, built by
``python -m benchmarks.pipeline_load`` when missing): 100k products, 10k users.

1. In process, one request at a time: the engine (``Engine`` on the build's data folder) answers
   the pipeline's Vespa calls directly (same ``VespaClient`` code above the transport, no HTTP),
   so each call's engine CPU is measured on its own, per call kind (user document, history
   lookup, ANN ranking query, walk ranking query, popularity), and the rest of the request is
   the client (pipeline + re-ranker). Separately per strategy (personalized, cold start).
2. Over HTTP: the engine server (``python -m vespa_app serve``) replays the same engine calls
   one at a time; its process CPU per call, minus the in-process figure, is the HTTP layer
   (hypercorn, the search thread hand-off, reply encoding is in both).

The API's own layer (Flask, Werkzeug, its HTTP client) is not in either figure: compare with
``cpu_ms_per_request`` of the load benchmark.

    python -m benchmarks.request_cost [--requests 80] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import http.client
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import vespa_app.math_threads  # noqa: F401  (before numpy: one BLAS thread, as served)

# isort: split

import orjson

from benchmarks import pipeline_load as load
from vespa_app.client.pipeline import (
    PipelineConfig,
    RecommendationContext,
    RecommendationPipeline,
    load_retrieval_weight,
)
from vespa_app.client.rerank import Reranker
from vespa_app.client.vespa import VespaClient, _Reply
from vespa_app.engine.reply import Reply

NAME = "request_cost"
SERIALIZE = orjson.OPT_SERIALIZE_NUMPY  # request bodies hold numpy vectors


def call_kind(method: str, path: str, body: Any) -> str:
    if method == "GET":
        return "get " + path.split("/")[3]  # /document/v1/<type>/...
    yql = str((body or {}).get("yql", ""))
    if "walk" in (body or {}):
        return "walk ranking query"
    if "nearestNeighbor" in yql:
        return "ANN ranking query"
    if "(@ids)" in yql:
        return "history lookup"
    return "other query (" + str((body or {}).get("ranking.profile", "default")) + ")"


class InProcessVespa(VespaClient):
    """The pipeline's Vespa client with the engine called in process instead of over HTTP;
    records every call (kind, method, path, body) and its CPU."""

    def __init__(self, engine: Any) -> None:
        super().__init__("http://in-process")
        self.engine = engine
        self.loop = asyncio.new_event_loop()
        self.calls: list[tuple[str, str, str, Any, float]] = []

    def _request(self, what, method, path, json=None, params=None):
        started = time.process_time()
        body = None if json is None else orjson.loads(orjson.dumps(json, option=SERIALIZE))
        if method == "POST" and path == "/search/":
            status, out = self.engine.search.search({}, body)
            payload = Reply(status, out).encode()
        else:
            raw = b"" if body is None else orjson.dumps(body)
            query = {k: str(v) for k, v in (params or {}).items()}
            reply = self.loop.run_until_complete(
                self.engine.app.documents.handle(method, path, query, raw)
            )
            status, payload = reply.status, reply.encode()
        spent = time.process_time() - started
        self.calls.append((call_kind(method, path, body), method, path, body, spent))
        return _Reply(status, payload)


def in_process(built: load.Built, users: list[str]) -> tuple[dict[str, Any], list[tuple]]:
    from vespa_app.engine.app import Engine, EngineConfig

    engine = Engine(EngineConfig(package_dir=built.package, data_dir=built.data))
    try:
        gc.collect()
        gc.freeze()  # as the servers do (vespa_app/gc_freeze.py)
        client = InProcessVespa(engine)
        config = PipelineConfig(
            locations=tuple(built.info["locations"]),
            retrieval_weight=load_retrieval_weight(built.export),
        )
        pipeline = RecommendationPipeline.from_export(client, built.export, Reranker(), config)
        pipeline._together = lambda calls: [call() for call in calls]  # one thread: clean split
        context = RecommendationContext(hour=12, device="mobile")
        for user in users:  # warm-up: compiled plans, caches, the summary cache
            pipeline.recommend(user, 50, context)
        per_strategy: dict[str, dict[str, Any]] = {}
        recorded: list[tuple] = []
        for user in users:
            client.calls.clear()
            started = time.process_time()
            result = pipeline.recommend(user, 50, context)
            total = time.process_time() - started
            entry = per_strategy.setdefault(
                result.strategy, {"requests": 0, "total": 0.0, "calls": defaultdict(float)}
            )
            entry["requests"] += 1
            entry["total"] += total
            for kind, *_, spent in client.calls:
                entry["calls"][kind] += spent
            recorded += client.calls
        return _summary(per_strategy), recorded
    finally:
        engine.close()


def _summary(per_strategy: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for strategy, entry in per_strategy.items():
        n = entry["requests"]
        calls = {kind: round(1000 * s / n, 2) for kind, s in sorted(entry["calls"].items())}
        engine = sum(entry["calls"].values())
        out[strategy] = {
            "requests": n,
            "cpu_ms_per_request": round(1000 * entry["total"] / n, 2),
            "engine_ms": round(1000 * engine / n, 2),
            "client_ms": round(1000 * (entry["total"] - engine) / n, 2),
            "engine_calls_ms": calls,
        }
    return out


def over_http(built: load.Built, calls: list[tuple], repeats: int) -> dict[str, float]:
    """The engine server's process CPU per call, by kind (ms), replaying ``calls``."""
    port = load.free_port()
    server = load.start_engine(built, port)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

        def send(method: str, path: str, body: Any) -> None:
            data = None if body is None else orjson.dumps(body, option=SERIALIZE)
            headers = {"Content-Type": "application/json"} if data is not None else {}
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status not in (200, 404):
                raise RuntimeError(f"{method} {path}: HTTP {response.status}")

        for _, method, path, body, _ in calls:  # warm-up
            send(method, path, body)
        by_kind: dict[str, list[tuple]] = defaultdict(list)
        for call in calls:
            by_kind[call[0]].append(call)
        out = {}
        for kind, group in sorted(by_kind.items()):
            before = load.cpu_seconds(server.pid)
            for _ in range(repeats):
                for _, method, path, body, _ in group:
                    send(method, path, body)
            spent = load.cpu_seconds(server.pid) - before
            out[kind] = round(1000 * spent / (repeats * len(group)), 2)
        conn.close()
        return out
    finally:
        load.stop(server)


def per_call(calls: list[tuple]) -> dict[str, float]:
    """In-process engine CPU per call, by kind (ms)."""
    spent: dict[str, list[float]] = defaultdict(list)
    for kind, *_, seconds in calls:
        spent[kind].append(seconds)
    return {kind: round(1000 * sum(v) / len(v), 2) for kind, v in sorted(spent.items())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.request_cost", description=__doc__)
    p.add_argument("--requests", type=int, default=80, help="users measured (80)")
    p.add_argument("--repeats", type=int, default=3, help="HTTP replays of every call (3)")
    p.add_argument("--folder", type=Path, default=None, help="artifacts/pipeline_load")
    p.add_argument("--out", default=NAME, help="results name (request_cost)")
    args = p.parse_args(argv)
    from trainer.paths import artifacts_dir

    folder = args.folder or artifacts_dir() / load.NAME
    built = load.build(folder, 100_000, 10_000, rebuild=False)
    if not built.info.get("fed"):
        port = load.free_port()
        server = load.start_engine(built, port)
        try:
            load.feed_once(built, f"http://127.0.0.1:{port}")
        finally:
            load.stop(server)
    # as the load benchmark: its known users, a quarter of them personalized
    users = load.known_users(built, args.requests, seed=1)
    in_proc, calls = in_process(built, users)
    http_ms = over_http(built, calls, args.repeats)
    in_proc_ms = per_call(calls)
    http_layer = {k: round(http_ms[k] - in_proc_ms[k], 2) for k in http_ms if k in in_proc_ms}
    result = {
        "setup": {"products": built.info["products"], "users": built.info["users"],
                  "requests": args.requests, "repeats": args.repeats},
        "in_process": in_proc,
        "engine_cpu_ms_per_call": {"in_process": in_proc_ms, "over_http": http_ms,
                                   "http_layer": http_layer},
    }  # fmt: skip
    for strategy, s in in_proc.items():
        print(
            f"{strategy}: {s['requests']} requests, CPU {s['cpu_ms_per_request']} ms per request "
            f"= engine {s['engine_ms']} + client {s['client_ms']}"
        )
        for kind, ms in s["engine_calls_ms"].items():
            print(f"    {kind:28s} {ms:7.2f} ms per request")
    print("engine CPU per call: kind, in process, over HTTP, HTTP layer")
    for kind in sorted(http_ms):
        print(f"    {kind:28s} {in_proc_ms.get(kind, 0):7.2f} {http_ms[kind]:7.2f} "
              f"{http_layer.get(kind, 0):7.2f}")  # fmt: skip
    from benchmarks.common import write_results

    print(f"wrote {write_results(args.out, result, module=NAME)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
