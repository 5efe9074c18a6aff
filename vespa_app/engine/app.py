"""Wiring: package -> schemas + store + search engine -> ASGI app -> hypercorn (spec §2, §8).

Order matters: the package is parsed (refused if any construct is outside the
subset), the store replays its log, the search engine builds its indexes, and
only then is the port bound, so "listening" means "ready".
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vespa_app.engine.documents import DocumentApi
from vespa_app.engine.server import EngineApp
from vespa_app.engine.services import PackageError, Services, load_query_profile, load_services
from vespa_app.engine.store import DocumentStore
from vespa_app.gc_freeze import freeze_loaded_objects

log = logging.getLogger(__name__)

DEFAULT_PACKAGE = Path(__file__).resolve().parents[1] / "package"


@dataclass(frozen=True)
class EngineConfig:
    package_dir: Path = DEFAULT_PACKAGE
    data_dir: Path = Path("vespa-data")
    host: str = "127.0.0.1"
    port: int = 8080
    reset_data: bool = False
    max_pending_writes: int = 1024
    max_body_bytes: int = 64 * 1024 * 1024
    search_threads: int = 4
    max_queued_queries: int = 64
    snapshot_every: int = 100_000


def load_package_schemas(package_dir: Path) -> dict[str, Any]:
    """The .sd schemas, parsed by the search side's vespa_app.engine.schema."""
    schema_module = importlib.import_module("vespa_app.engine.schema")
    return schema_module.load_schemas(Path(package_dir))


def _search_engine_class() -> Any | None:
    try:
        module = importlib.import_module("vespa_app.engine.search")
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("vespa_app.engine.search"):
            return None
        raise
    return getattr(module, "SearchEngine", None)


def _document_schemas(services: Services, schemas: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for cluster in services.content_clusters:
        for doc_type, line in zip(cluster.document_types, cluster.document_lines, strict=True):
            if doc_type not in schemas:
                raise PackageError(
                    services.path, line, f"document type '{doc_type}' without a schema"
                )
            out[doc_type] = schemas[doc_type]
    return out


class Engine:
    """A loaded package with its store and search engine; `app` is the ASGI application."""

    def __init__(self, config: EngineConfig, schemas: dict[str, Any] | None = None) -> None:
        self.config = config
        self.services = load_services(config.package_dir)
        self.query_profile = load_query_profile(config.package_dir)
        all_schemas = schemas if schemas is not None else load_package_schemas(config.package_dir)
        self.schemas = _document_schemas(self.services, all_schemas)
        self.store = DocumentStore(
            config.data_dir,
            self.schemas,
            max_pending=config.max_pending_writes,
            snapshot_every=config.snapshot_every,
            reset=config.reset_data,
        )
        try:
            search_class = _search_engine_class()
            self.search = (
                search_class(self.schemas, self.store, Path(config.package_dir), self.query_profile)
                if search_class is not None and self.services.search
                else None
            )
            self.app = EngineApp(
                DocumentApi(self.services, self.schemas, self.store),
                self.search,
                application_name=self.services.container_id,
                max_body_bytes=config.max_body_bytes,
                search_threads=config.search_threads,
                max_queued_queries=config.max_queued_queries,
            )
        except BaseException:
            self.store.close()
            raise

    def close(self) -> None:
        self.app.close()
        try:
            if self.search is not None:
                self.search.close()  # stops the graph mergers and persists the graphs
        finally:
            self.store.close()


async def serve(engine: Engine, shutdown: asyncio.Event) -> None:
    """Bind and serve until `shutdown` is set."""
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"{engine.config.host}:{engine.config.port}"]
    config.accesslog = None
    config.errorlog = log
    config.keep_alive_timeout = 30
    # hypercorn closes a connection after 1,000 requests by default (HTTP/2: GOAWAY), which
    # stalled pyvespa's single-connection async feeder mid-feed; Vespa keeps connections open
    config.keep_alive_max_requests = 1 << 62
    config.graceful_timeout = 5
    await hypercorn_serve(engine.app, config, shutdown_trigger=shutdown.wait)


def run(config: EngineConfig, schemas: dict[str, Any] | None = None) -> int:
    """Load, serve until SIGINT/SIGTERM, close cleanly. Returns the process exit code."""
    engine = Engine(config, schemas)
    freeze_loaded_objects()
    try:

        async def main() -> None:
            shutdown = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, shutdown.set)
            log.info(
                "serving %s on http://%s:%d",
                engine.config.package_dir,
                engine.config.host,
                engine.config.port,
            )
            await serve(engine, shutdown)

        asyncio.run(main())
    finally:
        engine.close()
    return 0
