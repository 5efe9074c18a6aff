"""``python -m webapp``: serve the JSON API (see webapp/README.md)."""

from __future__ import annotations

# First, before numpy loads: one BLAS thread per request (vespa_app/math_threads.py).
import vespa_app.math_threads  # noqa: F401

# isort: split

import argparse
import os
import sys


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m webapp",
        description="Serve the recommendation JSON API (GET /api/recommendations, "
        "/api/similar/<product_id>, /api/sellers; POST /api/events) over Vespa or the embedded "
        "engine. Options override the environment variables named in brackets.",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (127.0.0.1)")
    p.add_argument("--port", type=int, default=5000, help="port to listen on (5000)")
    p.add_argument(
        "--vespa-url",
        default=None,
        help="Vespa or embedded-engine base URL [VESPA_URL] (http://127.0.0.1:8080)",
    )
    p.add_argument(
        "--timeout", type=float, default=None, help="seconds per Vespa request [VESPA_TIMEOUT] (2)"
    )
    p.add_argument(
        "--rules",
        default=None,
        help="re-ranking rules TOML [RERANK_RULES] (vespa_app/client/rerank/rules.toml)",
    )
    p.add_argument(
        "--events-db",
        default=None,
        help="SQLite event log [EVENTS_DB] (instance/events.sqlite3 next to the package)",
    )
    p.add_argument(
        "--export-dir",
        default=None,
        help="model export folder whose product_ids.json maps products to item_idx for the "
        "history the ranker reads [MODEL_EXPORT_DIR]; without it, events update "
        "recent_product_ids only",
    )
    p.add_argument(
        "--locations",
        default=None,
        help="comma-separated, sorted location names of the training data, for the ranker's "
        "location feature [LOCATIONS]; without them the location is encoded as unknown",
    )
    p.add_argument(
        "--target-hits",
        type=int,
        default=None,
        help="stage 1: nearestNeighbor targetHits of the candidate query [TARGET_HITS] (10000)",
    )
    p.add_argument(
        "--rank-hits",
        type=int,
        default=None,
        help="stage 2: candidates the ranker scores and returns to the re-ranker, at most 500 "
        "(the package's query profile caps hits) [RANK_HITS] (500)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from webapp import create_app

    config: dict[str, object] = {}
    if args.vespa_url:
        config["VESPA_URL"] = args.vespa_url
    if args.timeout is not None:
        config["VESPA_TIMEOUT"] = args.timeout
    if args.rules:
        config["RULES_FILE"] = args.rules
    if args.events_db:
        config["EVENTS_DB"] = args.events_db
    if args.export_dir:
        config["EXPORT_DIR"] = args.export_dir
    if args.locations:
        config["LOCATIONS"] = tuple(v for v in args.locations.split(",") if v)
    if args.target_hits is not None:
        config["TARGET_HITS"] = args.target_hits
    if args.rank_hits is not None:
        config["RANK_HITS"] = args.rank_hits
    app = create_app(config)
    from vespa_app.gc_freeze import freeze_loaded_objects

    freeze_loaded_objects()  # the export's item index and vectors stay out of every collection
    print(f"webapp on http://{args.host}:{args.port} -> {app.config['VESPA_URL']}", file=sys.stderr)
    os.environ.setdefault("FLASK_DEBUG", "0")
    app.run(host=args.host, port=args.port, debug=False, threaded=True, use_reloader=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
