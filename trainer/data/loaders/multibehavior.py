"""Multi-behaviour formats: purchases plus auxiliary behaviours, with a fixed purchase split.

- MBGCN (Jin et al., SIGIR 2020, https://doi.org/10.1145/3397271.3401072), e.g. Tmall: one
  ``user item`` pair per line, 0-based, ``data_size.txt`` (``num_users num_items``), purchases split
  into ``train.txt`` (``buy.txt`` is the same file) / ``validation.txt`` / ``test.txt``, auxiliary
  behaviours in ``collect.txt`` (favourites), ``cart.txt`` and ``click.txt``.
- GHCF / EHCF (Chen et al., AAAI 2021, https://arxiv.org/abs/2102.11098), e.g. Beibei: one user per
  line, ``user item item ...``, 0-based, purchases in ``train.txt`` / ``test.txt``, auxiliary
  behaviours ``cart.txt`` and ``pv.txt`` (views), and ``sparsity.split`` (user groups by
  sparsity, each a ``#users=[N]`` header line followed by one line of user ids).

Purchases are the positive events; auxiliary behaviours are training signal only (split
"train"). Each user's ordinal time line runs auxiliary behaviours in funnel order, then training
purchases, then validation and test purchases, so no history event follows a target.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from trainer.data.loaders._build import EventArrays, build_marketplace, constant
from trainer.data.loaders._text import fail, read_int_tokens
from trainer.data.loaders.lightgcn import read_user_lines
from trainer.data.loaders.pairs import read_pairs
from trainer.data.marketplace import DatasetInfo, Marketplace

# file -> event type, in funnel order (the order of each user's ordinal time line).
MBGCN_AUXILIARY = (("click.txt", "click"), ("collect.txt", "favorite"), ("cart.txt", "cart"))
GHCF_AUXILIARY = (("pv.txt", "click"), ("cart.txt", "cart"))
MBGCN_PURCHASES = (("train.txt", "train"), ("validation.txt", "valid"), ("test.txt", "test"))
GHCF_PURCHASES = (("train.txt", "train"), ("test.txt", "test"))


def _with_split(events: EventArrays, split: str) -> EventArrays:
    events.split = constant(split, len(events.user))
    return events


def read_data_size(path: Path) -> tuple[int, int]:
    tokens = read_int_tokens(
        path, lambda p: ("num_users", "num_items")[p] if p < 2 else f"field {p + 1}"
    )
    if len(tokens) != 2 or tokens.line[0] != tokens.line[1]:
        raise fail(
            path, 1, "-", f"expected one line 'num_users num_items', found {len(tokens)} numbers"
        )
    return int(tokens.values[0]), int(tokens.values[1])


def _same_pairs(a: EventArrays, b: EventArrays) -> bool:
    if len(a.user) != len(b.user):
        return False
    key_a = np.sort(a.user * (1 << 32) + a.item)
    key_b = np.sort(b.user * (1 << 32) + b.item)
    return bool((key_a == key_b).all())


def load_mbgcn(folder: Path, name: str | None = None) -> Marketplace:
    """Load an MBGCN folder (Tmall) with its fixed purchase split."""
    folder = Path(folder)
    for required in ("data_size.txt", "test.txt"):
        if not (folder / required).is_file():
            raise fail(folder / required, None, "-", "file not found")
    num_users, num_items = sizes = read_data_size(folder / "data_size.txt")
    train_file = folder / "train.txt"
    buy_file = folder / "buy.txt"
    if not train_file.is_file() and not buy_file.is_file():
        raise fail(train_file, None, "-", "file not found (nor buy.txt)")
    parts: list[EventArrays] = []
    counts: dict[str, int] = {}
    for file, event_type in MBGCN_AUXILIARY:
        path = folder / file
        if path.is_file():
            part = _with_split(read_pairs(path, event_type, 0, sizes), "train")
            parts.append(part)
            counts[file] = len(part.user)
    for file, split in MBGCN_PURCHASES:
        path = folder / file
        if file == "train.txt" and not path.is_file():
            path = buy_file
        if not path.is_file():
            continue
        part = _with_split(read_pairs(path, "purchase", 0, sizes), split)
        if path == train_file and buy_file.is_file():
            buy = read_pairs(buy_file, "purchase", 0, sizes)
            if not _same_pairs(part, buy):
                raise fail(
                    buy_file,
                    None,
                    "-",
                    "differs from train.txt; MBGCN ships the training purchases under both names",
                )
        parts.append(part)
        counts[path.name] = len(part.user)
    events = EventArrays.concat(parts)
    users = np.arange(num_users, dtype=np.int64)
    items = np.arange(num_items, dtype=np.int64)
    info = DatasetInfo(
        name=name or folder.name,
        source="MBGCN multi-behaviour pair files",
        timestamps="ordinal",
        split="fixed",
        max_history=None,
        positive_events=("purchase",),
        notes=_notes(
            "train.txt -> 'train', validation.txt -> 'valid', test.txt -> 'test'",
            "click.txt -> click, collect.txt -> favorite, cart.txt -> cart",
            "data_size.txt gives the user and item counts, so users and items without events are "
            "kept. buy.txt, when present, is checked to equal train.txt and not loaded twice.",
        ),
        extra={"format": "mbgcn", "event_files": counts},
    )
    return build_marketplace(info, users, items, events)


def read_sparsity_split(path: Path) -> list[list[str]]:
    """GHCF's user groups: a ``#users=[N]`` header, then one line of N user ids, per group."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise fail(path, None, "-", f"cannot read the file: {error}") from error
    groups: list[list[str]] = []
    expected: int | None = None
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        header = re.fullmatch(r"#users=\[(\d+)\]", text)
        if header:
            expected = int(header.group(1))
            continue
        if expected is None:
            raise fail(path, number, "header", "user ids before a '#users=[N]' header line")
        ids = text.split()
        bad = [t for t in ids if not t.isdigit()]
        if bad:
            raise fail(path, number, "user", f"not a non-negative integer: {bad[0]!r}")
        if len(ids) != expected:
            raise fail(
                path, number, "user", f"header announces {expected} users, line has {len(ids)}"
            )
        groups.append([str(int(t)) for t in ids])
        expected = None
    if expected is not None:
        raise fail(path, len(lines), "user", "a '#users=[N]' header without its line of ids")
    if not groups:
        raise fail(path, None, "-", "the file is empty (no user groups)")
    return groups


def load_ghcf(folder: Path, name: str | None = None) -> Marketplace:
    """Load a GHCF/EHCF folder (Beibei) with its fixed purchase split (no validation)."""
    folder = Path(folder)
    for required in ("train.txt", "test.txt"):
        if not (folder / required).is_file():
            raise fail(folder / required, None, "-", "file not found")
    parts: list[EventArrays] = []
    counts: dict[str, int] = {}
    line_users: list[np.ndarray] = []
    for file, event_type in GHCF_AUXILIARY:
        if (folder / file).is_file():
            part, heads = read_user_lines(folder / file, event_type, "train")
            parts.append(part)
            line_users.append(heads)
            counts[file] = len(part.user)
    for file, split in GHCF_PURCHASES:
        part, heads = read_user_lines(folder / file, "purchase", split)
        parts.append(part)
        line_users.append(heads)
        counts[file] = len(part.user)
    events = EventArrays.concat(parts)
    users = np.unique(np.concatenate(line_users))
    items = np.unique(events.item)
    extra: dict = {"format": "ghcf", "event_files": counts}
    sparsity = folder / "sparsity.split"
    if sparsity.is_file():
        groups = read_sparsity_split(sparsity)
        known = set(users.astype(str).tolist())
        for group in groups:
            unknown = [u for u in group if u not in known]
            if unknown:
                raise fail(sparsity, None, "user", f"unknown user id {unknown[0]}")
        extra["sparsity_split"] = groups
    info = DatasetInfo(
        name=name or folder.name,
        source="GHCF/EHCF multi-behaviour files",
        timestamps="ordinal",
        split="fixed",
        max_history=None,
        positive_events=("purchase",),
        notes=_notes(
            "train.txt -> 'train', test.txt -> 'test' (no validation split)",
            "pv.txt -> click, cart.txt -> cart",
            "info.extra['sparsity_split'] keeps sparsity.split's user groups (user_id strings, "
            "in file order).",
        ),
        extra=extra,
    )
    return build_marketplace(info, users, items, events)


def _notes(split: str, auxiliary: str, more: str) -> str:
    return (
        f"Purchases are 'purchase' events with the published split in events.split ({split}). "
        f"Auxiliary behaviours ({auxiliary}, where the file exists) carry split 'train' and are "
        "not evaluation targets (positive_events = purchase). Timestamps are synthetic and "
        "ordinal: 2020-01-01 UTC + the event's position in its user's time line (auxiliary "
        "behaviours in funnel order, then training, validation and test purchases), in seconds; "
        "the files carry no times. user_id and product_id are the files' 0-based numbers. No "
        f"sellers, categories, titles or prices exist in this format. {more}"
    )
