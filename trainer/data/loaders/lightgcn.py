"""The NGCF / LightGCN split format (He et al., SIGIR 2020, https://arxiv.org/abs/2002.02126).

A folder holds ``train.txt`` and ``test.txt``, one user per line, ``user item item ...``, 0-based
ids (a user may have no items on a line, e.g. no test items), and optionally ``user_list.txt`` /
``item_list.txt`` (a header ``org_id remap_id``, then the source's id and the file's id). The
dataset's own train/test split is kept in ``events.split`` (split protocol ``fixed``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from trainer.data.loaders._build import (
    EventArrays,
    build_marketplace,
    constant,
    products_frame,
)
from trainer.data.loaders._text import check_unique_lines, fail, read_int_tokens
from trainer.data.marketplace import DatasetInfo, Marketplace
from trainer.data.schema import EVENT_TYPES

REQUIRED = ("train.txt", "test.txt")


def read_user_lines(
    path: Path, event_type: str, split: str | None
) -> tuple[EventArrays, np.ndarray]:
    """Events of ``user item item ...`` lines in file order, and every user with a line."""
    tokens = read_int_tokens(path)
    heads = check_unique_lines(tokens)
    lengths = np.diff(np.append(heads, len(tokens))) - 1
    user = np.repeat(tokens.values[heads], lengths)
    item = tokens.values[tokens.position > 0]
    n = len(user)
    events = EventArrays(
        user, item, constant(event_type, n), constant(split, n) if split is not None else None
    )
    return events, tokens.values[heads]


def read_id_list(path: Path) -> pd.DataFrame:
    """``org_id remap_id`` lines: the source's id (any string) for each 0-based file id."""
    try:
        frame = pd.read_csv(path, sep=r"\s+", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise fail(path, None, "-", f"not an 'org_id remap_id' table: {error}") from error
    for column in ("org_id", "remap_id"):
        if column not in frame.columns:
            raise fail(path, 1, column, "missing column in the header")
    remap = pd.to_numeric(frame["remap_id"], errors="coerce")
    bad = remap.isna() | (remap < 0)
    if bad.any():
        row = int(np.argmax(bad.to_numpy()))
        raise fail(
            path, row + 2, "remap_id", f"not a non-negative integer: {frame['remap_id'][row]!r}"
        )
    duplicated = remap.duplicated().to_numpy()
    if duplicated.any():
        row = int(np.argmax(duplicated))
        raise fail(path, row + 2, "remap_id", f"id {int(remap[row])} appears twice")
    return pd.DataFrame({"org_id": frame["org_id"], "remap_id": remap.astype(np.int64)})


def _universe(
    folder: Path, list_name: str, parts: list[tuple[np.ndarray, Path]], what: str
) -> tuple[np.ndarray, pd.DataFrame | None]:
    """The listed ids when the list file exists (every id used must be listed), else those used."""
    path = folder / list_name
    if not path.is_file():
        return np.unique(np.concatenate([ids for ids, _ in parts])), None
    listed = read_id_list(path)
    universe = np.sort(listed["remap_id"].to_numpy())
    for ids, data_file in parts:
        unknown = ~np.isin(ids, universe)
        if unknown.any():
            value = ids[np.argmax(unknown)]
            raise fail(data_file, None, what, f"{what} id {value} is not in {list_name}")
    return universe, listed


def load_lightgcn(folder: Path, event_type: str = "click", name: str | None = None) -> Marketplace:
    """Load a LightGCN folder with its fixed train/test split (no validation split)."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r} (one of {', '.join(EVENT_TYPES)})")
    folder = Path(folder)
    for required in REQUIRED:
        if not (folder / required).is_file():
            raise fail(folder / required, None, "-", "file not found")
    train, train_users = read_user_lines(folder / "train.txt", event_type, "train")
    test, test_users = read_user_lines(folder / "test.txt", event_type, "test")
    # Train before test in each user's ordinal time line, so history never follows a target.
    events = EventArrays.concat([train, test])
    users, user_list = _universe(
        folder,
        "user_list.txt",
        [(train_users, folder / "train.txt"), (test_users, folder / "test.txt")],
        "user",
    )
    items, item_list = _universe(
        folder,
        "item_list.txt",
        [(train.item, folder / "train.txt"), (test.item, folder / "test.txt")],
        "item",
    )
    products = None
    if item_list is not None:
        source = dict(zip(item_list["remap_id"].tolist(), item_list["org_id"], strict=True))
        products = products_frame(
            items, attributes=[{"source_id": source[i]} for i in items.tolist()]
        )
    info = DatasetInfo(
        name=name or folder.name,
        source="LightGCN/NGCF split files train.txt + test.txt",
        timestamps="ordinal",
        split="fixed",
        max_history=None,
        positive_events=(event_type,),
        notes=(
            f"Each item on a user's line is one '{event_type}' event (for Gowalla a check-in, "
            "not a purchase). events.split keeps the published split: train.txt -> 'train', "
            "test.txt -> 'test'; there is no validation split. Timestamps are synthetic and "
            "ordinal: 2020-01-01 UTC + the event's position in its user's train-then-test "
            "sequence, in seconds; the order inside a line carries no time. user_id and "
            "product_id are the file's 0-based numbers"
            + (
                "; products.attributes['source_id'] is item_list.txt's org_id."
                if item_list is not None
                else "."
            )
            + " No sellers, categories, titles or prices exist in this format."
        ),
        extra={
            "format": "lightgcn",
            "users_listed": user_list is not None,
            "items_listed": item_list is not None,
        },
    )
    return build_marketplace(info, users, items, events, products=products)
