"""The canonical marketplace data model: five tables with explicit Arrow schemas.

Every data source (the synthetic generator, the real-dataset loaders) produces these tables and
every model reads them, so a fact about the data is written here once. See docs/data-model.md for
the meaning of each column.

Conventions:
- ``*_id`` columns are external string ids; integer row indices (``*_idx``) appear only after
  :mod:`trainer.data.interactions` has mapped ids to rows.
- Timestamps are UTC, millisecond resolution.
- ``events.split`` is null unless the source dataset ships its own split (``train``, ``valid``,
  ``test``); the splitters in :mod:`trainer.data.splits` use it only for the ``fixed`` protocol.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

EVENT_TYPES: tuple[str, ...] = ("impression", "click", "favorite", "cart", "purchase")
"""Funnel order: each event type is a stronger signal than the one before it."""

DEVICES: tuple[str, ...] = ("mobile", "desktop", "tablet", "app")
SPLITS: tuple[str, ...] = ("train", "valid", "test")

TIMESTAMP = pa.timestamp("ms", tz="UTC")


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    nullable: bool
    doc: str


@dataclass(frozen=True)
class Table:
    """One table of the data model: its file name, columns, primary key and references."""

    name: str
    columns: tuple[Column, ...]
    key: str
    # (column, table) pairs: the column must hold keys of that table (null allowed if nullable)
    references: tuple[tuple[str, str], ...] = ()

    @property
    def file_name(self) -> str:
        return f"{self.name}.parquet"

    @property
    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.type, nullable=c.nullable) for c in self.columns])

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)


CATEGORIES = Table(
    name="categories",
    key="category_id",
    references=(("parent_id", "categories"),),
    columns=(
        Column("category_id", pa.string(), False, "External id, e.g. 'home/kitchen'."),
        Column("name", pa.string(), False, "Display name."),
        Column("parent_id", pa.string(), True, "Parent category; null for a root."),
    ),
)

SELLERS = Table(
    name="sellers",
    key="seller_id",
    columns=(
        Column("seller_id", pa.string(), False, "External id."),
        Column("name", pa.string(), False, "Display name."),
        Column("rating", pa.float64(), True, "Average rating in [0, 5]; null when unknown."),
        Column("created_at", TIMESTAMP, True, "When the seller joined; null when unknown."),
    ),
)

PRODUCTS = Table(
    name="products",
    key="product_id",
    references=(("category_id", "categories"), ("seller_id", "sellers")),
    columns=(
        Column("product_id", pa.string(), False, "External id."),
        Column("title", pa.string(), True, "Title; null when the source has none."),
        Column("description", pa.string(), True, "Description; null when the source has none."),
        Column("category_id", pa.string(), True, "Leaf category; null when unknown."),
        Column("seller_id", pa.string(), True, "Seller; null when unknown."),
        Column("price", pa.float64(), True, "Price in the marketplace currency, > 0."),
        Column("margin", pa.float64(), True, "Profit margin as a fraction of price, in [0, 1]."),
        Column("created_at", TIMESTAMP, True, "When the product was listed."),
        Column("in_stock", pa.bool_(), False, "Whether it can be bought now."),
        Column("consumable", pa.bool_(), False, "Bought repeatedly (so may be recommended again)."),
        Column(
            "attributes",
            pa.map_(pa.string(), pa.string()),
            True,
            "Free-form attributes (brand, colour, tags...).",
        ),
    ),
)

USERS = Table(
    name="users",
    key="user_id",
    columns=(
        Column("user_id", pa.string(), False, "External id."),
        Column("created_at", TIMESTAMP, True, "Sign-up time; null when unknown."),
        Column("location", pa.string(), True, "Home region; null when unknown."),
    ),
)

EVENTS = Table(
    name="events",
    key="",
    references=(("user_id", "users"), ("product_id", "products")),
    columns=(
        Column("user_id", pa.string(), False, "Who."),
        Column("product_id", pa.string(), False, "Which product."),
        Column("event_type", pa.string(), False, f"One of {', '.join(EVENT_TYPES)}."),
        Column("timestamp", TIMESTAMP, False, "When (UTC); ordinal for sources without times."),
        Column("hour", pa.int8(), True, "Local hour of day 0-23; null when unknown."),
        Column("device", pa.string(), True, f"One of {', '.join(DEVICES)}; null when unknown."),
        Column("location", pa.string(), True, "Region the event came from; null when unknown."),
        Column("split", pa.string(), True, "The source's own split (train/valid/test) or null."),
    ),
)

TABLES: tuple[Table, ...] = (CATEGORIES, SELLERS, PRODUCTS, USERS, EVENTS)
TABLES_BY_NAME: dict[str, Table] = {t.name: t for t in TABLES}
