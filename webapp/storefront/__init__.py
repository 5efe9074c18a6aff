"""The demo storefront: server-rendered pages over the same pipeline as the JSON API
(docs/storefront.md).

``init_app(app)`` is called by :func:`webapp.create_app`: it loads the catalogue names
(``DATASET_DIR``), switches CSRF protection on for every form (the JSON API blueprint is exempt:
it accepts only ``application/json`` bodies, which a cross-site HTML form cannot send without a
CORS preflight, and it has no cookie session to ride on) and registers the blueprint.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask
from flask_wtf.csrf import CSRFProtect

from webapp.storefront.catalog import Catalog
from webapp.storefront.queries import StoreQueries

csrf = CSRFProtect()


@dataclass
class Storefront:
    catalog: Catalog
    queries: StoreQueries


def init_app(app: Flask) -> None:
    from webapp.api import bp as api_bp
    from webapp.storefront.views import bp

    dataset = app.config.get("DATASET_DIR")
    catalog = app.config.get("CATALOG")
    if catalog is None:
        catalog = (
            Catalog.from_dataset(dataset, int(app.config.get("DEMO_USERS", 4)))
            if dataset
            else Catalog()
        )
    app.extensions["storefront"] = Storefront(catalog, StoreQueries(app.config["PIPELINE"].vespa))
    app.config.setdefault("SESSION_COOKIE_SAMESITE", "Lax")
    app.config.setdefault("SESSION_COOKIE_HTTPONLY", True)
    csrf.init_app(app)
    csrf.exempt(api_bp)
    app.register_blueprint(bp)
