"""Stage 4: the Flask JSON API over the vespa_app client (webapp/README.md).

``create_app(test_config=None)`` is the application factory: configuration from the environment
(or ``test_config``), the Vespa client and the pipeline built from it unless injected through
``VESPA_CLIENT`` / ``PIPELINE`` (tests point them at the embedded engine).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import orjson
from flask import Flask, Response, jsonify
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException

DEFAULTS: dict[str, Any] = {
    "VESPA_URL": "http://127.0.0.1:8080",
    "VESPA_TIMEOUT": 2.0,  # seconds, per Vespa request
    "RULES_FILE": None,  # re-ranking rules TOML; None = vespa_app/client/rerank/rules.toml
    "EVENTS_DB": None,  # SQLite file; None = <instance path>/events.sqlite3
    # Model export folder: product_ids.json (item_idx for history), graph.npz (walk candidates),
    # product embeddings (MMR and supported_by by cosine).
    "EXPORT_DIR": None,
    "LOCATIONS": (),  # the training data's sorted location names (ctx location codes)
    "TARGET_HITS": 10_000,  # stage 1: nearestNeighbor targetHits
    "RANK_HITS": 500,  # stage 2: candidates the ranker scores (rerank-count) and returns
    "RANKING_PROFILE": "ranking",
    "EXCLUDED_CATEGORIES": (),
    "MAX_K": 200,
    "DATASET_DIR": None,  # storefront: category/seller names, taxonomy, demo shoppers
}

# Environment variable -> config key; read at app creation.
ENVIRONMENT = {
    "VESPA_URL": "VESPA_URL",
    "VESPA_TIMEOUT": "VESPA_TIMEOUT",
    "RERANK_RULES": "RULES_FILE",
    "EVENTS_DB": "EVENTS_DB",
    "MODEL_EXPORT_DIR": "EXPORT_DIR",
    "LOCATIONS": "LOCATIONS",
    "EXCLUDED_CATEGORIES": "EXCLUDED_CATEGORIES",
    "DATASET_DIR": "DATASET_DIR",
    "TARGET_HITS": "TARGET_HITS",
    "RANK_HITS": "RANK_HITS",
}
INTEGER_KEYS = ("TARGET_HITS", "RANK_HITS")


def _from_environment() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for env, key in ENVIRONMENT.items():
        value = os.environ.get(env)
        if value is None or value == "":
            continue
        if key == "VESPA_TIMEOUT":
            out[key] = float(value)
        elif key in INTEGER_KEYS:
            try:
                out[key] = int(value)
            except ValueError:
                raise ValueError(f"{env} must be an integer, got {value!r}") from None
        elif key in ("LOCATIONS", "EXCLUDED_CATEGORIES"):
            out[key] = tuple(v.strip() for v in value.split(",") if v.strip())
        else:
            out[key] = value
    return out


class OrjsonProvider(DefaultJSONProvider):
    """``jsonify`` through orjson: the same document as Flask's own provider (keys sorted,
    Flask's conversions of dates, dataclasses, decimals and ``__html__`` objects), written
    several times faster; a recommendation reply is 50 items with explanations. Differences
    that leave the parsed document alone: UTF-8 instead of ``\\u`` escapes, and exponents
    written ``1e-7`` instead of ``1e-07``. NaN and infinities become null where Flask's would
    write the non-JSON ``NaN``. What orjson cannot write (integers beyond 64 bits) goes
    through Flask's provider."""

    OPTIONS = (
        orjson.OPT_SORT_KEYS
        | orjson.OPT_NON_STR_KEYS
        | orjson.OPT_SERIALIZE_NUMPY
        | orjson.OPT_PASSTHROUGH_DATETIME  # to Flask's default: HTTP dates, as before
        | orjson.OPT_PASSTHROUGH_DATACLASS  # to Flask's default: dataclasses.asdict
        | orjson.OPT_APPEND_NEWLINE
    )

    def response(self, *args: Any, **kwargs: Any) -> Response:
        obj = self._prepare_response_obj(args, kwargs)
        options = self.OPTIONS
        if (self.compact is None and self._app.debug) or self.compact is False:
            options |= orjson.OPT_INDENT_2
        try:
            body = orjson.dumps(obj, default=self.default, option=options)
        except orjson.JSONEncodeError:
            return super().response(*args, **kwargs)
        return self._app.response_class(body, mimetype=self.mimetype)


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    from vespa_app.client.pipeline import (
        PipelineConfig,
        RecommendationPipeline,
        load_retrieval_weight,
    )
    from vespa_app.client.rerank import Reranker
    from vespa_app.client.vespa import VespaClient
    from webapp.api import bp
    from webapp.events import EventStore
    from webapp.storefront import init_app as init_storefront

    app = Flask(__name__, instance_relative_config=True)
    app.json = OrjsonProvider(app)
    app.config.from_mapping(DEFAULTS)
    # Signs the storefront's session cookie and CSRF tokens. Unset: a random key per process
    # (sessions and forms then do not survive a restart or span several processes).
    app.config["SECRET_KEY"] = os.environ.get("SECRET_KEY")
    app.config["DEBUG"] = False
    app.config.update(_from_environment())
    if test_config:
        app.config.update(test_config)
    if not app.config["SECRET_KEY"]:
        app.logger.warning("SECRET_KEY is not set: using a random key for this process")
        app.config["SECRET_KEY"] = secrets.token_hex(32)

    if app.config.get("PIPELINE") is None:
        client = app.config.get("VESPA_CLIENT") or VespaClient(
            app.config["VESPA_URL"], timeout=float(app.config["VESPA_TIMEOUT"])
        )
        rules = app.config["RULES_FILE"]
        reranker = Reranker.from_file(rules) if rules else Reranker()
        export = app.config["EXPORT_DIR"]
        config = PipelineConfig(
            target_hits=int(app.config["TARGET_HITS"]),
            rank_hits=int(app.config["RANK_HITS"]),
            rerank_count=int(app.config["RANK_HITS"]),
            ranking_profile=app.config["RANKING_PROFILE"],
            locations=tuple(app.config["LOCATIONS"]),
            excluded_categories=tuple(app.config["EXCLUDED_CATEGORIES"]),
            # W of a residual ranker: the ranking profile adds W * cos(user, product).
            retrieval_weight=load_retrieval_weight(export) if export else 0.0,
        )
        # With an export: item index, item-user graph (walk candidates) and product vectors.
        app.config["PIPELINE"] = (
            RecommendationPipeline.from_export(client, export, reranker, config)
            if export
            else RecommendationPipeline(client, reranker, config)
        )
    if app.config.get("EVENT_STORE") is None:
        path = app.config["EVENTS_DB"] or Path(app.instance_path) / "events.sqlite3"
        app.config["EVENT_STORE"] = EventStore(path)

    app.register_blueprint(bp)
    init_storefront(app)  # HTML pages, CSRF on every form (the JSON API is exempt)

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):  # JSON errors everywhere, not HTML pages
        return jsonify(error=e.description, status=e.code), e.code

    return app
