"""The storefront's own request latency: the home page with its four rows (for you, because you
bought, trending in your categories, new arrivals), rendered to HTML.

Setup as the demo (webapp/demo.py): the small synthetic marketplace, a 128-d LightGCN and a small
ranker exported into a package copy (reused when artifacts/demo/<dataset> has them), the embedded
engine as a child process on a free port, fed. The storefront runs in this process behind
Werkzeug's threaded server; one client at a time requests ``GET /`` over HTTP as each demo
shopper in turn and as new shoppers (cold start), so the time includes HTTP, the session cookie,
every Vespa request of the four rows, the card lookup and the template. Product images are
separate requests and not counted. Per-row times are the ones the page reports.

Reproduce: `python -m benchmarks.storefront_latency --requests 200`
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.common import peak_rss_mib, write_results

ROW_LATENCY = re.compile(
    r'data-row="([^"]+)".*?<span class="latency">([0-9.]+) ms</span>', re.DOTALL
)
TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentiles(values: list[float]) -> dict[str, float]:
    a = np.asarray(values)
    return {
        "p50": round(float(np.percentile(a, 50)), 2),
        "p90": round(float(np.percentile(a, 90)), 2),
        "p99": round(float(np.percentile(a, 99)), 2),
        "mean": round(float(a.mean()), 2),
    }


def shopper_client(base: str, shopper: str):
    """An HTTP client whose session shops as ``shopper`` (a demo user id or "new")."""
    import httpx

    client = httpx.Client(base_url=base, timeout=30.0)
    page = client.get("/category/").text
    token = TOKEN.search(page).group(1)
    response = client.post("/shopper", data={"shopper": shopper, "csrf_token": token})
    if response.status_code != 302:
        raise RuntimeError(f"switching to {shopper!r} failed: HTTP {response.status_code}")
    return client


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", default="small", help="synthetic marketplace scale (small)")
    p.add_argument("--requests", type=int, default=200, help="timed home-page requests (200)")
    p.add_argument("--warmup", type=int, default=20, help="untimed requests first (20)")
    p.add_argument("--new-every", type=int, default=5, help="every Nth request a new shopper (5)")
    args = p.parse_args()

    from werkzeug.serving import WSGIRequestHandler, make_server

    from webapp import create_app
    from webapp.demo import Engine, feed, prepare, storefront_config

    class QuietHandler(WSGIRequestHandler):
        def log_request(self, *a, **k) -> None:
            pass

    dataset, export, package = prepare(args.scale)
    tmp = Path(tempfile.mkdtemp(prefix="storefront-bench-"))
    engine = Engine(package, tmp / "vespa-data", free_port(), tmp / "engine.log")
    try:
        engine.wait_ready()
        feed(export, dataset, package, engine.url)
        app = create_app(
            {
                **storefront_config(dataset, export, engine.url, tmp / "events.sqlite3"),
                "SECRET_KEY": "benchmark",
            }
        )
        server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_port}"
        demo = [u.user_id for u in app.extensions["storefront"].catalog.demo_users]
        clients = {u: shopper_client(base, u) for u in demo}

        load_before = os.getloadavg()[0]
        total: list[float] = []
        rows: dict[str, list[float]] = {}
        kinds = {"demo": [], "new": []}
        for i in range(args.warmup + args.requests):
            new = i % args.new_every == args.new_every - 1 or not demo
            client = shopper_client(base, "new") if new else clients[demo[i % len(demo)]]
            start = time.perf_counter()
            response = client.get("/")
            elapsed = (time.perf_counter() - start) * 1000
            if response.status_code != 200:
                raise RuntimeError(f"GET / answered {response.status_code}")
            if new:
                client.close()
            if i < args.warmup:
                continue
            total.append(elapsed)
            kinds["new" if new else "demo"].append(elapsed)
            for row, ms in ROW_LATENCY.findall(response.text):
                rows.setdefault(row, []).append(float(ms))
        server.shutdown()
        for client in clients.values():
            client.close()
    finally:
        engine.stop()

    results = {
        "dataset": dataset.name,
        "requests": args.requests,
        "concurrency": 1,
        "home_page_ms": percentiles(total),
        "home_page_ms_by_shopper": {k: percentiles(v) for k, v in kinds.items() if v},
        "row_ms": {row: percentiles(v) for row, v in rows.items()},
        "peak_rss_mib": round(peak_rss_mib(), 1),
        # The machine is shared: other jobs' load moves these times (2x seen between runs).
        "load_average_1m": {"before": load_before, "after": os.getloadavg()[0]},
        "notes": "HTTP GET / through Werkzeug's threaded server in the benchmark process, one "
        "client; the embedded engine is a child process on the same 2-core machine. Row times "
        "are measured by the storefront around each row's pipeline call (the 'for-you' row "
        "includes its three stages); card lookups and rendering are in the total only.",
    }
    path = write_results("storefront_latency", results)
    print(f"home page over {args.requests} requests ({dataset.name}, 1 client):")
    print(f"{'':14}{'p50':>8}{'p90':>8}{'p99':>8}{'mean':>8}  ms")
    lines = [("total", results["home_page_ms"])]
    lines += [(f"  {k} shoppers", v) for k, v in results["home_page_ms_by_shopper"].items()]
    lines += [(f"  row {k}", v) for k, v in results["row_ms"].items()]
    for name, v in lines:
        print(f"{name:14}{v['p50']:>8.1f}{v['p90']:>8.1f}{v['p99']:>8.1f}{v['mean']:>8.1f}")
    load = results["load_average_1m"]
    print(f"load average (1 min) {load['before']:.1f} before, {load['after']:.1f} after")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
