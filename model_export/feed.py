"""Feed an export and its dataset to Vespa (or the embedded engine) through pyvespa.

Documents are built as Python data (pyvespa serialises them as JSON):

- ``product``: the package's product fields from the dataset (category_path from the taxonomy,
  root first; created_at in epoch seconds; ``consumable`` from the products table;
  popularity = positive events of the product; ``ctx_popularity`` = its lift per context key,
  :mod:`model_export.popularity`) and the L2-normalised embedding (the field's metric is
  prenormalized-angular); ``seller_idx`` / ``category_idx``: the product's index in the export
  manifest's ``ranker.code_ids`` (the ranker's training id maps; without them the dataset's
  sorted seller / category ids, the same definition), -1 when unknown;
- ``user``: the L2-normalised embedding (it is the nearestNeighbor query vector), the newest
  positive events first: at most 100 as ``history_product_ids`` and ``recent_item_idx`` (rows of
  the export's product list; the ranker's history) and their first 50 as
  ``recent_product_ids`` (exclusions, walk seeds), with each event's context aligned with
  ``recent_item_idx`` (``recent_event_types``,
  ``recent_hours`` (-1 unknown), ``recent_devices``, ``recent_locations`` ("" unknown): the
  ``ranking_features`` profile's history codes), the newest purchases first (at most 50) as
  ``recent_purchases``, ``updated_at`` = the newest event's time;
- ``seller``: ``seller_id``, ``rating`` and ``embedding`` (the L2-normalised sales-weighted mean of
  its products' normalised embeddings, :func:`seller_vectors`) as partial updates with create, so
  business flags (``is_blocked``, ``promoted``) set by operators survive a re-feed.

Popularity, context popularity and purchases come from every event of the dataset: at serving
time the whole log is the past (the model's own held-out targets matter only offline).

Every id is ``id:<type>:<type>::<id>`` (namespace = document type). Products and users are
complete puts, so feeding twice leaves the same documents. ``embeddings_only`` sends only the
embedding fields (products, users, sellers) as partial updates (assign): the refresh after
retraining.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from model_export.export import read_embeddings
from model_export.manifest import ExportError, Manifest
from model_export.popularity import context_popularity
from model_export.query import CONTEXT_FIELDS

RECENT = 50  # recent_product_ids, recent_purchases
HISTORY = 100  # history_product_ids, recent_item_idx and the per-event context (ranker history)
CODE_FIELDS = {"seller": "seller_idx", "category": "category_idx"}
DOC_TYPES = ("product", "user", "seller")


def normalized(table: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(table, axis=1, keepdims=True)
    return table / np.where(norms > 0, norms, 1.0)


def _tensor(row: np.ndarray) -> dict[str, list[float]]:
    return {"values": [float(x) for x in row]}


def _seconds(value: Any) -> int | None:
    if value is None or pd.isna(value):
        return None
    return int(pd.Timestamp(value).timestamp())


def category_paths(categories: pd.DataFrame) -> dict[str, list[str]]:
    """category_id -> [root, ..., category_id] following parent_id."""
    parent = dict(zip(categories["category_id"], categories["parent_id"], strict=True))
    paths: dict[str, list[str]] = {}
    for category in parent:
        path, node = [], category
        while isinstance(node, str) and node not in path and len(path) <= len(parent):
            path.append(node)
            node = parent.get(node)
        paths[category] = path[::-1]
    return paths


def _drop_missing(fields: dict[str, Any]) -> dict[str, Any]:
    """Absent source values are left out (the field stays empty), never invented."""
    return {k: v for k, v in fields.items() if v is not None and not _isnan(v)}


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and np.isnan(value)


def positive_events(market: Any) -> pd.DataFrame:
    events = market.events
    keep = events["event_type"].isin(list(market.info.positive_events))
    columns = ["user_id", "product_id", "timestamp", "event_type"]
    columns += [c for c in ("hour", "device", "location") if c in events]
    return events.loc[keep, columns]


def purchase_counts(market: Any) -> pd.Series:
    events = market.events
    return events.loc[events["event_type"] == "purchase", "product_id"].value_counts()


def seller_vectors(market: Any, product_ids: list[str], table: np.ndarray) -> dict[str, np.ndarray]:
    """seller_id -> the L2-normalised mean of its products' normalised embeddings, each
    weighted by 1 + its purchases (sales-weighted; the 1 lets a seller without sales still be
    placed by what it lists). Sellers with no product in the export get none."""
    vectors = normalized(np.asarray(table, dtype=np.float64))
    row_of = {p: i for i, p in enumerate(product_ids)}
    products = market.products[market.products["product_id"].isin(row_of)]
    products = products[products["seller_id"].notna()]
    sales = purchase_counts(market)
    out: dict[str, np.ndarray] = {}
    for seller_id, group in products.groupby("seller_id", sort=True):
        rows = np.array([row_of[p] for p in group["product_id"]])
        weights = 1.0 + sales.reindex(group["product_id"]).fillna(0).to_numpy(dtype=np.float64)
        mean = (weights[:, None] * vectors[rows]).sum(axis=0)
        norm = np.linalg.norm(mean)
        if norm > 0:
            out[str(seller_id)] = (mean / norm).astype(np.float32)
    return out


def code_maps(market: Any, manifest: Manifest | None = None) -> dict[str, dict[str, int]]:
    """seller / category id -> the index written as ``seller_idx`` / ``category_idx``: the
    export manifest's ``ranker.code_ids`` (the ranker's training maps) where it has them, else
    the dataset's sorted ids (the definition those maps follow)."""
    from trainer.ranking.features import code_vocabularies

    recorded = ((manifest.ranker if manifest is not None else None) or {}).get("code_ids") or {}
    dataset = code_vocabularies(market, tuple(CODE_FIELDS))
    return {
        name: {v: i for i, v in enumerate(recorded.get(name) or dataset[name])}
        for name in CODE_FIELDS
    }


def product_documents(
    market: Any,
    ids: list[str],
    table: np.ndarray,
    embeddings_only: bool = False,
    codes: dict[str, dict[str, int]] | None = None,
) -> Iterator[dict[str, Any]]:
    """``codes``: :func:`code_maps` (default: the dataset's sorted ids)."""
    vectors = normalized(table)
    if embeddings_only:
        for product_id, row in zip(ids, vectors, strict=True):
            yield {"id": product_id, "fields": {"embedding": _tensor(row)}}
        return
    products = market.products.set_index("product_id", drop=False)
    missing = [p for p in ids if p not in products.index]
    if missing:
        raise ExportError(f"dataset has no product {missing[0]!r} of the export's product_ids")
    paths = category_paths(market.categories)
    codes = codes if codes is not None else code_maps(market)
    positives = positive_events(market)
    popularity = positives["product_id"].value_counts()
    in_context = context_popularity(positives, ids)
    for product_id, row, lifts in zip(ids, vectors, in_context, strict=True):
        p = products.loc[product_id]
        fields = {
            "product_id": product_id,
            "title": p["title"],
            "description": p["description"],
            "category_path": paths.get(p["category_id"])
            if isinstance(p["category_id"], str)
            else None,
            "seller_id": p["seller_id"],
            "seller_idx": codes["seller"].get(p["seller_id"], -1),
            "category_idx": codes["category"].get(p["category_id"], -1),
            "price": None if pd.isna(p["price"]) else float(p["price"]),
            "margin": None if pd.isna(p["margin"]) else float(p["margin"]),
            "created_at": _seconds(p["created_at"]),
            "in_stock": bool(p["in_stock"]),
            "consumable": bool(p["consumable"]),
            "popularity": float(popularity.get(product_id, 0)),
            "embedding": _tensor(row),
        }
        if lifts:
            fields["ctx_popularity"] = {key: round(value, 6) for key, value in lifts.items()}
        yield {"id": product_id, "fields": _drop_missing(fields)}


def user_documents(
    market: Any,
    ids: list[str],
    table: np.ndarray,
    product_ids: list[str],
    embeddings_only: bool = False,
) -> Iterator[dict[str, Any]]:
    vectors = normalized(table)
    if embeddings_only:
        for user_id, row in zip(ids, vectors, strict=True):
            yield {"id": user_id, "fields": {"embedding": _tensor(row)}}
        return
    row_of = {product_id: idx for idx, product_id in enumerate(product_ids)}
    events = positive_events(market)
    # Newest first; ties keep the file's order reversed, as a stable sort of the reversed frame.
    events = events.iloc[::-1].sort_values("timestamp", ascending=False, kind="stable")
    recent = {user: group.head(HISTORY) for user, group in events.groupby("user_id", sort=False)}
    bought = market.events[market.events["event_type"] == "purchase"]
    bought = bought.iloc[::-1].sort_values("timestamp", ascending=False, kind="stable")
    purchases = {
        user: list(dict.fromkeys(group["product_id"]))[:RECENT]
        for user, group in bought.groupby("user_id", sort=False)
    }
    last_event = market.events.groupby("user_id")["timestamp"].max()
    for user_id, row in zip(ids, vectors, strict=True):
        fields: dict[str, Any] = {"user_id": user_id, "embedding": _tensor(row)}
        history = recent.get(user_id)
        products = [] if history is None else history["product_id"].tolist()
        fields["history_product_ids"] = products
        fields["recent_product_ids"] = products[:RECENT]
        fields["recent_item_idx"] = [row_of[p] for p in products if p in row_of]
        if len(fields["recent_item_idx"]) != len(products):
            unknown = next(p for p in products if p not in row_of)
            raise ExportError(f"user {user_id!r}: product {unknown!r} is not in the export")
        fields.update(_recent_context(history))
        fields["recent_purchases"] = purchases.get(user_id, [])
        fields["updated_at"] = _seconds(last_event.get(user_id))
        yield {"id": user_id, "fields": _drop_missing(fields)}


def _recent_context(history: pd.DataFrame | None) -> dict[str, list[Any]]:
    """Each recent event's type, hour, device and location, aligned with recent_item_idx."""
    if history is None:
        return {k: [] for k in CONTEXT_FIELDS.values()}

    def column(name: str, missing: Any, cast) -> list[Any]:
        if name not in history:
            return [missing] * len(history)
        return [missing if pd.isna(v) else cast(v) for v in history[name]]

    return {
        CONTEXT_FIELDS["event"]: column("event_type", "", str),
        CONTEXT_FIELDS["hour"]: column("hour", -1, int),
        CONTEXT_FIELDS["device"]: column("device", "", str),
        CONTEXT_FIELDS["location"]: column("location", "", str),
    }


def seller_documents(
    market: Any, vectors: dict[str, np.ndarray] | None = None
) -> Iterator[dict[str, Any]]:
    vectors = vectors or {}
    for seller in market.sellers.itertuples(index=False):
        rating = None if pd.isna(seller.rating) else float(seller.rating)
        vector = vectors.get(seller.seller_id)
        fields = {
            "seller_id": seller.seller_id,
            "rating": rating,
            "embedding": None if vector is None else _tensor(vector),
        }
        yield {"id": seller.seller_id, "fields": _drop_missing(fields)}


@dataclass
class FeedReport:
    sent: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def feed(
    export_dir: Path,
    market: Any,
    url: str,
    *,
    types: tuple[str, ...] = DOC_TYPES,
    embeddings_only: bool = False,
    progress: bool = True,
    max_workers: int = 8,
    max_connections: int = 4,
) -> FeedReport:
    """Send the documents; returns counts and every failed operation (id, status, message)."""
    from tqdm import tqdm
    from vespa.application import Vespa

    manifest = Manifest.read(export_dir)
    product_ids, products = read_embeddings(export_dir, manifest, "product")
    user_ids, users = read_embeddings(export_dir, manifest, "user")
    app = Vespa(url=url)
    report = FeedReport()
    plans: list[tuple[str, int, Iterator[dict[str, Any]], str, dict[str, Any]]] = []
    if "product" in types:
        codes = code_maps(market, manifest)
        docs = product_documents(market, product_ids, products, embeddings_only, codes)
        plans.append(("product", len(product_ids), docs, *_operation(embeddings_only)))
    if "user" in types:
        docs = user_documents(market, user_ids, users, product_ids, embeddings_only)
        plans.append(("user", len(user_ids), docs, *_operation(embeddings_only)))
    if "seller" in types:
        vectors = seller_vectors(market, product_ids, products)
        if embeddings_only:  # the sellers' vectors follow their products' new ones
            docs = (
                {"id": seller, "fields": {"embedding": _tensor(vector)}}
                for seller, vector in vectors.items()
            )
            plans.append(("seller", len(vectors), docs, *_operation(True)))
        else:
            docs = seller_documents(market, vectors)
            plans.append(("seller", len(market.sellers), docs, "update", {"create": True}))
    for doc_type, total, docs, operation, options in plans:
        bar = tqdm(total=total, desc=f"feed {doc_type}", unit="doc", disable=not progress)

        def done(response: Any, doc_id: str, doc_type: str = doc_type, bar: Any = bar) -> None:
            bar.update(1)
            if not response.is_successful():
                body = response.get_json() or {}
                message = body.get("message") or body.get("Exception") or body
                report.failures.append(
                    f"{doc_type} {doc_id}: HTTP {response.status_code}: {message}"
                )

        app.feed_iterable(
            docs,
            schema=doc_type,
            namespace=doc_type,
            callback=done,
            operation_type=operation,
            max_workers=max_workers,
            max_connections=max_connections,
            **options,
        )
        bar.close()
        report.sent[doc_type] = total
    return report


def _operation(embeddings_only: bool) -> tuple[str, dict[str, Any]]:
    # A refresh must not create documents that a full feed never sent (create=False: 404 then).
    return ("update", {"create": False}) if embeddings_only else ("feed", {})
