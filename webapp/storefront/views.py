"""The storefront's pages and forms (blueprint ``storefront``, mounted at /).

Every state change is a POST form with a CSRF token: switching the demo shopper and the
favourite / add-to-cart / buy buttons. Events go the same way as ``POST /api/events``: committed
to the event store first, then the product goes first in the shopper's Vespa history, so the
next page is recommended from it.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_wtf.csrf import CSRFError

from vespa_app.client.graph_walk import WalkConfig
from vespa_app.client.pipeline import (
    ProductNotFound,
    RecommendationContext,
    RecommendationPipeline,
)
from vespa_app.client.vespa import VespaError, VespaUnavailable
from webapp.events import EventStore
from webapp.images import product_svg
from webapp.recording import record_event
from webapp.storefront import Storefront, params, rows
from webapp.storefront import inspector as inspection
from webapp.storefront.catalog import NEW_SHOPPER
from webapp.storefront.queries import SEARCH_MODES

bp = Blueprint(
    "storefront",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static/storefront",
)

ROW_SIZE = 12  # products per home row
PAGE_SIZE = 24  # products per listing page
SIMILAR = 8
# Short walks from one product: co-interaction, not a neighbourhood of the whole history.
TOGETHER_WALK = WalkConfig(walkers=1_000, steps=2, restart=0.5, budget_ms=10.0)
BROWSED_KEPT = 5  # categories remembered in the session for the cold-start mix
STOREFRONT_EVENTS = {"favorite": "Favourite", "cart": "Add to cart", "purchase": "Buy"}
# No external resource is ever loaded; inline scripts and styles are refused too.
CSP = (
    "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def _state() -> Storefront:
    return current_app.extensions["storefront"]


def _pipeline() -> RecommendationPipeline:
    return current_app.config["PIPELINE"]


def _store() -> EventStore:
    return current_app.config["EVENT_STORE"]


@bp.after_request
def security_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


# ----- errors: HTML pages (the API keeps its JSON errors) -------------------------------------


def _error(status: int, title: str, message: str):
    return render_template("storefront/error.html", title=title, message=message), status


@bp.errorhandler(params.BadParameter)
def bad_parameter(e: params.BadParameter):
    return _error(400, "Bad request", str(e))


@bp.errorhandler(CSRFError)
def csrf_error(e: CSRFError):
    return _error(400, "Form expired", f"The form was refused: {e.description} Reload the page.")


@bp.errorhandler(ProductNotFound)
def product_not_found(e: ProductNotFound):
    return _error(404, "Not found", f"There is no product {e.product_id!r}.")


@bp.errorhandler(VespaError)
def backend_error(e: VespaError):
    current_app.logger.warning("storefront: %s", e)
    if isinstance(e, VespaUnavailable):
        return _error(503, "Search is unavailable", "The search backend did not answer; try again.")
    return _error(502, "Search failed", "The search backend refused the request.")


# ----- the shopper --------------------------------------------------------------------------


def _user_id() -> str:
    """The session's shopper: the first demo shopper by default, else a fresh guest."""
    user_id = session.get("user_id")
    if isinstance(user_id, str) and params.ID_PATTERN.fullmatch(user_id):
        return user_id
    demo = _state().catalog.demo_users
    user_id = demo[0].user_id if demo else _guest_id()
    session["user_id"] = user_id
    return user_id


def _guest_id() -> str:
    return f"guest-{secrets.token_hex(6)}"


def _device() -> str:
    agent = request.headers.get("User-Agent", "")
    if "iPad" in agent or "Tablet" in agent:
        return "tablet"
    if "Mobi" in agent or "Android" in agent:
        return "mobile"
    return "desktop"


def _context() -> RecommendationContext:
    """The request's context: the hour (UTC, as the synthetic data's), the device from the
    User-Agent, the categories just browsed (session, newest first)."""
    browsed = session.get("browsed") or []
    return RecommendationContext(
        hour=datetime.now(UTC).hour,
        device=_device(),
        browsed_categories=tuple(c for c in browsed if isinstance(c, str)),
    )


def _shopper() -> rows.Shopper:
    return rows.shopper(_pipeline(), _store(), _user_id(), _context())


def _remember_browsed(category_id: str) -> None:
    browsed = [c for c in session.get("browsed") or [] if c != category_id]
    session["browsed"] = [category_id, *browsed][:BROWSED_KEPT]


@bp.app_context_processor
def page_globals() -> dict[str, Any]:
    if request.blueprint != "storefront":
        return {}
    state = _state()
    user_id = _user_id()
    demo = state.catalog.demo_user(user_id)
    return {
        "catalog": state.catalog,
        "current_user": user_id,
        "current_label": demo.label if demo else f"{user_id} (new shopper)",
        "demo_users": state.catalog.demo_users,
        "new_shopper": NEW_SHOPPER,
        "search_modes": SEARCH_MODES,
        "image_url": _image_url,
        "category_name": state.catalog.category_name,
        "seller_name": state.catalog.seller_name,
        "event_buttons": STOREFRONT_EVENTS,
    }


def _image_url(item: dict[str, Any]) -> str:
    path = item.get("category_path") or []
    return url_for(
        "storefront.product_image", product_id=item["product_id"], c=path[-1] if path else None
    )


# ----- pages --------------------------------------------------------------------------------


@bp.get("/")
def home():
    who = _shopper()
    state = _state()
    built, cards = rows.home(
        _pipeline(),
        _store(),
        state.queries,
        who,
        ROW_SIZE,
        int(current_app.config.get("BECAUSE_ROWS", 1)),
    )
    titles = {pid: c.get("title") or pid for pid, c in cards.items()}
    for row in built:
        for item in row.items:
            item["why"] = rows.why(item, titles)
    return render_template(
        "storefront/home.html", rows=built, has_purchases=any(r.key == "because" for r in built)
    )


@bp.get("/product/<product_id>")
def product(product_id: str):
    product_id = params.identifier("product_id", product_id)
    pipeline = _pipeline()
    doc = pipeline.product(product_id)
    item = {**doc, "product_id": product_id}
    path = list(doc.get("category_path") or [])
    if path:
        _remember_browsed(path[-1])
    similar = pipeline.similar(product_id, SIMILAR)
    together, together_how = _bought_together(product_id)
    seller = pipeline.vespa.get_document("seller", doc["seller_id"]) if doc.get("seller_id") else {}
    return render_template(
        "storefront/product.html",
        product=item,
        path=path,
        similar=similar,
        together=together,
        together_how=together_how,
        seller=seller or {},
        next_url=request.full_path.rstrip("?"),
    )


def _bought_together(product_id: str) -> tuple[list[dict[str, Any]], str]:
    """Co-interaction from the export's item-user graph: short random walks (item -> shopper ->
    item) from this product, most visited first. There is no purchase-only graph, so the page
    says what it is. Without a graph: nothing, and the page says so."""
    graph = getattr(_pipeline(), "graph", None)
    if graph is None:
        return [], "No co-interaction graph in this model export."
    visits = graph.walk_ids([product_id], TOGETHER_WALK, top_n=SIMILAR * 3)
    cards = _state().queries.cards(visits)
    items = [
        {**cards[p], "visit_share": share}
        for p, share in visits.items()
        if p in cards and cards[p]["in_stock"]
    ][:SIMILAR]
    how = (
        "Shoppers who clicked, favourited or bought this also did so with these "
        "(random walks on the shopper-product graph)."
    )
    return items, how


@bp.get("/seller/<seller_id>")
def seller(seller_id: str):
    seller_id = params.identifier("seller_id", seller_id)
    page = params.integer("page", request.args.get("page"), 1, 40, 1)
    doc = _pipeline().vespa.get_document("seller", seller_id)
    listing = _state().queries.by_seller(seller_id, PAGE_SIZE, (page - 1) * PAGE_SIZE)
    if doc is None and not listing.items:
        return _error(404, "Not found", f"There is no seller {seller_id!r}.")
    return render_template(
        "storefront/seller.html", seller=doc or {}, seller_id=seller_id, listing=listing, page=page
    )


@bp.get("/category/")
@bp.get("/category/<path:category_id>")
def category(category_id: str | None = None):
    catalog = _state().catalog
    page = params.integer("page", request.args.get("page"), 1, 40, 1)
    if category_id is None:
        return render_template("storefront/categories.html", roots=catalog.roots())
    category_id = params.identifier("category_id", category_id)
    listing = _state().queries.in_category(category_id, PAGE_SIZE, (page - 1) * PAGE_SIZE)
    if category_id not in catalog.categories and not listing.items:
        return _error(404, "Not found", f"There is no category {category_id!r}.")
    _remember_browsed(category_id)
    return render_template(
        "storefront/category.html",
        category_id=category_id,
        path=catalog.path(category_id),
        children=catalog.subcategories(category_id),
        listing=listing,
        page=page,
    )


@bp.get("/search")
def search():
    text = params.search_text(request.args.get("q"))
    mode = params.choice("mode", request.args.get("mode"), SEARCH_MODES, "text")
    page = params.integer("page", request.args.get("page"), 1, 40, 1)
    who = _shopper() if mode == "hybrid" else None
    listing = _state().queries.search(
        text, mode, PAGE_SIZE, (page - 1) * PAGE_SIZE, who.embedding if who else None
    )
    return render_template("storefront/search.html", q=text, mode=mode, listing=listing, page=page)


@bp.get("/inspect")
def inspect():
    row = params.choice("row", request.args.get("row"), rows.ROWS, "for-you")
    k = params.integer("k", request.args.get("k"), 1, 50, ROW_SIZE)
    show = params.integer("show", request.args.get("show"), 1, 100, 30)
    who = _shopper()
    result = inspection.inspect_row(_pipeline(), _store(), _state().queries, who, row, k, show)
    return render_template(
        "storefront/inspect.html",
        inspection=result,
        stage_titles=inspection.STAGE_TITLES,
        rows=rows.ROWS,
        row_titles=rows.ROW_TITLES,
        k=k,
    )


@bp.get("/images/product/<product_id>.svg")
def product_image(product_id: str):
    product_id = params.identifier("product_id", product_id)
    category_id = params.identifier("c", request.args.get("c"), required=False)
    catalog = _state().catalog
    path = catalog.path(category_id) if category_id else []
    label = catalog.category_name(category_id) if category_id else "product"
    response = Response(product_svg(product_id, path, label), mimetype="image/svg+xml")
    response.headers["Cache-Control"] = "public, max-age=86400"
    return response


# ----- forms --------------------------------------------------------------------------------


@bp.post("/shopper")
def switch_shopper():
    choice = request.form.get("shopper")
    catalog = _state().catalog
    if choice == NEW_SHOPPER:
        session["user_id"] = _guest_id()
        session["browsed"] = []
        flash("You are now a brand-new shopper: recommendations start from popularity.")
    elif isinstance(choice, str) and catalog.demo_user(choice) is not None:
        session["user_id"] = choice
        session["browsed"] = []
        flash(f"You are now shopping as {catalog.demo_user(choice).label}.")
    else:
        raise params.BadParameter("shopper", "must be one of the demo shoppers or 'new'")
    return redirect(params.local_path(request.form.get("next"), url_for("storefront.home")))


@bp.post("/events")
def post_event():
    product_id = params.identifier("product_id", request.form.get("product_id"))
    event_type = request.form.get("event_type")
    if event_type not in STOREFRONT_EVENTS:
        raise params.BadParameter("event_type", f"must be one of {', '.join(STOREFRONT_EVENTS)}")
    user_id = _user_id()
    request_context = _context()
    hour, device, location = request_context.hour, request_context.device, request_context.location
    recorded = record_event(
        _store(), _pipeline(), user_id, product_id, event_type, hour, device, location,
        context={"hour": hour, "device": device, "source": "storefront"},
    )  # fmt: skip
    name = recorded.product.get("title") or product_id
    if recorded.history_error is not None:
        current_app.logger.warning("storefront: history update failed: %s", recorded.history_error)
        flash(f"Saved, but recommendations will catch up later ({name}).")
    else:
        verb = {"favorite": "Added to favourites", "cart": "Added to cart", "purchase": "Bought"}
        flash(f"{verb[event_type]}: {name}. Your recommendations now include it.")
    return redirect(params.local_path(request.form.get("next"), url_for("storefront.home")))
