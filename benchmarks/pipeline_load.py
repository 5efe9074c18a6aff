"""Load benchmark of GET /api/recommendations over the embedded engine with 100k products.

Issue 7's serving target: several concurrent clients on this 2-core machine, p99 at most 50 ms
end to end. The build step (cached under artifacts/pipeline_load/, ``--rebuild`` redoes it):

1. a synthetic marketplace with 100k products and a modest user base (``ScaleConfig``),
2. a 128-d BPR-MF (a few epochs: realistic embeddings, quality does not matter here) and a small
   ranker over its item embeddings, the recipe of tests/webapp/served.py,
3. ``python -m model_export ... --install`` into a COPY of the package,
4. the engine started on that copy with its data folder under the artifacts, fed once
   (model_export.feed); later runs replay the engine's log and persisted HNSW graph.

Then the webapp (Werkzeug threaded by default, ``--server hypercorn`` for hypercorn) and
``--clients`` threads each sending requests for random known users, one at a time, for
``--duration`` seconds after ``--warmup`` seconds. Reported: end-to-end p50/p90/p99/max,
throughput, errors, the API's per-stage ``latency_ms`` and Vespa's querytime, and the machine's
load average (the machine is shared, so a high load explains outliers).

Two load models. Closed loop (default): each client sends its next request as soon as the last
one is answered, so the system is always saturated and the run measures its capacity (latency
is then about clients / throughput). Open loop (``--rate R``): requests arrive at R per second
in all (Poisson arrivals, shared by the clients), and each latency is counted from the request's
scheduled arrival, so a request that waits for a busy client connection is charged that wait
(no coordinated omission): the latency a service-level target is stated at.

``--vespa-url URL`` runs the webapp against another engine, e.g. a real Vespa with the build's
package (``artifacts/pipeline_load/package``) deployed; ``--feed`` feeds it the build first.
Its CPU is then not measured (it is not a local process).

    nice -n 5 python -m benchmarks.pipeline_load [--clients 4] [--duration 60] [--rate R] \
        [--vespa-url URL [--feed]] [--rebuild]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NAME = "pipeline_load"
DIM = 128
HOURS = tuple(range(24))
# vespa_app.math_threads.MATH_THREAD_VARIABLES, named here because importing that module sets
# them to 1 in this process too, and the build step trains with torch here.
MATH_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
DEVICES = ("mobile", "desktop", "tablet")


@dataclasses.dataclass(frozen=True)
class Built:
    folder: Path
    dataset: Path
    export: Path
    package: Path
    data: Path  # the engine's data folder (log + persisted graphs)
    info: dict[str, Any]


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def build(folder: Path, products: int, users: int, rebuild: bool) -> Built:
    """Generate, train, export and install once; a finished build leaves build.json."""
    marker = folder / "build.json"
    if rebuild and folder.exists():
        shutil.rmtree(folder)
    if marker.exists():
        info = json.loads(marker.read_text())
        if info.get("products") == products and info.get("users") == users:
            return _built(folder, info)
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    import torch

    from model_export.cli import DEFAULT_PACKAGE, main
    from trainer.data.loaders import load_dataset
    from trainer.data.marketplace import save_marketplace
    from trainer.data.splits import split_dataset
    from trainer.data.synthetic import generate
    from trainer.data.synthetic.config import ScaleConfig
    from trainer.models.base import save_checkpoint
    from trainer.models.baselines.bpr_mf import BPRMF
    from trainer.models.ranker import Ranker, RankerConfig, save_ranker

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    scale = ScaleConfig(
        "load100k", num_users=users, num_products=products, num_sellers=max(products // 50, 1),
        chunk_users=users,
    )  # fmt: skip
    dataset = save_marketplace(generate(scale, 7), folder / "dataset")
    timings["generate_s"] = time.perf_counter() - t0
    _log(f"marketplace generated in {timings['generate_s']:.0f}s")

    t0 = time.perf_counter()
    data = split_dataset(load_dataset(dataset))
    torch.manual_seed(0)
    config = dataclasses.replace(
        BPRMF.test_config(), dim=DIM, epochs=3, batch_size=4096, time_budget=120.0
    )
    model = BPRMF(config, data.num_users, data.num_items)
    report = model.fit(data, progress=False)
    checkpoint = save_checkpoint(
        model, data, folder / "bprmf.pt", dataset_path=str(dataset),
        history=report.history, best_epoch=report.best_epoch,
    )  # fmt: skip
    timings["retrieval_train_s"] = time.perf_counter() - t0
    _log(f"BPR-MF trained in {timings['retrieval_train_s']:.0f}s")

    t0 = time.perf_counter()
    # The default architecture (what a real export serves), trained briefly: its serving cost
    # is what this benchmark measures, not its quality.
    ranker_config = RankerConfig(
        history_len=50, negatives=8, epochs=1, max_impressions=20_000, max_targets=20_000,
        patience=0, valid_users=500, time_budget=120.0,
    )  # fmt: skip
    ranker = Ranker(ranker_config, model.item_embeddings())
    ranker_report = ranker.fit(data, progress=False)
    ranker_path = save_ranker(
        ranker, folder / "ranker.pt", dataset_path=str(dataset), epochs=ranker_report["epochs"]
    )
    timings["ranker_train_s"] = time.perf_counter() - t0
    _log(f"ranker trained in {timings['ranker_train_s']:.0f}s")

    package = folder / "package"
    shutil.copytree(DEFAULT_PACKAGE, package)
    export = folder / "export"
    argv = ["--checkpoint", str(checkpoint), "--ranker", str(ranker_path), "--out", str(export)]
    if main([*argv, "--package", str(package), "--install"]) != 0:
        raise RuntimeError("model_export failed")
    events = load_dataset(dataset).events
    info = {
        "products": products,
        "users": users,
        "events": len(events),
        "locations": sorted(events["location"].dropna().unique().tolist()),
        "timings": {k: round(v, 1) for k, v in timings.items()},
        "fed": False,
    }
    marker.write_text(json.dumps(info, indent=2))
    return _built(folder, info)


def _built(folder: Path, info: dict[str, Any]) -> Built:
    return Built(
        folder, folder / "dataset", folder / "export", folder / "package", folder / "vespa-data",
        info,
    )  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, seconds: float, proc: subprocess.Popen) -> None:
    import httpx

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer in {seconds:.0f}s")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def start_engine(built: Built, port: int, search_threads: int | None = None) -> subprocess.Popen:
    argv = [
        sys.executable, "-m", "vespa_app", "serve", "--package", str(built.package),
        "--data", str(built.data), "--port", str(port),
    ]  # fmt: skip
    if search_threads is not None:
        argv += ["--search-threads", str(search_threads)]
    proc = subprocess.Popen(argv, cwd=ROOT, env=_env())
    _wait_http(f"http://127.0.0.1:{port}/state/v1/health", 900, proc)
    return proc


def feed_once(built: Built, url: str) -> None:
    """Feed the build into the embedded engine's data folder once (recorded in build.json)."""
    if built.info.get("fed"):
        return
    built.info["timings"]["feed_s"] = feed_build(built, url)
    built.info["fed"] = True
    (built.folder / "build.json").write_text(json.dumps(built.info, indent=2))


def feed_build(built: Built, url: str) -> float:
    """Feed the build's export (products, users, sellers) to the engine at ``url``; seconds."""
    from model_export.feed import feed
    from trainer.data.loaders import load_dataset

    t0 = time.perf_counter()
    report = feed(built.export, load_dataset(built.dataset), url, progress=False)
    if report.failures:
        raise RuntimeError(f"feed failures at {url}: {report.failures[:3]}")
    seconds = round(time.perf_counter() - t0, 1)
    _log(f"fed {url} in {seconds:.0f}s")
    return seconds


def start_webapp(
    built: Built,
    vespa_url: str,
    port: int,
    server: str,
    target_hits: int = 10_000,
    rank_hits: int = 500,
) -> subprocess.Popen:
    env = _env()
    env.update(
        VESPA_URL=vespa_url,
        MODEL_EXPORT_DIR=str(built.export),
        LOCATIONS=",".join(built.info["locations"]),
        EVENTS_DB=str(built.folder / "events.sqlite3"),
        TARGET_HITS=str(target_hits),
        RANK_HITS=str(rank_hits),
    )
    if server == "hypercorn":
        argv = [
            sys.executable, "-m", "hypercorn", "--bind", f"127.0.0.1:{port}",
            "--workers", "1", "webapp:create_app()",
        ]  # fmt: skip
    else:
        argv = [sys.executable, "-m", "webapp", "--port", str(port)]
    proc = subprocess.Popen(argv, cwd=ROOT, env=env)
    _wait_http(f"http://127.0.0.1:{port}/api/similar/__none__", 120, proc)
    return proc


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclasses.dataclass
class Sample:
    start: float
    ms: float
    status: int
    stages: dict[str, float]
    strategy: str | None
    degraded: bool


def _client(
    base: str,
    users: list[str],
    stop_at: float,
    seed: int,
    out: list[Sample],
    k: int,
    interval: float | None = None,
) -> None:
    """One client: a keep-alive connection, one request at a time. Closed loop when
    ``interval`` is None (the next request right after the last answer); else open loop:
    arrivals with exponential gaps of mean ``interval`` seconds, each latency counted from its
    scheduled arrival (a request that waits for this connection is charged the wait).
    http.client and orjson, not httpx: the clients share the 2 cores with the servers, so their
    own CPU per request (~0.5 ms here against ~1.7 ms with httpx) is taken from the system under
    test."""
    import http.client
    from urllib.parse import urlencode, urlsplit

    import orjson

    rng = random.Random(seed)
    address = urlsplit(base)
    conn = http.client.HTTPConnection(address.hostname, address.port, timeout=10.0)
    arrival = time.monotonic()
    try:
        while True:
            if interval is None:
                arrival = time.monotonic()
            else:
                arrival += rng.expovariate(1.0 / interval)
            if arrival >= stop_at:
                break
            params = {
                "user_id": rng.choice(users), "k": k, "hour": rng.choice(HOURS),
                "device": rng.choice(DEVICES),
            }  # fmt: skip
            if (wait := arrival - time.monotonic()) > 0:
                time.sleep(wait)
            t0 = arrival
            try:
                conn.request("GET", "/api/recommendations?" + urlencode(params))
                response = conn.getresponse()
                payload = response.read()
                status = response.status
                body = orjson.loads(payload) if status == 200 else {}
            except (OSError, http.client.HTTPException, ValueError):
                conn.close()  # reconnects on the next request
                status, body = 0, {}
            ms = (time.monotonic() - t0) * 1000
            out.append(
                Sample(
                    t0,
                    ms,
                    status,
                    body.get("latency_ms") or {},
                    body.get("strategy"),
                    bool(body.get("degraded")),
                )
            )
    finally:
        conn.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_load(
    base: str,
    users: list[str],
    clients: int,
    warmup: float,
    duration: float,
    k: int,
    rate: float | None = None,
) -> tuple[list[Sample], float, list[tuple[float, float, float]], int]:
    """Samples started (open loop: scheduled) inside the measured window, its length, load
    averages over it, and how many requests were sent in all (warm-up included). ``rate``:
    requests per second offered by all clients together (open loop); None: closed loop."""
    if rate is not None and not rate > 0:
        raise ValueError(f"rate must be positive, got {rate!r}")
    interval = None if rate is None else clients / rate
    samples: list[list[Sample]] = [[] for _ in range(clients)]
    start = time.monotonic()
    measure_from = start + warmup
    stop_at = measure_from + duration
    threads = [
        threading.Thread(target=_client, args=(base, users, stop_at, i, samples[i], k, interval))
        for i in range(clients)
    ]
    for t in threads:
        t.start()
    loads = []
    while any(t.is_alive() for t in threads):
        time.sleep(1.0)
        if time.monotonic() >= measure_from:
            loads.append(os.getloadavg())
    for t in threads:
        t.join()
    flat = [s for per in samples for s in per if s.start >= measure_from]
    return flat, duration, loads, sum(len(per) for per in samples)


def _pct(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    a = np.asarray(values)
    return {
        "p50": round(float(np.percentile(a, 50)), 2),
        "p90": round(float(np.percentile(a, 90)), 2),
        "p99": round(float(np.percentile(a, 99)), 2),
        "max": round(float(a.max()), 2),
        "mean": round(float(a.mean()), 2),
    }


def summarise(samples: list[Sample], duration: float, loads: list) -> dict[str, Any]:
    ok = [s for s in samples if s.status == 200]
    stages: dict[str, list[float]] = {}
    for s in ok:
        for name, v in s.stages.items():
            stages.setdefault(name, []).append(float(v))
    strategies: dict[str, int] = {}
    for s in ok:
        strategies[str(s.strategy)] = strategies.get(str(s.strategy), 0) + 1
    by_strategy = {name: _pct([s.ms for s in ok if str(s.strategy) == name]) for name in strategies}
    load = np.asarray(loads) if loads else np.zeros((1, 3))
    return {
        "requests": len(samples),
        "errors": len(samples) - len(ok),
        "degraded": sum(s.degraded for s in ok),
        "throughput_rps": round(len(samples) / duration, 2),
        "end_to_end_ms": _pct([s.ms for s in ok]),
        "stages_ms": {name: _pct(v) for name, v in stages.items()},
        "strategies": strategies,
        "end_to_end_ms_by_strategy": by_strategy,
        "loadavg_1min": {
            "mean": round(float(load[:, 0].mean()), 2),
            "max": round(float(load[:, 0].max()), 2),
        },
    }


def _table(result: dict[str, Any]) -> str:
    e2e = result["end_to_end_ms"]
    lines = [
        f"requests {result['requests']}  errors {result['errors']}  degraded "
        f"{result['degraded']}  throughput {result['throughput_rps']} req/s  load avg "
        f"{result['loadavg_1min']['mean']} (max {result['loadavg_1min']['max']})",
        f"{'stage':<22}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}",
        f"{'end to end':<22}"
        + "".join(f"{e2e.get(k, 0):>9.1f}" for k in ("p50", "p90", "p99", "max")),
    ]
    for name, p in result["end_to_end_ms_by_strategy"].items():
        label = f"  {name} ({result['strategies'][name]})"
        lines.append(
            f"{label:<22}" + "".join(f"{p[k]:>9.1f}" for k in ("p50", "p90", "p99", "max"))
        )
    for name, p in result["stages_ms"].items():
        lines.append(f"{name:<22}" + "".join(f"{p[k]:>9.1f}" for k in ("p50", "p90", "p99", "max")))
    return "\n".join(lines)


def known_users(built: Built, limit: int, seed: int = 0) -> list[str]:
    """Users with an exported embedding (the personalized path); cold users take popularity."""
    ids = json.loads((built.export / "user_ids.json").read_text())
    rng = random.Random(seed)
    return rng.sample(ids, min(limit, len(ids)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.pipeline_load", description=__doc__)
    p.add_argument("--products", type=int, default=100_000)
    p.add_argument("--users", type=int, default=10_000)
    p.add_argument("--clients", type=int, default=4, help="concurrent clients (4)")
    p.add_argument("--warmup", type=float, default=10.0, help="seconds before measuring (10)")
    p.add_argument("--duration", type=float, default=60.0, help="measured seconds (60)")
    p.add_argument("--k", type=int, default=50, help="items per response (50)")
    p.add_argument("--server", choices=("werkzeug", "hypercorn"), default="werkzeug")
    p.add_argument(
        "--search-threads",
        type=int,
        default=None,
        help="the engine's search threads (its --search-threads; default: the engine's)",
    )
    p.add_argument(
        "--target-hits",
        type=int,
        default=10_000,
        help="stage 1 candidates: the ANN query's targetHits (10000, the issue's size)",
    )
    p.add_argument(
        "--rank-hits",
        type=int,
        default=500,
        help="stage 2: candidates the ranker scores and returns (500, the issue's size)",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=None,
        help="open loop: requests per second offered by all clients together (Poisson "
        "arrivals, latency from each scheduled arrival); default: closed loop",
    )
    p.add_argument(
        "--vespa-url",
        default=None,
        help="serve from this engine (e.g. a real Vespa with the build's package deployed) "
        "instead of starting the embedded one",
    )
    p.add_argument(
        "--feed", action="store_true", help="with --vespa-url: feed the build to it first"
    )
    p.add_argument("--rebuild", action="store_true", help="regenerate, retrain and refeed")
    p.add_argument("--build-only", action="store_true", help="build and feed, no load")
    p.add_argument("--folder", type=Path, default=None, help="artifacts/pipeline_load")
    p.add_argument("--out", default=NAME, help="results name (pipeline_load)")
    args = p.parse_args(argv)
    if args.rate is not None and not args.rate > 0:
        p.error(f"--rate must be positive, got {args.rate}")
    if args.feed and not args.vespa_url:
        p.error("--feed needs --vespa-url (the embedded engine is fed once by the build)")
    from trainer.paths import artifacts_dir

    folder = args.folder or artifacts_dir() / NAME
    built = build(folder, args.products, args.users, args.rebuild)
    engine = webapp = None
    start_s = None
    try:
        wport = free_port()
        if args.vespa_url:
            vespa_url = args.vespa_url.rstrip("/")
            _log(f"engine: {vespa_url} (the build's package: {built.package})")
            if args.feed:
                feed_build(built, vespa_url)
        else:
            vport = free_port()
            t0 = time.perf_counter()
            engine = start_engine(built, vport, args.search_threads)
            start_s = round(time.perf_counter() - t0, 1)
            _log(f"engine up in {start_s:.0f}s")
            vespa_url = f"http://127.0.0.1:{vport}"
            feed_once(built, vespa_url)
        if args.build_only:
            return 0
        webapp = start_webapp(
            built, vespa_url, wport, args.server, args.target_hits, args.rank_hits
        )
        users = known_users(built, 2000)
        load_model = "closed loop" if args.rate is None else f"open loop at {args.rate:g} req/s"
        _log(
            f"load: {args.clients} clients, {load_model}, {args.warmup:.0f}s warm-up, "
            f"{args.duration:.0f}s"
        )
        processes = {"webapp": webapp.pid, "clients": os.getpid()}
        if engine is not None:
            processes = {"engine": engine.pid, **processes}
        cpu_before = {name: cpu_seconds(pid) for name, pid in processes.items()}
        samples, duration, loads, sent = run_load(
            f"http://127.0.0.1:{wport}",
            users,
            args.clients,
            args.warmup,
            args.duration,
            args.k,
            args.rate,
        )
        cpu_used = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in processes.items()}
    finally:
        stop(webapp)
        stop(engine)
    result = summarise(samples, duration, loads)
    # CPU per request of each process over the whole run, warm-up included (so divided by every
    # request sent): where the 2 cores go.
    result["cpu_ms_per_request"] = {
        name: round(1000 * used / max(sent, 1), 2) for name, used in cpu_used.items()
    }
    print(
        "CPU ms per request: "
        + ", ".join(f"{n} {v}" for n, v in result["cpu_ms_per_request"].items())
    )
    print(_table(result))
    from benchmarks.common import write_results

    path = write_results(
        args.out,
        {
            "setup": {
                "products": built.info["products"], "users": built.info["users"],
                "events": built.info["events"], "embedding_dim": DIM,
                "clients": args.clients, "warmup_s": args.warmup, "duration_s": args.duration,
                "k": args.k, "server": args.server, "engine_start_s": start_s,
                "engine": args.vespa_url or "embedded",
                "load_model": "closed" if args.rate is None else "open",
                "offered_rps": args.rate,
                "search_threads": args.search_threads,
                "target_hits": args.target_hits, "rank_hits": args.rank_hits,
                # what the servers start with: the environment's count, else one
                # (vespa_app/math_threads.py); e.g. OPENBLAS_NUM_THREADS=2 to compare
                "math_threads": {v: os.environ.get(v, "1") for v in MATH_THREAD_VARIABLES},
                "build_timings_s": built.info["timings"],
            },
            **result,
        },
        module=NAME,
    )  # fmt: skip
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
