"""Command line: `python -m vespa_app serve [--package DIR] [--data DIR] [--port P] ...`."""

from __future__ import annotations

# First, before numpy loads: one BLAS thread per request (vespa_app/math_threads.py).
import vespa_app.math_threads  # noqa: F401

# isort: split

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from vespa_app.engine.app import DEFAULT_PACKAGE, EngineConfig, run
from vespa_app.engine.store import StoreError


def _package_error_types() -> tuple[type[BaseException], ...]:
    """PackageError from services.py and, once it exists, from the schema parser."""
    from vespa_app.engine import services

    types: list[type[BaseException]] = [services.PackageError]
    try:
        from vespa_app.engine import schema

        if isinstance(getattr(schema, "PackageError", None), type):
            types.append(schema.PackageError)
    except ImportError:
        pass
    return tuple(types)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vespa_app",
        description="Serve the Vespa application package with the embedded engine "
        "(Vespa's HTTP API subset).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="serve the package on one port (HTTP/1.1 and cleartext HTTP/2)",
        description="Load the package, replay stored documents, then listen. The port opens only "
        "when ready; SIGINT/SIGTERM stop it cleanly. A package construct outside the supported "
        "subset stops the start "
        "with '<file>:<line>: unsupported construct ...' and exit status 1.",
    )
    serve.add_argument(
        "--package",
        type=Path,
        default=DEFAULT_PACKAGE,
        help="application package folder (default: %(default)s)",
    )
    serve.add_argument(
        "--data",
        type=Path,
        default=Path("vespa-data"),
        help="folder for the operation log and snapshots; created if missing "
        "(default: %(default)s)",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default: %(default)s)"
    )
    serve.add_argument("--port", type=int, default=8080, help="port to bind (default: %(default)s)")
    serve.add_argument(
        "--reset-data",
        action="store_true",
        help="delete every stored document before starting; needed after an incompatible "
        "package change "
        "(changed field or tensor type, removed document type that has data); refeed afterwards",
    )
    serve.add_argument(
        "--max-pending-writes",
        type=int,
        default=1024,
        help="document writes queued or in flight before /document/v1 answers 429 "
        "(default: %(default)s)",
    )
    serve.add_argument(
        "--max-body-mb",
        type=float,
        default=64.0,
        help="request body limit, 413 beyond (default: %(default)s)",
    )
    serve.add_argument(
        "--search-threads",
        type=int,
        default=4,
        help="threads executing queries (default: %(default)s)",
    )
    serve.add_argument(
        "--max-queued-queries",
        type=int,
        default=64,
        help="queries running or waiting before /search/ answers 503 (default: %(default)s)",
    )
    serve.add_argument(
        "--snapshot-every",
        type=int,
        default=100_000,
        help="log records between background snapshots; the log is cut after each "
        "(default: %(default)s)",
    )
    serve.add_argument("--log-level", default="INFO", help="logging level (default: %(default)s)")
    check = commands.add_parser(
        "check",
        help="parse the package and exit: 0 if the engine can serve it, "
        "1 with the reason otherwise",
    )
    check.add_argument(
        "--package",
        type=Path,
        default=DEFAULT_PACKAGE,
        help="application package folder (default: %(default)s)",
    )
    return parser


def main(argv: list[str] | None = None, schemas: dict[str, Any] | None = None) -> int:
    """Entry point; `schemas` replaces .sd parsing (tests with hand-built schemas)."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "check":
            from vespa_app.engine.app import _document_schemas, load_package_schemas
            from vespa_app.engine.services import load_query_profile, load_services

            services = load_services(args.package)
            load_query_profile(args.package)
            _document_schemas(
                services, schemas if schemas is not None else load_package_schemas(args.package)
            )
            print(f"{args.package}: ok")
            return 0
        logging.basicConfig(
            level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        config = EngineConfig(
            package_dir=args.package,
            data_dir=args.data,
            host=args.host,
            port=args.port,
            reset_data=args.reset_data,
            max_pending_writes=args.max_pending_writes,
            max_body_bytes=int(args.max_body_mb * 1024 * 1024),
            search_threads=args.search_threads,
            max_queued_queries=args.max_queued_queries,
            snapshot_every=args.snapshot_every,
        )
        return run(config, schemas)
    except _package_error_types() as e:
        print(str(e), file=sys.stderr)
        return 1
    except StoreError as e:
        print(f"{args.data}: {e}" if args.command == "serve" else str(e), file=sys.stderr)
        return 1
    except OSError as e:
        print(f"cannot serve: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
