"""The JSON API blueprint: recommendations, similar products, because-you-bought rows, sellers
to follow, events.

Errors: a bad parameter is 400 naming it; an unknown product 404; a failing ranker is not an
error (the pipeline degrades and says so in ``degraded``); Vespa not answering at all is 503 and
Vespa rejecting a non-ranking request 502, both with the client's message.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify, request

from vespa_app.client.context import DEVICES
from vespa_app.client.pipeline import (
    ProductNotFound,
    RecommendationContext,
    RecommendationPipeline,
)
from vespa_app.client.vespa import VespaError, VespaUnavailable
from webapp.events import EVENT_TYPES, EventStore
from webapp.recording import record_event

bp = Blueprint("api", __name__, url_prefix="/api")
MAX_ID = 200  # longest accepted user/product id


class BadParameter(ValueError):
    def __init__(self, name: str, message: str) -> None:
        self.name = name
        super().__init__(f"{name}: {message}")


@bp.errorhandler(BadParameter)
def bad_parameter(e: BadParameter):
    return jsonify(error=str(e), parameter=e.name, status=400), 400


@bp.errorhandler(ProductNotFound)
def not_found(e: ProductNotFound):
    return jsonify(error=str(e), product_id=e.product_id, status=404), 404


@bp.errorhandler(VespaError)
def vespa_error(e: VespaError):
    status = 503 if isinstance(e, VespaUnavailable) else 502
    return jsonify(error=f"search backend: {e}", status=status), status


def _pipeline() -> RecommendationPipeline:
    return current_app.config["PIPELINE"]


def _store() -> EventStore:
    return current_app.config["EVENT_STORE"]


def _identifier(name: str, value: Any, required: bool = True) -> str | None:
    if value is None or value == "":
        if required:
            raise BadParameter(name, "required")
        return None
    if not isinstance(value, str):
        raise BadParameter(name, f"must be a string, got {type(value).__name__}")
    if len(value) > MAX_ID or any(c in value for c in ",\n\r\t\0"):
        raise BadParameter(name, f"must be at most {MAX_ID} characters without commas or controls")
    return value


def _integer(name: str, value: Any, low: int, high: int, default: int | None) -> int | None:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise BadParameter(name, f"must be an integer in [{low}, {high}], got {value!r}")
    try:
        number = int(value) if isinstance(value, int) else int(str(value).strip())
    except ValueError:
        raise BadParameter(name, f"must be an integer in [{low}, {high}], got {value!r}") from None
    if not low <= number <= high:
        raise BadParameter(name, f"must be an integer in [{low}, {high}], got {number}")
    return number


def _device(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if value not in DEVICES:
        raise BadParameter("device", f"must be one of {', '.join(DEVICES)}, got {value!r}")
    return value


def _location(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_ID:
        raise BadParameter("location", f"must be a string of at most {MAX_ID} characters")
    return value  # unknown names are allowed: the ctx encodes them as "unknown location"


def _list(name: str, value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    if len(items) > 20 or any(len(v) > MAX_ID for v in items):
        raise BadParameter(name, f"at most 20 comma-separated names of {MAX_ID} characters")
    return items


def _context(args: Any, user_id: str) -> RecommendationContext:
    return RecommendationContext(
        hour=_integer("hour", args.get("hour"), 0, 23, None),
        device=_device(args.get("device")),
        location=_location(args.get("location")),
        browsed_categories=_list("browsed", args.get("browsed")),
        excluded_categories=_list("exclude_categories", args.get("exclude_categories")),
        # Purchases logged through this API: left out unless consumable (docs/pipeline.md).
        purchased_product_ids=tuple(_store().purchased(user_id)),
    )


def _flag(name: str, value: Any) -> bool:
    if value is None or value in ("", "0", "false"):
        return False
    if value in ("1", "true"):
        return True
    raise BadParameter(name, f"must be 1/true or 0/false, got {value!r}")


@bp.get("/recommendations")
def recommendations():
    """?user_id (required) &k (1..MAX_K, default 50) &hour (0..23) &device &location
    &browsed=cat,cat (cold-start mix) &exclude_categories=cat,cat &inspect=1 (adds the
    candidates / ranked / reranked stages and their counts)"""
    args = request.args
    user_id = _identifier("user_id", args.get("user_id"))
    k = _integer("k", args.get("k"), 1, int(current_app.config["MAX_K"]), 50)
    inspect = _flag("inspect", args.get("inspect"))
    context = _context(args, user_id)
    result = _pipeline().recommend(user_id, k, context, _store().seller_exposure(), inspect=inspect)
    return jsonify(result.to_dict())


@bp.get("/because")
def because():
    """ "Because you bought X" rows: ?user_id &rows (1..10, default 3) &k (1..50, default 10)."""
    args = request.args
    user_id = _identifier("user_id", args.get("user_id"))
    rows = _integer("rows", args.get("rows"), 1, 10, 3)
    k = _integer("k", args.get("k"), 1, 50, 10)
    out = _pipeline().because_you_bought(user_id, rows, k, _context(args, user_id))
    return jsonify(user_id=user_id, rows=out)


@bp.get("/similar/<product_id>")
def similar(product_id: str):
    """Products nearest to this one's embedding (in stock, itself excluded); ?k (1..100)."""
    product_id = _identifier("product_id", product_id)
    k = _integer("k", request.args.get("k"), 1, 100, 20)
    items = _pipeline().similar(product_id, k)
    return jsonify(product_id=product_id, items=items)


@bp.get("/sellers")
def sellers():
    """Sellers to follow, closest to the user by seller embedding (cold users: the sellers of
    their list); ?user_id &k (1..50, default 10). ``method`` says which."""
    args = request.args
    user_id = _identifier("user_id", args.get("user_id"))
    k = _integer("k", args.get("k"), 1, 50, 10)
    out = _pipeline().sellers(user_id, k, _context(args, user_id), _store().seller_exposure())
    return jsonify(out)


@bp.post("/events")
def events():
    """JSON {user_id, product_id, event_type, context?: {hour, device, location}}.

    Stored durably first; then, for every type except impressions (the feed's history holds
    positive events only), the product goes first in the user's Vespa history.
    """
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadParameter("body", "must be a JSON object (Content-Type: application/json)")
    unknown = sorted(set(body) - {"user_id", "product_id", "event_type", "context"})
    if unknown:
        raise BadParameter(unknown[0], "unknown field")
    user_id = _identifier("user_id", body.get("user_id"))
    product_id = _identifier("product_id", body.get("product_id"))
    event_type = body.get("event_type")
    if event_type not in EVENT_TYPES:
        raise BadParameter("event_type", f"must be one of {', '.join(EVENT_TYPES)}")
    context = body.get("context")
    if context is None:
        context = {}
    if not isinstance(context, dict):
        raise BadParameter("context", "must be a JSON object")
    extra = sorted(set(context) - {"hour", "device", "location"})
    if extra:
        raise BadParameter(f"context.{extra[0]}", "unknown field")
    hour = _integer("context.hour", context.get("hour"), 0, 23, None)
    device = _device(context.get("device"))
    location = _location(context.get("location"))

    recorded = record_event(
        _store(), _pipeline(), user_id, product_id, event_type, hour, device, location, context
    )  # an unknown product is a 404 before anything is stored
    out: dict[str, Any] = {
        "event_id": recorded.event_id,
        "stored": True,
        "history_updated": recorded.history is not None,
    }
    if recorded.history_error is not None:
        # The event is safe in the store; report that Vespa has not seen it yet.
        out["history_error"] = recorded.history_error
    if recorded.history is not None:
        out["recent_product_ids"] = recorded.history["recent_product_ids"][:10]
    return jsonify(out), 201
