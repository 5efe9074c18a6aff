"""Validation of the canonical tables: every problem names its file, row and field.

A dataset is accepted whole or not at all: :func:`validate_marketplace` collects the problems of
every table (up to a cap) and raises one :class:`DataValidationError`, so nothing is half-loaded
and nothing is dropped silently.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from trainer.data.schema import (
    CATEGORIES,
    DEVICES,
    EVENT_TYPES,
    EVENTS,
    PRODUCTS,
    SELLERS,
    SPLITS,
    TABLES,
    TIMESTAMP,
    Table,
)

MAX_REPORTED_PROBLEMS = 50
# Timestamps outside this window are data errors (epoch-unit mix-ups, zero dates).
EARLIEST = datetime(1990, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class DataProblem:
    file: str
    row: int | None  # 0-based row in the file; None for a whole-column problem
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}, row {self.row}" if self.row is not None else self.file
        return f"{where}, field '{self.field}': {self.message}"


class DataValidationError(ValueError):
    """Raised with every problem found (the first MAX_REPORTED_PROBLEMS are listed)."""

    def __init__(self, problems: list[DataProblem]):
        self.problems = problems
        shown = problems[:MAX_REPORTED_PROBLEMS]
        lines = [f"{len(problems)} problem(s) in the data:"] + [f"  {p}" for p in shown]
        if len(problems) > len(shown):
            lines.append(f"  ... and {len(problems) - len(shown)} more")
        super().__init__("\n".join(lines))


def _first_rows(mask: np.ndarray, limit: int = 3) -> list[int]:
    return [int(i) for i in np.flatnonzero(mask)[:limit]]


def _cast_column(
    table: Table, name: str, column: pa.ChunkedArray, file: str, problems: list[DataProblem]
) -> pa.ChunkedArray | None:
    """Cast a column to its declared type, or record the first row that cannot be cast."""
    target = table.column(name).type
    if column.type == target:
        return column
    if target == TIMESTAMP and pa.types.is_timestamp(column.type) and column.type.tz is None:
        problems.append(
            DataProblem(file, None, name, f"timestamp without a time zone ({column.type}); use UTC")
        )
        return None
    try:
        return pc.cast(column, target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as error:
        values = column.to_pylist()
        for row, value in enumerate(values):
            try:
                pc.cast(pa.array([value], type=column.type), target, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                problems.append(
                    DataProblem(file, row, name, f"bad value {value!r}: expected {target}")
                )
                return None
        problems.append(
            DataProblem(file, None, name, f"type {column.type} is not {target}: {error}")
        )
        return None


def conform_table(
    table: Table, data: pa.Table, file: str
) -> tuple[pa.Table | None, list[DataProblem]]:
    """Check columns, types and nulls; return the table in the declared schema (or None)."""
    problems: list[DataProblem] = []
    present = set(data.column_names)
    for column in table.columns:
        if column.name not in present:
            problems.append(DataProblem(file, None, column.name, "missing column"))
    for name in data.column_names:
        if name not in {c.name for c in table.columns}:
            problems.append(DataProblem(file, None, name, "unknown column"))
    if problems:
        return None, problems
    arrays = []
    for column in table.columns:
        cast = _cast_column(table, column.name, data.column(column.name), file, problems)
        if cast is None:
            continue
        if not column.nullable and cast.null_count:
            mask = cast.is_null().to_numpy(zero_copy_only=False)
            for row in _first_rows(mask):
                problems.append(DataProblem(file, row, column.name, "missing value (null)"))
        arrays.append(cast)
    if problems:
        return None, problems
    return pa.Table.from_arrays(arrays, schema=table.arrow_schema), problems


def _check_values(
    file: str,
    field: str,
    column: pa.ChunkedArray,
    bad: np.ndarray,
    message: str,
    problems: list[DataProblem],
) -> None:
    values = column.to_numpy(zero_copy_only=False)
    for row in _first_rows(bad):
        problems.append(DataProblem(file, row, field, message.format(value=values[row])))


def _in_set(column: pa.ChunkedArray, allowed: Iterable[str]) -> np.ndarray:
    """True where the value is null or allowed."""
    member = pc.is_in(column, value_set=pa.array(list(allowed), type=column.type))
    return pc.or_(member, column.is_null()).to_numpy(zero_copy_only=False)


def _outside(column: pa.ChunkedArray, low: float, high: float) -> np.ndarray:
    inside = pc.and_(pc.greater_equal(column, low), pc.less_equal(column, high))
    return ~pc.fill_null(inside, True).to_numpy(zero_copy_only=False)


def _check_timestamp(file: str, name: str, column: pa.ChunkedArray, problems: list[DataProblem]):
    low = pa.scalar(EARLIEST, type=TIMESTAMP)
    high = pa.scalar(LATEST, type=TIMESTAMP)
    inside = pc.and_(pc.greater_equal(column, low), pc.less(column, high))
    bad = ~pc.fill_null(inside, True).to_numpy(zero_copy_only=False)
    _check_values(
        file,
        name,
        column,
        bad,
        f"timestamp {{value}} outside [{EARLIEST:%Y}, {LATEST:%Y})",
        problems,
    )


def check_values(table: Table, data: pa.Table, file: str) -> list[DataProblem]:
    """Domain rules within one table: enumerations, ranges, timestamps, unique keys."""
    problems: list[DataProblem] = []
    if table.key:
        keys = data.column(table.key).to_pandas()
        duplicated = keys.duplicated(keep="first").to_numpy()
        for row in _first_rows(duplicated):
            first = int(np.flatnonzero((keys == keys.iloc[row]).to_numpy())[0])
            problems.append(
                DataProblem(
                    file, row, table.key, f"duplicate id {keys.iloc[row]!r} (first at row {first})"
                )
            )
    for column in table.columns:
        if column.type == TIMESTAMP:
            _check_timestamp(file, column.name, data.column(column.name), problems)
    if table is EVENTS:
        col = data.column("event_type")
        _check_values(
            file,
            "event_type",
            col,
            ~_in_set(col, EVENT_TYPES),
            f"unknown event type {{value!r}} (expected one of {', '.join(EVENT_TYPES)})",
            problems,
        )
        col = data.column("device")
        _check_values(
            file,
            "device",
            col,
            ~_in_set(col, DEVICES),
            f"unknown device {{value!r}} (expected one of {', '.join(DEVICES)})",
            problems,
        )
        col = data.column("split")
        _check_values(
            file,
            "split",
            col,
            ~_in_set(col, SPLITS),
            f"unknown split {{value!r}} (expected one of {', '.join(SPLITS)})",
            problems,
        )
        col = data.column("hour")
        _check_values(
            file, "hour", col, _outside(col, 0, 23), "hour {value} outside 0-23", problems
        )
    if table is PRODUCTS:
        col = data.column("price")
        bad = ~pc.fill_null(pc.greater(col, 0.0), True).to_numpy(zero_copy_only=False)
        _check_values(file, "price", col, bad, "price {value} is not positive", problems)
        col = data.column("margin")
        _check_values(
            file, "margin", col, _outside(col, 0.0, 1.0), "margin {value} outside [0, 1]", problems
        )
    if table is SELLERS:
        col = data.column("rating")
        _check_values(
            file, "rating", col, _outside(col, 0.0, 5.0), "rating {value} outside [0, 5]", problems
        )
    return problems


def check_references(tables: Mapping[str, pa.Table], files: Mapping[str, str]) -> list[DataProblem]:
    """Every reference column points at an existing key (nulls allowed where nullable)."""
    problems: list[DataProblem] = []
    by_name = {t.name: t for t in TABLES}
    for table in TABLES:
        data = tables[table.name]
        for column_name, target_name in table.references:
            target = by_name[target_name]
            keys = tables[target_name].column(target.key)
            column = data.column(column_name)
            known = pc.or_(pc.is_in(column, value_set=keys.combine_chunks()), column.is_null())
            bad = ~known.to_numpy(zero_copy_only=False)
            values = column.to_numpy(zero_copy_only=False)
            for row in _first_rows(bad):
                problems.append(
                    DataProblem(
                        files[table.name],
                        row,
                        column_name,
                        f"unknown {target.key} {values[row]!r} (not in {target.file_name})",
                    )
                )
    problems.extend(_check_category_cycles(tables[CATEGORIES.name], files[CATEGORIES.name]))
    return problems


def _check_category_cycles(categories: pa.Table, file: str) -> list[DataProblem]:
    parent = dict(
        zip(
            categories.column("category_id").to_pylist(),
            categories.column("parent_id").to_pylist(),
            strict=True,
        )
    )
    problems = []
    for row, start in enumerate(parent):
        seen = {start}
        node = parent[start]
        while node is not None and node in parent:
            if node in seen:
                problems.append(DataProblem(file, row, "parent_id", f"cycle through {start!r}"))
                break
            seen.add(node)
            node = parent[node]
    return problems


def validate_tables(
    raw: Mapping[str, pa.Table], files: Mapping[str, str] | None = None
) -> dict[str, pa.Table]:
    """Validate all five tables together; return them in the declared schemas or raise."""
    files = files or {t.name: t.file_name for t in TABLES}
    problems: list[DataProblem] = []
    conformed: dict[str, pa.Table] = {}
    for table in TABLES:
        data, found = conform_table(table, raw[table.name], files[table.name])
        problems.extend(found)
        if data is not None:
            problems.extend(check_values(table, data, files[table.name]))
            conformed[table.name] = data
    if problems:
        raise DataValidationError(problems)
    problems = check_references(conformed, files)
    if problems:
        raise DataValidationError(problems)
    return conformed


__all__ = [
    "DataProblem",
    "DataValidationError",
    "check_references",
    "check_values",
    "conform_table",
    "validate_tables",
]
