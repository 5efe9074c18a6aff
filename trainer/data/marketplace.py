"""A dataset in the canonical model: five validated tables plus a description of the source.

On disk a dataset is a folder holding ``categories.parquet``, ``sellers.parquet``,
``products.parquet``, ``users.parquet``, ``events.parquet`` (each written with the explicit
schema of :mod:`trainer.data.schema`) and ``dataset.json`` (:class:`DatasetInfo`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from trainer.data.schema import TABLES, TIMESTAMP, Table
from trainer.data.validation import DataProblem, DataValidationError, validate_tables

INFO_FILE = "dataset.json"
SplitProtocol = Literal["leave_one_out", "fixed", "temporal"]


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is and how it is meant to be split and evaluated."""

    name: str
    source: str
    # "ordinal": timestamps only order each user's events (sources without real times); a global
    # temporal split and freshness slices are meaningless on such data.
    timestamps: Literal["real", "ordinal"] = "real"
    split: SplitProtocol = "temporal"
    # Longest history a sequence protocol keeps (S3-Rec files: 50); None keeps everything.
    max_history: int | None = None
    # Events that count as positive feedback for training and evaluation targets.
    positive_events: tuple[str, ...] = ("click", "favorite", "cart", "purchase")
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, file: str = INFO_FILE) -> DatasetInfo:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataValidationError(
                [DataProblem(file, error.lineno, "-", f"invalid JSON: {error.msg}")]
            ) from error
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise DataValidationError([DataProblem(file, None, unknown[0], "unknown key")])
        if "positive_events" in raw:
            raw["positive_events"] = tuple(raw["positive_events"])
        return cls(**raw)


@dataclass
class Marketplace:
    """The five tables as pandas DataFrames (already validated) and the dataset description."""

    info: DatasetInfo
    categories: pd.DataFrame
    sellers: pd.DataFrame
    products: pd.DataFrame
    users: pd.DataFrame
    events: pd.DataFrame

    def table(self, name: str) -> pd.DataFrame:
        return getattr(self, name)

    @classmethod
    def from_arrow(cls, info: DatasetInfo, tables: dict[str, pa.Table]) -> Marketplace:
        return cls(info=info, **{name: _to_pandas(t) for name, t in tables.items()})

    @classmethod
    def from_frames(cls, info: DatasetInfo, **frames: pd.DataFrame) -> Marketplace:
        """Build from DataFrames (e.g. a loader's output), validating them on the way."""
        raw = {t.name: _from_pandas(t, frames[t.name], t.name) for t in TABLES}
        return cls.from_arrow(info, validate_tables(raw, {t.name: t.name for t in TABLES}))

    def summary(self) -> dict[str, int]:
        counts = {t.name: len(self.table(t.name)) for t in TABLES}
        counts.update(self.events["event_type"].value_counts().to_dict())
        return counts


def _from_pandas(table: Table, frame: pd.DataFrame, file: str) -> pa.Table:
    """Arrow columns in the declared types; a value that cannot convert is a DataProblem."""
    schema = table.arrow_schema
    arrays = []
    for name in frame.columns:
        values = frame[name]
        declared = schema.field(name).type if name in schema.names else None
        # is_datetime64_dtype is true only for naive datetimes (tz-aware ones have their own dtype)
        if declared == TIMESTAMP and pd.api.types.is_datetime64_dtype(values.dtype):
            raise DataValidationError(
                [DataProblem(file, None, name, "timestamp without a time zone; use UTC")]
            )
        try:
            arrays.append(pa.array(values, type=declared, from_pandas=True))
            continue
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
        if declared is None:  # an undeclared column: keep it so validation names it
            arrays.append(pa.array(values.astype(str), from_pandas=True))
            continue
        for row, value in enumerate(values.tolist()):
            try:
                pa.array([value], type=declared, from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                raise DataValidationError(
                    [DataProblem(file, row, name, f"bad value {value!r}: expected {declared}")]
                ) from None
        raise DataValidationError([DataProblem(file, None, name, f"not convertible to {declared}")])
    return pa.Table.from_arrays(arrays, names=list(frame.columns))


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas(maps_as_pydicts="strict")


def save_marketplace(market: Marketplace, folder: Path) -> Path:
    """Write the dataset (re-validating it) as Parquet files with explicit schemas."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {t.name: str(folder / t.file_name) for t in TABLES}
    raw = {t.name: _from_pandas(t, market.table(t.name), files[t.name]) for t in TABLES}
    tables = validate_tables(raw, files)
    for table in TABLES:
        pq.write_table(tables[table.name], folder / table.file_name)
    (folder / INFO_FILE).write_text(market.info.to_json() + "\n")
    return folder


def is_canonical_folder(folder: Path) -> bool:
    return (Path(folder) / INFO_FILE).is_file()


def read_tables(folder: Path) -> tuple[DatasetInfo, dict[str, pa.Table], dict[str, str]]:
    """Read and validate the raw Arrow tables of a dataset folder."""
    folder = Path(folder)
    info_path = folder / INFO_FILE
    if not info_path.is_file():
        raise DataValidationError([DataProblem(str(info_path), None, "-", "file not found")])
    info = DatasetInfo.from_json(info_path.read_text(), str(info_path))
    files = {t.name: str(folder / t.file_name) for t in TABLES}
    missing = [
        DataProblem(files[t.name], None, "-", "file not found")
        for t in TABLES
        if not Path(files[t.name]).is_file()
    ]
    if missing:
        raise DataValidationError(missing)
    raw = {}
    for table in TABLES:
        try:
            raw[table.name] = pq.read_table(files[table.name])
        except (pa.ArrowInvalid, OSError) as error:
            raise DataValidationError(
                [DataProblem(files[table.name], None, "-", f"not a readable Parquet file: {error}")]
            ) from error
    return info, validate_tables(raw, files), files


def load_marketplace(folder: Path) -> Marketplace:
    """Load a canonical dataset folder; raises DataValidationError naming file, row and field."""
    info, tables, _ = read_tables(folder)
    return Marketplace.from_arrow(info, tables)
