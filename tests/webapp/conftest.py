"""Fixtures (flask tutorial style): ``app`` from the factory pointed at an embedded engine that
serves the tiny marketplace, and ``client``, Flask's test client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.vespa_app.conftest import EngineProcess
from tests.webapp.served import Built, build, feed_all, locations


@pytest.fixture(scope="module")
def built() -> Built:
    return build()


@pytest.fixture(scope="module")
def engine(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    proc = EngineProcess(built.package, tmp_path_factory.mktemp("api-engine") / "data")
    proc.wait_ready()
    feed_all(built, proc.url)
    yield proc
    proc.stop()


def make_app(engine: EngineProcess, built: Built, tmp_path: Path, **config) -> Flask:
    from webapp import create_app

    base = {
        "TESTING": True,
        "VESPA_URL": engine.url,
        "VESPA_TIMEOUT": 10.0,
        "EVENTS_DB": str(tmp_path / "events.sqlite3"),
        "EXPORT_DIR": str(built.export),
        "LOCATIONS": locations(built),
    }
    return create_app({**base, **config})


@pytest.fixture
def app(engine: EngineProcess, built: Built, tmp_path: Path) -> Iterator[Flask]:
    app = make_app(engine, built, tmp_path)
    yield app
    close_app(app)


def close_app(app: Flask) -> None:
    app.config["EVENT_STORE"].close()
    app.config["PIPELINE"].vespa.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
