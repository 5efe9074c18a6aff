"""The SASRec / BERT4Rec pair format (Kang & McAuley, ICDM 2018, https://arxiv.org/abs/1808.09781;
Sun et al., CIKM 2019, https://arxiv.org/abs/1904.06690).

A folder holds one ``<Name>.txt`` with one ``user item`` pair per line, 1-based ids, grouped by user
and in time order within each user (``Video.txt``, ``beauty.txt``). There are no times, ratings or
item attributes: every line is one event (a review, taken as a purchase), split leave-one-out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainer.data.loaders._build import EventArrays, build_marketplace, constant
from trainer.data.loaders._text import check_min_id, fail, read_int_tokens
from trainer.data.marketplace import DatasetInfo, Marketplace
from trainer.data.schema import EVENT_TYPES

# Both papers train with a maximum sequence length of 50 on these files.
MAX_HISTORY = 50
FIELDS = ("user", "item")


def _field(position: int) -> str:
    return FIELDS[position] if position < len(FIELDS) else f"field {position + 1}"


def find_pair_file(folder: Path) -> Path:
    """The one data ``*.txt`` of a pair folder (README/SOURCE notes are not data)."""
    candidates = [
        p for p in sorted(Path(folder).glob("*.txt")) if p.stem.upper() not in {"README", "SOURCE"}
    ]
    if len(candidates) != 1:
        listed = ", ".join(p.name for p in candidates) or "none"
        raise fail(folder, None, "-", f"expected exactly one <Name>.txt pair file, found {listed}")
    return candidates[0]


def read_pairs(
    path: Path,
    event_type: str = "purchase",
    minimum_id: int = 1,
    sizes: tuple[int, int] | None = None,
) -> EventArrays:
    """(user, item) events in file order; every line must hold exactly two integers.

    ``sizes`` (num_users, num_items) bounds 0-based ids, as MBGCN's data_size.txt does.
    """
    tokens = read_int_tokens(path, _field)
    heads = tokens.line_starts()
    lengths = np.diff(np.append(heads, len(tokens)))
    if (lengths != 2).any():
        row = int(heads[np.argmax(lengths != 2)])
        count = int(lengths[np.argmax(lengths != 2)])
        target = row + 2 if count > 2 else row
        raise tokens.problem(target, f"expected 2 fields (user item), found {count}")
    check_min_id(tokens, np.ones(len(tokens), dtype=bool), minimum_id, "user/item")
    if sizes is not None:
        limit = np.where(tokens.position == 0, sizes[0], sizes[1])
        outside = tokens.values >= limit
        if outside.any():
            token = int(np.argmax(outside))
            what = _field(int(tokens.position[token]))
            raise tokens.problem(
                token,
                f"{what} id {tokens.values[token]} is outside the declared {limit[token]} "
                f"{what}s (0-based)",
            )
    values = tokens.values.reshape(-1, 2)
    return EventArrays(values[:, 0].copy(), values[:, 1].copy(), constant(event_type, len(values)))


def load_pairs(folder: Path, event_type: str = "purchase", name: str | None = None) -> Marketplace:
    """Load a SASRec/BERT4Rec pair folder into a leave-one-out Marketplace."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r} (one of {', '.join(EVENT_TYPES)})")
    folder = Path(folder)
    path = find_pair_file(folder)
    events = read_pairs(path, event_type)
    users = np.unique(events.user)
    items = np.unique(events.item)
    info = DatasetInfo(
        name=name or folder.name,
        source=f"SASRec/BERT4Rec pair file {path.name}",
        timestamps="ordinal",
        split="leave_one_out",
        max_history=MAX_HISTORY,
        positive_events=(event_type,),
        notes=(
            f"Each line of {path.name} is one '{event_type}' event (a review as a purchase proxy), "
            "in the user's time order. Timestamps are synthetic and ordinal: 2020-01-01 UTC + the "
            "event's position in its user's sequence, in seconds. user_id and product_id are the "
            "file's 1-based numbers. No sellers, categories, titles, prices or attributes exist "
            "in this format: those columns are null and the sellers/categories tables are empty."
        ),
        extra={"format": "pairs"},
    )
    return build_marketplace(info, users, items, events)
