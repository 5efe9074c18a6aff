"""Fixtures for the storefront in a real browser: the app served by a background Werkzeug
server on a free port (over the module's embedded engine with the tiny marketplace), and
headless Chromium driven by Playwright.

Debian's /usr/bin/chromium is the browser (the project's set-up installs it); Playwright's own
browser downloads are never used. Without it every test here is skipped, saying so.
Screenshots go to ``artifacts/screenshots/storefront/`` (one per test, overwritten each run).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from tests.vespa_app.conftest import EngineProcess
from tests.webapp.conftest import close_app, make_app
from tests.webapp.served import Built

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[3]
SCREENSHOTS = ROOT / "artifacts" / "screenshots" / "storefront"


@pytest.fixture(scope="module")
def storefront(
    engine: EngineProcess, built: Built, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Base URL of the storefront, served from a thread for the whole module."""
    from werkzeug.serving import WSGIRequestHandler, make_server

    class QuietHandler(WSGIRequestHandler):
        def log_request(self, *args, **kwargs) -> None:  # one line per image is noise
            pass

    app: Flask = make_app(
        engine,
        built,
        tmp_path_factory.mktemp("storefront"),
        DATASET_DIR=str(built.dataset),
        SECRET_KEY="browser-tests",
    )
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(10)
    close_app(app)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium package (make install)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, storefront: str):
    """A fresh browser context (its own cookies: its own shopper session) per test."""
    context = browser.new_context(base_url=storefront, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def screenshot(request: pytest.FixtureRequest):
    """Call with the page: saves ``<test name>.png`` under SCREENSHOTS and returns its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def save(page) -> Path:
        path = SCREENSHOTS / f"{request.node.name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return save
