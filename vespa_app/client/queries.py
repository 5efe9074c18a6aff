"""Query pieces the pipeline and the catalogue rows share: YQL literals and filters, the
context-popularity inputs, stored vectors, and the item dict every row returns."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from model_export.popularity import context_weights, weights_literal

CTX_WEIGHTS_QUERY = "input.query(ctx_weights)"


def quote(value: str) -> str:
    return json.dumps(value)  # a YQL string literal: double quotes, escaped


def vector(value: Any) -> list[float] | None:
    """A stored tensor as the document API returns it ({"values": [...]} or a plain list)."""
    if isinstance(value, dict):
        value = value.get("values")
    if isinstance(value, list) and value and all(isinstance(x, int | float) for x in value):
        return [float(x) for x in value]
    return None


def positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def eligibility(seen: Iterable[str], excluded: Sequence[str]) -> tuple[str, dict[str, str]]:
    """Hard eligibility as YQL: in stock, not ``seen`` (request parameter ``@seen``), under none
    of the ``excluded`` categories (``category_path`` holds every ancestor)."""
    clauses = ["in_stock = true"]
    params: dict[str, str] = {}
    seen = sorted(seen)
    if seen:
        clauses.append("!(product_id in (@seen))")
        params["seen"] = ",".join(seen)
    clauses += [f"!(category_path contains {quote(c)})" for c in excluded]
    return " and ".join(clauses), params


def under_any(categories: Sequence[str]) -> str:
    """`` and (category_path contains "a" or ...)``, or "" for no categories (at most 20)."""
    categories = list(dict.fromkeys(categories))[:20]
    if not categories:
        return ""
    return " and (" + " or ".join(f"category_path contains {quote(c)}" for c in categories) + ")"


def popularity_inputs(profile: str, hour: int | None, device: str | None) -> dict[str, Any]:
    """Ranking inputs of the context-popularity profile: the request's context weights
    (model_export.popularity)."""
    return {
        "ranking.profile": profile,
        CTX_WEIGHTS_QUERY: weights_literal(context_weights(hour, device)),
    }


def item(hit: Mapping[str, Any], score_name: str | None = None, score: Any = None) -> dict:
    """A product as the rows return it (similar, because-you-bought, trending, new arrivals)."""
    f = hit["fields"]
    out = {
        "product_id": f["product_id"],
        "title": f.get("title"),
        "seller_id": f.get("seller_id"),
        "category_path": f.get("category_path") or [],
        "price": f.get("price"),
        "created_at": f.get("created_at"),
        "consumable": bool(f.get("consumable", False)),
    }
    if score_name is not None:
        out[score_name] = score
    return out
