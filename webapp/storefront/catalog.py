"""What the storefront shows that Vespa does not store: category and seller names, the taxonomy
tree for browsing, and the demo shoppers of the user switcher.

Vespa's product documents carry ids only (``category_path`` holds every ancestor id, ``seller_id``);
the names live in the dataset folder (``categories.parquet``, ``sellers.parquet``), read once at
start-up when ``DATASET_DIR`` is configured. Without it the storefront still works: a category's
name is the last segment of its id and a seller's name is its id.

Demo shoppers are picked from the dataset's positive events so that their tastes differ: for each
root category, the most active user whose events fall mostly in it, buyers first (so that their
home page has a "because you bought" row).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

NEW_SHOPPER = "new"  # the switcher's value for "a brand-new shopper" (a fresh guest id)
DEMO_MIN_EVENTS = 5  # a demo shopper has at least this many positive events (personalised)


@dataclass(frozen=True)
class Category:
    category_id: str
    name: str
    parent_id: str | None


@dataclass(frozen=True)
class DemoUser:
    user_id: str
    label: str  # what the switcher shows, e.g. "u042: Home, Beauty"
    tastes: tuple[str, ...]  # root category ids, most frequent first


@dataclass
class Catalog:
    categories: dict[str, Category] = field(default_factory=dict)
    children: dict[str | None, list[str]] = field(default_factory=dict)  # None: the roots
    sellers: dict[str, str] = field(default_factory=dict)  # seller_id -> name
    demo_users: tuple[DemoUser, ...] = ()

    @classmethod
    def from_dataset(cls, folder: Path | str, demo_users: int = 4) -> Catalog:
        """Names and the taxonomy from a canonical dataset folder (pyarrow only, no trainer)."""
        import pyarrow.parquet as pq

        folder = Path(folder)
        for name in ("categories", "sellers", "events"):
            if not (folder / f"{name}.parquet").is_file():
                raise FileNotFoundError(
                    f"{folder}: no {name}.parquet (DATASET_DIR must be a dataset folder)"
                )
        cats = pq.read_table(folder / "categories.parquet").to_pylist()
        sellers = pq.read_table(folder / "sellers.parquet", columns=["seller_id", "name"])
        catalog = cls(
            sellers=dict(
                zip(
                    sellers.column("seller_id").to_pylist(),
                    sellers.column("name").to_pylist(),
                    strict=True,
                )
            )
        )
        for row in cats:
            catalog.add_category(row["category_id"], row["name"], row["parent_id"])
        catalog.demo_users = pick_demo_users(folder, catalog, demo_users)
        return catalog

    def add_category(self, category_id: str, name: str | None, parent_id: str | None) -> None:
        self.categories[category_id] = Category(category_id, name or category_id, parent_id)
        self.children.setdefault(parent_id, []).append(category_id)

    def category_name(self, category_id: str) -> str:
        category = self.categories.get(category_id)
        if category is not None:
            return category.name
        last = re.split(r"[/>|]", category_id)[-1].strip() or category_id
        return last.replace("_", " ").replace("-", " ").capitalize()

    def seller_name(self, seller_id: str | None) -> str:
        if not seller_id:
            return "unknown seller"
        return self.sellers.get(seller_id) or seller_id

    def path(self, category_id: str) -> list[str]:
        """Root first, ending at ``category_id``; just the id when the taxonomy does not know it."""
        out: list[str] = []
        node: str | None = category_id
        while node is not None and node not in out:
            out.append(node)
            category = self.categories.get(node)
            node = category.parent_id if category is not None else None
        return out[::-1]

    def roots(self) -> list[str]:
        return sorted(self.children.get(None, []), key=self.category_name)

    def subcategories(self, category_id: str) -> list[str]:
        return sorted(self.children.get(category_id, []), key=self.category_name)

    def demo_user(self, user_id: str) -> DemoUser | None:
        return next((u for u in self.demo_users if u.user_id == user_id), None)


def pick_demo_users(folder: Path, catalog: Catalog, count: int) -> tuple[DemoUser, ...]:
    """Up to ``count`` active users with different favourite root categories."""
    import json

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if count <= 0:
        return ()
    info = (
        json.loads((folder / "dataset.json").read_text())
        if (folder / "dataset.json").is_file()
        else {}
    )
    positive = info.get("positive_events") or ["click", "favorite", "cart", "purchase"]
    events = pq.read_table(
        folder / "events.parquet", columns=["user_id", "product_id", "event_type"]
    )
    events = events.filter(pc.is_in(events.column("event_type"), value_set=_array(positive)))
    products = pq.read_table(folder / "products.parquet", columns=["product_id", "category_id"])
    category_of = dict(
        zip(
            products.column("product_id").to_pylist(),
            products.column("category_id").to_pylist(),
            strict=True,
        )
    )
    per_user: dict[str, dict[str, int]] = {}
    buyers: set[str] = set()
    for user_id, product_id, event_type in zip(
        events.column("user_id").to_pylist(),
        events.column("product_id").to_pylist(),
        events.column("event_type").to_pylist(),
        strict=True,
    ):
        category = category_of.get(product_id)
        root = catalog.path(category)[0] if category else "unknown"
        counts = per_user.setdefault(user_id, {})
        counts[root] = counts.get(root, 0) + 1
        if event_type == "purchase":
            buyers.add(user_id)
    # Buyers first (their home page has a "because you bought" row), then the most active.
    ranked = sorted(
        ((sum(c.values()), user_id, c) for user_id, c in per_user.items()),
        key=lambda t: (t[1] not in buyers, -t[0], t[1]),
    )
    chosen: list[DemoUser] = []
    taken: set[str] = set()
    for total, user_id, counts in ranked:
        if total < DEMO_MIN_EVENTS:
            continue
        tastes = tuple(sorted(counts, key=lambda r: (-counts[r], r)))
        if tastes[0] in taken or tastes[0] == "unknown":
            continue
        taken.add(tastes[0])
        names = ", ".join(catalog.category_name(t) for t in tastes[:2])
        chosen.append(DemoUser(user_id, f"{user_id}: {names}", tastes))
        if len(chosen) == count:
            break
    return tuple(chosen)


def _array(values: Sequence[str]):
    import pyarrow as pa

    return pa.array(list(values), type=pa.string())
