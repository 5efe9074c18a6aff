"""Embedded Vespa engine at scale: feed rate, memory, start-up, recall and HTTP latency vs faiss.

One run, on the scale package of benchmarks/vespa_fixtures.py (product schema, HNSW M=16,
efConstruction 200, prenormalized-angular) with clustered unit-norm vectors (anchors §5.3):

1. `--docs - --http-docs` documents go through the engine's own write path in-process
   (DocumentStore.put: op log, group commit, fdatasync, snapshot on close), because a full feed
   over HTTP takes too long on the 2-core machine; the engine process then starts on them
   (snapshot load + full HNSW build: "start-up, graph rebuilt").
2. The last `--http-docs` documents are fed over HTTP with pyvespa: half with `feed_iterable`
   (HTTP/1.1, 8 workers), half with `feed_async_iterable` (HTTP/2, 64 streams). The rates are
   acknowledged documents per second; "indexed" adds the time until every vector is in the graph
   (`pending_vectors` of /ApplicationStatus reaches 0).
3. Memory: engine process RSS with all documents, minus an empty engine's RSS, per million.
4. Recall@10 of the returned top 10 against exact top 10 (numpy), targetHits 10 and 100,
   unfiltered and with `bucket < 10` (10% of documents) and `bucket < 1` (1%: exact search).
5. Latency over HTTP (keep-alive POSTs of `{targetHits:100}nearestNeighbor`, profile
   `retrieval` = closeness first-phase, 10 hits, summary `ids`) at 1 and 8 concurrent clients.
6. The engine is stopped cleanly (graph persisted) and restarted: "start-up, graph loaded".
7. The same queries in-process on the persisted faiss graph with the engine's efSearch: the
   engine's overhead as a latency ratio.
8. Isotropic vectors (the structureless hard case, for honesty): recall of the same queries on
   `--isotropic-docs` documents through the in-process engine (MemoryStore, same matcher).

Reproduce: `python -m benchmarks.vespa_scale --docs 1000000 --dim 64` and
`python -m benchmarks.vespa_scale --docs 100000 --dim 384`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS_DIR, write_results
from benchmarks.vespa_fixtures import (
    scale_buckets,
    scale_document,
    scale_queries,
    scale_vectors,
    write_scale_package,
)
from vespa_app.engine.memory_store import MemoryStore

ROOT = Path(__file__).resolve().parents[1]
FILTERS = {"none": None, "10%": 10, "1%": 1}
FEED_METHOD = (
    "{bulk} documents were put in-process through DocumentStore (op log, group commit, "
    "fdatasync, snapshot) because a full HTTP feed is impractical on the shared 2-core machine; "
    "the engine process then started on them (graph built at start-up) and the last {http} "
    "documents were fed over HTTP with pyvespa (half feed_iterable, half feed_async_iterable)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    """`python -m vespa_app serve` as a child process; `start_s` = spawn to health 200."""

    def __init__(self, package: Path, data: Path, log_path: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        t = time.perf_counter()
        self._log = open(log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vespa_app", "serve", "--package", str(package),
             "--data", str(data), "--port", str(self.port), "--log-level", "WARNING"],
            cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"engine exited with {self.proc.returncode}; see {log_path}")
            try:
                with urllib.request.urlopen(self.url + "/state/v1/health", timeout=5):
                    break
            except OSError:
                time.sleep(0.2)
        self.start_s = time.perf_counter() - t

    def status(self) -> dict:
        with urllib.request.urlopen(self.url + "/ApplicationStatus", timeout=30) as r:
            return json.loads(r.read())

    def wait_indexed(self) -> None:
        while self.status().get("pending_vectors", 0):
            time.sleep(0.5)

    def rss_mib(self) -> float:
        return _rss_mib(self.proc.pid)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=600)
        self._log.close()


def _load_in_process(package: Path, data: Path, vecs, buckets, n: int) -> float:
    """Put documents 0..n-1 through DocumentStore (the engine's write path); returns seconds."""
    from vespa_app.engine.app import load_package_schemas
    from vespa_app.engine.values import convert_document

    schemas = load_package_schemas(package)
    from vespa_app.engine.store import DocumentStore

    store = DocumentStore(data, schemas, max_pending=4096)
    t = time.perf_counter()
    futures = []
    for i in range(n):
        doc = scale_document(i, vecs[i], buckets[i])
        fields, _ = convert_document(schemas["product"], "product", doc, False)
        futures.append(store.put("product", f"P{i}", fields))
        if len(futures) >= 2048:
            for f in futures:
                f.result()
            futures = []
    for f in futures:
        f.result()
    elapsed = time.perf_counter() - t
    store.close()  # final snapshot
    return elapsed


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _feed_http(server: Server, vecs, buckets, lo: int, hi: int, use_async: bool) -> dict:
    from vespa.application import Vespa

    app = Vespa(url="http://127.0.0.1", port=server.port)
    failed: list[int] = []

    def callback(response, _id) -> None:
        if not response.is_successful():
            failed.append(response.status_code)

    docs = (
        {"id": f"P{i}", "fields": scale_document(i, vecs[i], buckets[i])} for i in range(lo, hi)
    )
    t, cpu = time.perf_counter(), _cpu_s(server.proc.pid)
    if use_async:
        app.feed_async_iterable(docs, schema="product", callback=callback)
    else:
        app.feed_iterable(docs, schema="product", callback=callback)
    elapsed = time.perf_counter() - t
    # engine CPU per acknowledged document (HTTP, parsing, log, index) while the feed ran: on a
    # machine with free cores the ack rate approaches 1000 / (this + the client's CPU per doc)
    cpu_ms = (_cpu_s(server.proc.pid) - cpu) * 1000 / (hi - lo)
    return {"docs": hi - lo, "seconds": round(elapsed, 2), "docs_per_s": round((hi - lo) / elapsed),
            "failed": len(failed), "engine_cpu_ms_per_doc": round(cpu_ms, 2)}  # fmt: skip


def _body(q: np.ndarray, target: int, bucket_lt: int | None, hits: int = 10) -> bytes:
    where = f"{{targetHits:{target}}}nearestNeighbor(embedding, q)"
    if bucket_lt is not None:
        where += f" and bucket < {bucket_lt}"
    return json.dumps({
        "yql": f"select * from product where {where}",
        "input.query(q)": [round(float(x), 7) for x in q],
        "ranking.profile": "retrieval",
        "presentation.summary": "ids",
        "hits": hits,
        "timeout": "20s",
    }).encode()  # fmt: skip


class Client:
    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def search(self, body: bytes) -> dict:
        self.conn.request("POST", "/search/", body, {"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        out = json.loads(resp.read())
        if resp.status != 200:
            raise RuntimeError(f"search answered {resp.status}: {out}")
        return out


def _ids(result: dict) -> list[int]:
    return [int(h["fields"]["product_id"][1:]) for h in result["root"].get("children", [])]


def _exact_top(vecs, buckets, q: np.ndarray, bucket_lt: int | None, k: int = 10) -> set[int]:
    scores = vecs @ q
    if bucket_lt is not None:
        scores = np.where(buckets < bucket_lt, scores, -np.inf)
    top = np.argpartition(-scores, k)[:k]
    return set(top.tolist())


def _recall(search, vecs, buckets, queries) -> dict:
    out = {}
    for name, bucket_lt in FILTERS.items():
        for target in (10, 100):
            r = []
            for q in queries:
                got = set(search(_body(q, target, bucket_lt)))
                r.append(len(got & _exact_top(vecs, buckets, q, bucket_lt)) / 10)
            out[f"target{target}_{name}"] = round(float(np.mean(r)), 4)
    return out


def _latency(port: int, queries, clients: int, per_client: int) -> dict:
    bodies = [_body(q, 100, None) for q in queries]
    lat: list[float] = []
    lock = threading.Lock()

    def run(offset: int) -> None:
        c = Client(port)
        c.search(bodies[offset % len(bodies)])  # warm the connection
        mine = []
        for i in range(per_client):
            b = bodies[(offset + i) % len(bodies)]
            t = time.perf_counter()
            c.search(b)
            mine.append((time.perf_counter() - t) * 1000)
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=run, args=(j * 997,)) for j in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    return {
        "clients": clients,
        "queries": len(lat),
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "qps": round(len(lat) / wall, 1),
    }


def _faiss_direct(graph: Path, queries, ef: int) -> dict:
    import faiss

    faiss.omp_set_num_threads(1)
    index = faiss.read_index(str(graph))
    params = faiss.SearchParametersHNSW()
    params.efSearch = ef
    lat = []
    for q in queries:
        t = time.perf_counter()
        index.search(q.reshape(1, -1), 100, params=params)
        lat.append((time.perf_counter() - t) * 1000)
    return {"queries": len(lat), "ef_search": ef, "p50_ms": round(float(np.percentile(lat, 50)), 3),
            "p99_ms": round(float(np.percentile(lat, 99)), 3)}  # fmt: skip


def _isotropic_recall(package: Path, n: int, dim: int, nq: int) -> dict:
    """Recall through the in-process engine (MemoryStore) on isotropic vectors."""
    from vespa_app.engine.app import load_package_schemas
    from vespa_app.engine.search import SearchEngine

    schemas = load_package_schemas(package)
    store = MemoryStore(schemas)
    vecs = scale_vectors(n, dim, "isotropic", seed=10)
    buckets = scale_buckets(n, seed=11)
    for i in range(n):
        doc = scale_document(i, vecs[i], buckets[i])
        doc["embedding"] = vecs[i]
        store.put("product", f"P{i}", doc)
    t = time.perf_counter()
    engine = SearchEngine(schemas, store, package, {})
    build = time.perf_counter() - t
    queries = scale_queries(vecs, nq, "isotropic", seed=12)

    def search(body: bytes) -> list[int]:
        status, out = engine.search({}, json.loads(body))
        assert status == 200, out
        return _ids(out)

    res = {"docs": n, "graph_build_s": round(build, 1), "queries": nq}
    res["recall_at_10"] = _recall(search, vecs, buckets, queries)
    engine.close()
    return res


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=100_000, help="documents (default 100000)")
    parser.add_argument("--dim", type=int, default=64, help="embedding width (default 64)")
    parser.add_argument(
        "--http-docs",
        type=int,
        default=None,
        help="documents fed over HTTP (default min(docs, 40000))",
    )
    parser.add_argument("--queries", type=int, default=200, help="recall queries (default 200)")
    parser.add_argument(
        "--latency-queries",
        type=int,
        default=500,
        help="timed queries per client count (default 500)",
    )
    parser.add_argument(
        "--isotropic-docs",
        type=int,
        default=None,
        help="documents for the isotropic recall check (default min(docs, 100000))",
    )
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="keep data here (default: temp)"
    )
    args = parser.parse_args(argv)
    http_docs = min(args.docs, args.http_docs if args.http_docs is not None else 40_000)
    iso_docs = args.isotropic_docs if args.isotropic_docs is not None else min(args.docs, 100_000)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="vespa_scale_"))
    if work.exists():
        shutil.rmtree(work)
    package = write_scale_package(work / "package", args.dim)
    data = work / "data"
    log_path = work / "engine.log"
    res: dict = {"docs": args.docs, "dim": args.dim, "vectors": "clustered unit-norm, 2000 centres",
                 "hnsw": "faiss IndexHNSWFlat M=16 efConstruction=200, inner product"}  # fmt: skip

    vecs = scale_vectors(args.docs, args.dim, "clustered")
    buckets = scale_buckets(args.docs)
    queries = scale_queries(vecs, max(args.queries, 64), "clustered")

    empty = Server(package, work / "empty", log_path)
    res["empty_engine_rss_mib"] = round(empty.rss_mib(), 1)
    empty.stop()

    bulk = args.docs - http_docs
    res["feed_method"] = FEED_METHOD.format(bulk=bulk, http=http_docs)
    print(f"{bulk} documents through the store write path in-process ...", flush=True)
    seconds = _load_in_process(package, data, vecs, buckets, bulk)
    res["in_process_store_feed"] = {"docs": bulk, "seconds": round(seconds, 1),
                                    "docs_per_s": round(bulk / max(seconds, 1e-9))}  # fmt: skip

    print("starting the engine (snapshot load + graph build) ...", flush=True)
    server = Server(package, data, log_path)
    res["startup_rebuild_graph_s"] = {"docs": bulk, "seconds": round(server.start_s, 1)}
    half = bulk + http_docs // 2
    print(f"feeding {http_docs} documents over HTTP ...", flush=True)
    sync = _feed_http(server, vecs, buckets, bulk, half, use_async=False)
    t = time.perf_counter()
    asyn = _feed_http(server, vecs, buckets, half, args.docs, use_async=True)
    server.wait_indexed()
    asyn["seconds_until_indexed"] = round(time.perf_counter() - t, 2)
    print(f"feed_iterable {sync}\nfeed_async_iterable {asyn}", flush=True)
    res["http_feed"] = {"feed_iterable": sync, "feed_async_iterable": asyn,
                        "note": f"fed on top of {bulk} stored documents; rates are acknowledged "
                                "documents/s; the HNSW insert runs in the background"}  # fmt: skip
    rss = server.rss_mib()
    res["engine_rss_mib"] = round(rss, 1)
    res["memory_mib_per_million_docs"] = round(
        (rss - res["empty_engine_rss_mib"]) / args.docs * 1e6, 1
    )

    client = Client(server.port)
    print("recall ...", flush=True)
    res["recall_at_10_clustered"] = _recall(
        lambda b: _ids(client.search(b)), vecs, buckets, queries[: args.queries]
    )
    print("latency ...", flush=True)
    res["latency_http"] = [
        _latency(server.port, queries, clients, args.latency_queries // clients)
        for clients in (1, 8)
    ]
    server.stop()

    server = Server(package, data, log_path)
    res["startup_persisted_graph_s"] = {"docs": args.docs, "seconds": round(server.start_s, 1)}
    server.stop()

    from vespa_app.engine.search.matching import ef_search

    ef = ef_search(100, 0)
    direct = _faiss_direct(data / "index" / "product.embedding.faiss", queries[:500], ef)
    res["faiss_direct"] = direct
    one = res["latency_http"][0]
    res["engine_overhead_ratio_p50"] = round(one["p50_ms"] / max(direct["p50_ms"], 1e-9), 1)

    if iso_docs:
        print(f"isotropic recall on {iso_docs} documents in-process ...", flush=True)
        res["isotropic"] = _isotropic_recall(package, iso_docs, args.dim, min(args.queries, 100))

    print(json.dumps(res, indent=1))
    print(f"\n{'measure':<44} {'value':>12}")
    rows = [
        ("HTTP feed_iterable docs/s", res["http_feed"]["feed_iterable"]["docs_per_s"]),
        ("HTTP feed_async_iterable docs/s", asyn["docs_per_s"]),
        ("in-process store feed docs/s", res["in_process_store_feed"]["docs_per_s"]),
        ("engine RSS MiB", res["engine_rss_mib"]),
        ("MiB per million documents", res["memory_mib_per_million_docs"]),
        ("start-up, graph rebuilt s", res["startup_rebuild_graph_s"]["seconds"]),
        ("start-up, graph loaded s", res["startup_persisted_graph_s"]["seconds"]),
        *[(f"recall@10 clustered {k}", v) for k, v in res["recall_at_10_clustered"].items()],
        *[(f"HTTP {x['clients']} client(s) p50/p99 ms", f"{x['p50_ms']}/{x['p99_ms']}")
          for x in res["latency_http"]],
        ("faiss direct p50/p99 ms", f"{direct['p50_ms']}/{direct['p99_ms']}"),
        ("engine overhead (p50 ratio)", res["engine_overhead_ratio_p50"]),
    ]  # fmt: skip
    if "isotropic" in res:
        rows += [(f"recall@10 isotropic {k}", v)
                 for k, v in res["isotropic"]["recall_at_10"].items()]  # fmt: skip
    for name, value in rows:
        print(f"{name:<44} {value!s:>12}")
    # one results file for both reference runs: each run keeps its own reproduce command
    previous = RESULTS_DIR / "vespa_scale.json"
    runs = json.loads(previous.read_text()).get("runs", {}) if previous.exists() else {}
    res["command"] = "python -m benchmarks.vespa_scale " + " ".join(sys.argv[1:])
    runs[f"{args.docs}x{args.dim}"] = res
    path = write_results("vespa_scale", {"runs": runs})
    print(f"wrote {path}")
    if args.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    os.sync()


if __name__ == "__main__":
    main()
