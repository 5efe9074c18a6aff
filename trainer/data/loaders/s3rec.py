"""The S3-Rec sequence format (Zhou et al., CIKM 2020, https://arxiv.org/abs/2008.07873).

A folder holds, for one dataset name ``<Name>``:

- ``<Name>.txt``: one user per line, ``user item_1 ... item_n``, items in time order, ids 1-based;
- ``<Name>_item2attributes.json``: ``{"item": [attribute, ...]}`` (anonymised attribute ids);
- optionally ``<Name>_attribute_id2name*.json`` (``{"attribute": "name"}``), ``datamaps.json``
  (P5-style maps: ``id2item`` to the source's item ids, ``id2attribute`` to names) and
  ``<Name>_sample.txt`` (``user neg_1 ... neg_99``: fixed negatives for the sampled protocol).

Attributes become sellers and categories only where they have names (see :func:`split_attributes`):
an attribute list shaped ``[brand, root category, sub category, ...]`` (Amazon) gives the brand as
the seller and the category path as a taxonomy; a bag of named attributes (Yelp) gives flat
categories; unnamed attributes (LastFM tags) give neither. Every attribute id is kept in
``products.attributes["attribute_ids"]``.
"""

from __future__ import annotations

import html
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.data.interactions import IdMap
from trainer.data.loaders._build import (
    EventArrays,
    build_marketplace,
    categories_frame,
    constant,
    products_frame,
    sellers_frame,
)
from trainer.data.loaders._text import (
    check_min_id,
    check_unique_lines,
    fail,
    read_int_tokens,
    read_json,
    user_then_items,
)
from trainer.data.marketplace import DatasetInfo, Marketplace
from trainer.data.schema import EVENT_TYPES

ATTRIBUTES_SUFFIX = "_item2attributes.json"
MAX_HISTORY = 50  # the S3-Rec papers' maximum sequence length
# Sources whose events are not purchases (the S3-Rec LastFM file is artist tagging).
CLICK_SOURCES = frozenset({"lastfm"})
# An attribute layout counts as [brand, category path...] when this share of lists fits it.
BRAND_PATH_SHARE = 0.95


@dataclass(frozen=True)
class S3RecFiles:
    name: str
    sequences: Path
    attributes: Path
    names: Path | None
    datamaps: Path | None
    negatives: Path | None


def find_files(folder: Path) -> S3RecFiles:
    """Locate the files of an S3-Rec folder; a missing or ambiguous one is an error."""
    folder = Path(folder)
    found = sorted(folder.glob(f"*{ATTRIBUTES_SUFFIX}"))
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise fail(folder, None, "-", f"expected one *{ATTRIBUTES_SUFFIX} file, found {what}")
    name = found[0].name[: -len(ATTRIBUTES_SUFFIX)]
    sequences = folder / f"{name}.txt"
    if not sequences.is_file():
        raise fail(sequences, None, "-", f"file not found (sequences for {found[0].name})")
    names = sorted(folder.glob(f"{name}_attribute_id2name*.json"))
    datamaps = folder / "datamaps.json"
    negatives = folder / f"{name}_sample.txt"
    return S3RecFiles(
        name=name,
        sequences=sequences,
        attributes=found[0],
        names=names[0] if names else None,
        datamaps=datamaps if datamaps.is_file() else None,
        negatives=negatives if negatives.is_file() else None,
    )


def read_sequences(path: Path, event_type: str = "purchase") -> EventArrays:
    """(user, item) events in file order from ``user item ...`` lines (1-based ids)."""
    tokens = read_int_tokens(path, user_then_items)
    heads = check_unique_lines(tokens)
    check_min_id(tokens, np.ones(len(tokens), dtype=bool), 1, "user/item")
    lengths = np.diff(np.append(heads, len(tokens))) - 1
    if (lengths == 0).any():
        row = int(heads[np.argmax(lengths == 0)])
        raise tokens.problem(row, "a user line with no items")
    is_item = tokens.position > 0
    user = np.repeat(tokens.values[heads], lengths)
    return EventArrays(user, tokens.values[is_item], constant(event_type, len(user)))


def read_item_attributes(path: Path) -> dict[int, list[int]]:
    """``{"item": [attribute, ...]}`` with integer ids, checked."""
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise fail(
            path, None, "-", f"expected a JSON object of item -> attribute list, got {_kind(raw)}"
        )
    out: dict[int, list[int]] = {}
    for key, value in raw.items():
        item = _int_key(path, key, "item")
        if not isinstance(value, list) or not all(_is_id(a) for a in value):
            raise fail(
                path, None, f"item {key}", f"expected a list of positive integer ids, got {value!r}"
            )
        out[item] = value
    return out


def read_attribute_names(path: Path) -> dict[int, str]:
    """``{"attribute": "name"}``; names are HTML-unescaped (Amazon metadata has ``&#39;``).

    An empty name (Beauty's attribute 497 is the empty brand string of the Amazon metadata) leaves
    the attribute unnamed: it stays in ``attribute_ids`` but becomes no seller or category.
    """
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise fail(
            path, None, "-", f"expected a JSON object of attribute -> name, got {_kind(raw)}"
        )
    out = {}
    for key, value in raw.items():
        attribute = _int_key(path, key, "attribute")
        if not isinstance(value, str):
            raise fail(path, None, f"attribute {key}", f"expected a name string, got {value!r}")
        if html.unescape(value).strip():
            out[attribute] = html.unescape(value).strip()
    return out


def _is_id(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _int_key(path: Path, key: str, what: str) -> int:
    if not key.isdigit() or int(key) < 1:
        raise fail(path, None, f"{what} {key}", f"key {key!r} is not a positive integer {what} id")
    return int(key)


def _kind(value) -> str:
    return type(value).__name__


@dataclass(frozen=True)
class AttributeRoles:
    """What the attributes of each item mean: seller (brand), leaf category, taxonomy."""

    layout: str  # "brand_path", "bag" or "unnamed"
    seller: dict[int, int]  # item -> brand attribute
    category: dict[int, int]  # item -> leaf category attribute
    parents: dict[int, int | None]  # category attribute -> parent (None for a root)


def infer_layout(lists: list[list[int]]) -> str:
    """ "brand_path" when lists look like ``[brand?, root, sub, ...]``, else "bag".

    Brands are never preceded by anything, so an attribute seen only in first position is a brand
    candidate and whatever follows one is a root category. If (almost) every list then starts at
    a root or at a brand followed by a root, the lists are category paths (Amazon); otherwise they
    are unordered bags (Yelp categories, LastFM tags).
    """
    lists = [v for v in lists if v]
    if not lists:
        return "bag"
    later = {a for v in lists for a in v[1:]}
    only_first = {v[0] for v in lists} - later
    roots = {v[1] for v in lists if len(v) > 1 and v[0] in only_first}
    if not roots:
        return "bag"
    fits = sum(1 for v in lists if v[0] in roots or (len(v) > 1 and v[1] in roots))
    return "brand_path" if fits >= BRAND_PATH_SHARE * len(lists) else "bag"


def split_attributes(item_attrs: dict[int, list[int]], names: dict[int, str]) -> AttributeRoles:
    """Assign sellers and categories from named attributes (see the module docstring)."""
    if not names:
        return AttributeRoles("unnamed", {}, {}, {})
    named = {item: [a for a in attrs if a in names] for item, attrs in item_attrs.items()}
    layout = infer_layout(list(named.values()))
    if layout == "bag":
        return _flat_categories(named)
    lists = [v for v in named.values() if v]
    later = {a for v in lists for a in v[1:]}
    only_first = {v[0] for v in lists} - later
    roots = {v[1] for v in lists if len(v) > 1 and v[0] in only_first}
    seller: dict[int, int] = {}
    category: dict[int, int] = {}
    depth: dict[int, int] = {}
    predecessors: dict[int, Counter] = {}
    for item, attrs in named.items():
        if not attrs:
            continue
        rest = attrs
        if attrs[0] not in roots:
            seller[item] = attrs[0]
            rest = attrs[1:]
        paths = _paths(rest, roots)
        if paths:
            category[item] = paths[0][-1]
        for path in paths:
            for level, attribute in enumerate(path):
                depth[attribute] = min(depth.get(attribute, level), level)
                if level:
                    predecessors.setdefault(attribute, Counter())[path[level - 1]] += 1
    parents: dict[int, int | None] = {}
    for attribute in sorted(depth):
        # A parent must sit strictly higher, so the taxonomy cannot contain a cycle even when a
        # name occurs under several parents ("Body" under Skin Care and Bath & Body).
        candidates = [
            (count, -p)
            for p, count in predecessors.get(attribute, Counter()).items()
            if depth[p] < depth[attribute]
        ]
        parents[attribute] = -max(candidates)[1] if candidates else None
    return AttributeRoles("brand_path", seller, category, parents)


def _paths(attrs: list[int], roots: set[int]) -> list[list[int]]:
    """Split a concatenation of category paths at each root."""
    paths: list[list[int]] = []
    for attribute in attrs:
        if attribute in roots or not paths:
            paths.append([attribute])
        else:
            paths[-1].append(attribute)
    return paths


def _flat_categories(named: dict[int, list[int]]) -> AttributeRoles:
    """Every named attribute is a root category; an item's category is its rarest attribute."""
    frequency = Counter(a for attrs in named.values() for a in set(attrs))
    category = {
        item: min(attrs, key=lambda a: (frequency[a], attrs.index(a)))
        for item, attrs in named.items()
        if attrs
    }
    return AttributeRoles("bag", {}, category, dict.fromkeys(sorted(frequency)))


def _names_from_datamaps(datamaps: dict, used: set[int]) -> dict[int, str]:
    """``id2attribute`` names, only when they number exactly the attributes used.

    P5-style maps may number attributes differently (Beauty's has 2,320 names for 637 S3-Rec ids);
    an exact match of the id sets is the evidence that the numbering is shared.
    """
    raw = datamaps.get("id2attribute")
    if not isinstance(raw, dict):
        return {}
    try:
        names = {int(k): html.unescape(str(v)).strip() for k, v in raw.items()}
    except ValueError:
        return {}
    if set(names) != used:
        return {}
    return {k: v for k, v in names.items() if v}


def _source_item_ids(datamaps: dict | None, items: np.ndarray) -> dict[int, str]:
    """The source's own item ids (Amazon ASIN, Yelp business id) when the map covers the items."""
    raw = (datamaps or {}).get("id2item")
    if not isinstance(raw, dict) or len(raw) != len(items):
        return {}
    try:
        mapped = {int(k): str(v) for k, v in raw.items()}
    except ValueError:
        return {}
    return mapped if set(mapped) == set(items.tolist()) else {}


def load_s3rec(folder: Path, event_type: str | None = None, name: str | None = None) -> Marketplace:
    """Load an S3-Rec folder; ``event_type`` defaults to purchase (click for LastFM tagging)."""
    folder = Path(folder)
    files = find_files(folder)
    if event_type is None:
        event_type = "click" if files.name.lower() in CLICK_SOURCES else "purchase"
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r} (one of {', '.join(EVENT_TYPES)})")
    events = read_sequences(files.sequences, event_type)
    item_attrs = read_item_attributes(files.attributes)
    users = np.unique(events.user)
    items = np.union1d(np.unique(events.item), np.fromiter(item_attrs, dtype=np.int64))
    used = {a for attrs in item_attrs.values() for a in attrs}

    datamaps = read_json(files.datamaps) if files.datamaps else None
    if datamaps is not None and not isinstance(datamaps, dict):
        raise fail(files.datamaps, None, "-", f"expected a JSON object, got {_kind(datamaps)}")
    if files.names is not None:
        names, names_from = read_attribute_names(files.names), files.names.name
    else:
        names = _names_from_datamaps(datamaps, used) if datamaps else {}
        names_from = f"{files.datamaps.name} id2attribute (probable)" if names else ""
    roles = split_attributes(item_attrs, names)
    source_ids = _source_item_ids(datamaps, items)

    attributes: list[dict[str, str] | None] = []
    for item in items.tolist():
        attrs = item_attrs.get(item)
        entry: dict[str, str] = {}
        if attrs is not None:
            entry["attribute_ids"] = " ".join(map(str, attrs))
            labelled = [names[a] for a in attrs if a in names]
            if labelled:
                entry["attribute_names"] = " | ".join(labelled)
            if item in roles.seller:
                entry["brand"] = names[roles.seller[item]]
        if item in source_ids:
            entry["source_id"] = source_ids[item]
        attributes.append(entry or None)
    category_id = np.array(
        [str(roles.category[i]) if i in roles.category else None for i in items.tolist()],
        dtype=object,
    )
    seller_id = np.array(
        [str(roles.seller[i]) if i in roles.seller else None for i in items.tolist()], dtype=object
    )
    categories = categories_frame(
        [
            (str(a), names[a], None if p is None else str(p))
            for a, p in sorted(roles.parents.items())
        ]
    )
    sellers = sellers_frame([(str(a), names[a]) for a in sorted(set(roles.seller.values()))])

    info = DatasetInfo(
        name=name or folder.name,
        source=f"S3-Rec sequence files {files.sequences.name} + {files.attributes.name}",
        timestamps="ordinal",
        split="leave_one_out",
        max_history=MAX_HISTORY,
        positive_events=(event_type,),
        notes=_notes(files, event_type, roles, names_from, bool(source_ids)),
        extra={
            "format": "s3rec",
            "attribute_layout": roles.layout,
            "attribute_names_from": names_from or None,
            "negatives_file": files.negatives.name if files.negatives else None,
        },
    )
    return build_marketplace(
        info,
        users,
        items,
        events,
        products=products_frame(items, category_id, seller_id, attributes),
        categories=categories,
        sellers=sellers,
    )


def _notes(files: S3RecFiles, event_type: str, roles, names_from: str, has_source: bool) -> str:
    lines = [
        f"Each item in a user's line of {files.sequences.name} is one '{event_type}' event "
        "(S3-Rec sequences are in time order; no times are published).",
        "Timestamps are synthetic and ordinal: 2020-01-01 UTC + the event's position in its "
        "user's sequence, in seconds.",
        "user_id and product_id are the file's 1-based numbers; no titles, prices or dates.",
        f"products.attributes['attribute_ids'] keeps every attribute id of {files.attributes.name} "
        "in file order (repeats kept).",
    ]
    if roles.layout == "brand_path":
        lines.append(
            f"Sellers are synthesised: a seller is a brand (the first attribute of a list that "
            f"precedes a root category), named from {names_from}. Categories are the category "
            "attributes; each one's parent is the attribute most often just above it in the "
            "items' category paths; a product's category is the leaf of its first path."
        )
    elif roles.layout == "bag":
        lines.append(
            f"Every attribute is a root category named from {names_from}; a product's category "
            "is its rarest attribute. There are no sellers (seller_id is null)."
        )
    else:
        lines.append(
            "Attributes have no names, so there are no sellers or categories "
            "(seller_id and category_id are null)."
        )
    if has_source:
        lines.append(
            "products.attributes['source_id'] is the source's item id (datamaps.json id2item)."
        )
    return " ".join(lines)


def read_negatives(path: Path, users: IdMap, items: IdMap) -> dict[int, np.ndarray]:
    """Fixed negatives (``user neg_1 ... neg_k`` per line) as user_idx -> item_idx array.

    Ids are the file's numbers, which the S3-Rec loader keeps as ``user_id``/``product_id``; an
    id the dataset does not know is an error naming the line and field.
    """

    def field(position: int) -> str:
        return "user" if position == 0 else f"negative {position}"

    tokens = read_int_tokens(path, field)
    heads = check_unique_lines(tokens)
    user_rows = users.index.get_indexer(tokens.values[heads].astype(str))
    if (user_rows < 0).any():
        row = int(heads[np.argmax(user_rows < 0)])
        raise tokens.problem(row, f"unknown user id {tokens.values[row]}")
    is_item = tokens.position > 0
    item_rows = items.index.get_indexer(tokens.values[is_item].astype(str))
    if (item_rows < 0).any():
        row = int(np.flatnonzero(is_item)[np.argmax(item_rows < 0)])
        raise tokens.problem(row, f"unknown item id {tokens.values[row]}")
    lengths = np.diff(np.append(heads, len(tokens))) - 1
    if (lengths == 0).any():
        row = int(heads[np.argmax(lengths == 0)])
        raise tokens.problem(row, "a user line with no negatives")
    bounds = np.cumsum(lengths)[:-1]
    return {
        int(u): rows.astype(np.int64)
        for u, rows in zip(user_rows, np.split(item_rows, bounds), strict=True)
    }
