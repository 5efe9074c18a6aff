"""Producing the five tables chunk by chunk: validated, then kept in memory or streamed to Parquet.

One producer (:func:`produce`) feeds a sink; the in-memory sink (:func:`generate`) and the Parquet
sink (:func:`write_marketplace`) see exactly the same chunks, so a generated dataset and a written
one are the same data. Each chunk is conformed to its declared schema, its values checked, and
its references checked against the id sets, before it is accepted; so is the planted invariant
that no event precedes its user's sign-up or its product's listing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from trainer.data.marketplace import INFO_FILE, DatasetInfo, Marketplace
from trainer.data.schema import (
    CATEGORIES,
    EVENT_TYPES,
    EVENTS,
    PRODUCTS,
    SELLERS,
    TABLES,
    USERS,
    Table,
)
from trainer.data.synthetic.behaviour import (
    EventChunk,
    UserChunk,
    draw_events,
    draw_users,
    events_table,
    user_ids,
    users_table,
)
from trainer.data.synthetic.catalogue import Catalogue, build_catalogue
from trainer.data.synthetic.config import ScaleConfig, resolve_scale
from trainer.data.validation import (
    DataProblem,
    DataValidationError,
    check_references,
    check_values,
    conform_table,
    validate_tables,
)

PRODUCT_CHUNK = 200_000


class Sink(Protocol):
    def add(self, table: Table, data: pa.Table) -> None: ...


def _checked(table: Table, data: pa.Table, file: str, offset: int) -> pa.Table:
    """Conform and check one chunk; problems name rows of the whole file (chunk offset added)."""
    conformed, problems = conform_table(table, data, file)
    if conformed is not None:
        problems.extend(check_values(table, conformed, file))
    if problems:
        raise DataValidationError(
            [
                dataclasses.replace(p, row=None if p.row is None else p.row + offset)
                for p in problems
            ]
        )
    return conformed


def _check_reference(
    data: pa.Table, column: str, keys: pa.Array, target: Table, file: str, offset: int
) -> None:
    values = data.column(column)
    known = pc.or_(pc.is_in(values, value_set=keys), values.is_null())
    bad = np.flatnonzero(~known.to_numpy(zero_copy_only=False))
    if len(bad):
        raise DataValidationError(
            [
                DataProblem(
                    file,
                    int(row) + offset,
                    column,
                    f"unknown {target.key} {values[int(row)].as_py()!r} "
                    f"(not in {target.file_name})",
                )
                for row in bad[:3]
            ]
        )


def _check_event_times(
    cat: Catalogue, users: UserChunk, events: EventChunk, file: str, offset: int
):
    too_early = (events.time < users.created[events.user]) | (
        events.time < cat.product_created[events.product]
    )
    if too_early.any():
        row = int(np.flatnonzero(too_early)[0])
        raise DataValidationError(
            [
                DataProblem(
                    file, row + offset, "timestamp", "event before its user or product existed"
                )
            ]
        )


def produce(cat: Catalogue, sink: Sink, files: dict[str, str], progress: bool) -> np.ndarray:
    """Feed every table to the sink, chunk by chunk; returns event counts per EVENT_TYPES."""
    categories = _checked(CATEGORIES, cat.categories_table(), files["categories"], 0)
    sellers = _checked(SELLERS, cat.sellers_table(), files["sellers"], 0)
    found = check_references(
        {
            "categories": categories,
            "sellers": sellers,
            "products": PRODUCTS.arrow_schema.empty_table(),
            "users": USERS.arrow_schema.empty_table(),
            "events": EVENTS.arrow_schema.empty_table(),
        },
        files,
    )
    if found:
        raise DataValidationError(found)
    sink.add(CATEGORIES, categories)
    sink.add(SELLERS, sellers)
    category_keys = categories.column("category_id").combine_chunks()
    seller_keys = sellers.column("seller_id").combine_chunks()
    num_products = len(cat.product_leaf)
    for lo in range(0, num_products, PRODUCT_CHUNK):
        hi = min(lo + PRODUCT_CHUNK, num_products)
        products = _checked(PRODUCTS, cat.product_table(lo, hi), files["products"], lo)
        _check_reference(products, "category_id", category_keys, CATEGORIES, files["products"], lo)
        _check_reference(products, "seller_id", seller_keys, SELLERS, files["products"], lo)
        sink.add(PRODUCTS, products)

    counts = np.zeros(len(EVENT_TYPES), np.int64)
    event_rows = 0
    num_users = cat.config.num_users
    step = cat.config.chunk_users
    with tqdm(total=num_users, unit="users", disable=not progress, desc="generate") as bar:
        for lo in range(0, num_users, step):
            hi = min(lo + step, num_users)
            users = draw_users(cat, lo, hi)
            events = draw_events(cat, users)
            _check_event_times(cat, users, events, files["events"], event_rows)
            ids = user_ids(cat, lo, hi)
            user_table = _checked(USERS, users_table(cat, users, ids), files["users"], lo)
            event_table = _checked(
                EVENTS, events_table(cat, events, ids), files["events"], event_rows
            )
            _check_reference(event_table, "user_id", ids, USERS, files["events"], event_rows)
            _check_reference(
                event_table, "product_id", cat.product_ids, PRODUCTS, files["events"], event_rows
            )
            sink.add(USERS, user_table)
            sink.add(EVENTS, event_table)
            counts += np.bincount(events.event, minlength=len(EVENT_TYPES))
            event_rows += len(events)
            bar.set_postfix(events=f"{event_rows:,}", refresh=False)
            bar.update(hi - lo)
    return counts


def dataset_info(cat: Catalogue, counts: np.ndarray) -> DatasetInfo:
    config = cat.config
    iso = lambda t: datetime.fromtimestamp(t, UTC).isoformat()  # noqa: E731
    return DatasetInfo(
        name=f"marketplace-{config.name}",
        source="synthetic",
        timestamps="real",
        split="temporal",
        positive_events=("click", "favorite", "cart", "purchase"),
        notes=(
            f"Synthetic marketplace, scale {config.name!r}, seed {cat.seed}: planted tastes, "
            "popularity, seller quality, price sensitivity, funnel, repeats, seasonality, drift, "
            "new items and users, context effects (see docs/synthetic-marketplace.md)."
        ),
        extra={
            "scale": config.name,
            "seed": cat.seed,
            "period": {"start": iso(cat.start), "end": iso(cat.end)},
            "config": config.to_json_dict(),
            "event_counts": {name: int(c) for name, c in zip(EVENT_TYPES, counts, strict=True)},
        },
    )


class _MemorySink:
    def __init__(self) -> None:
        self.parts: dict[str, list[pa.Table]] = {t.name: [] for t in TABLES}

    def add(self, table: Table, data: pa.Table) -> None:
        self.parts[table.name].append(data)

    def tables(self) -> dict[str, pa.Table]:
        return {
            t.name: pa.concat_tables(self.parts[t.name])
            if self.parts[t.name]
            else t.arrow_schema.empty_table()
            for t in TABLES
        }


class _ParquetSink:
    def __init__(self, folder: Path) -> None:
        self.writers = {
            t.name: pq.ParquetWriter(folder / t.file_name, t.arrow_schema) for t in TABLES
        }

    def add(self, table: Table, data: pa.Table) -> None:
        self.writers[table.name].write_table(data)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


def generate(
    scale: str | ScaleConfig = "tiny", seed: int = 0, progress: bool = False
) -> Marketplace:
    """The whole marketplace in memory (fine up to ``medium``); same data as write_marketplace."""
    cat = build_catalogue(resolve_scale(scale), seed)
    sink = _MemorySink()
    counts = produce(cat, sink, {t.name: t.file_name for t in TABLES}, progress)
    tables = validate_tables(sink.tables())
    return Marketplace.from_arrow(dataset_info(cat, counts), tables)


def write_marketplace(
    scale: str | ScaleConfig, seed: int, folder: Path, progress: bool = True
) -> Path:
    """Generate any scale chunk by chunk, streaming validated chunks into a dataset folder.

    Memory is bounded by the catalogue plus one chunk of users. ``dataset.json`` is written last,
    so an interrupted run never leaves a folder that looks complete.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / INFO_FILE).unlink(missing_ok=True)
    cat = build_catalogue(resolve_scale(scale), seed)
    sink = _ParquetSink(folder)
    try:
        counts = produce(cat, sink, {t.name: str(folder / t.file_name) for t in TABLES}, progress)
    finally:
        sink.close()
    (folder / INFO_FILE).write_text(dataset_info(cat, counts).to_json() + "\n")
    return folder


def iter_users(
    scale: str | ScaleConfig, seed: int
) -> Iterator[tuple[Catalogue, UserChunk, pa.Array]]:
    """The planted users chunk by chunk (with the catalogue), without drawing any event."""
    cat = build_catalogue(resolve_scale(scale), seed)
    for lo in range(0, cat.config.num_users, cat.config.chunk_users):
        hi = min(lo + cat.config.chunk_users, cat.config.num_users)
        yield cat, draw_users(cat, lo, hi), user_ids(cat, lo, hi)
