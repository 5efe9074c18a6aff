"""Every bad input is refused with a message naming file, row and field; nothing half-loads."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.trainer.data.builders import T0, frames, marketplace
from trainer.data.marketplace import (
    DatasetInfo,
    Marketplace,
    load_marketplace,
    save_marketplace,
)
from trainer.data.schema import TABLES
from trainer.data.validation import DataValidationError


def build(**changes: pd.DataFrame) -> Marketplace:
    tables = frames()
    tables.update(changes)
    return Marketplace.from_frames(DatasetInfo(name="t", source="tests"), **tables)


def problem_text(error: pytest.ExceptionInfo) -> str:
    return str(error.value)


def test_valid_tables_round_trip_through_parquet(tmp_path):
    market = marketplace()
    save_marketplace(market, tmp_path / "ds")
    loaded = load_marketplace(tmp_path / "ds")
    assert loaded.info == market.info
    for table in TABLES:
        pd.testing.assert_frame_equal(loaded.table(table.name), market.table(table.name))
    assert loaded.products["attributes"].iloc[0] == {"brand": "x"}
    assert str(loaded.events["timestamp"].dtype) == "datetime64[ms, UTC]"


def test_missing_column_names_file_and_field():
    events = frames()["events"].drop(columns=["event_type"])
    with pytest.raises(DataValidationError) as error:
        build(events=events)
    assert "events, field 'event_type': missing column" in problem_text(error)


def test_unknown_column_is_refused():
    users = frames()["users"].assign(age=[1, 2, 3])
    with pytest.raises(DataValidationError, match="users, field 'age': unknown column"):
        build(users=users)


def test_bad_type_names_the_row():
    products = frames()["products"].astype({"price": object})
    products.loc[3, "price"] = "cheap"
    with pytest.raises(DataValidationError) as error:
        build(products=products)
    assert "products, row 3, field 'price': bad value 'cheap'" in problem_text(error)


def test_bad_timestamp_names_the_row():
    events = frames()["events"]
    events.loc[2, "timestamp"] = pd.Timestamp("1970-01-01 00:00:01", tz="UTC")
    with pytest.raises(DataValidationError) as error:
        build(events=events)
    assert "events, row 2, field 'timestamp': timestamp 1970-01-01" in problem_text(error)


def test_timestamp_without_time_zone_is_refused():
    events = frames()["events"]
    events["timestamp"] = events["timestamp"].dt.tz_localize(None)
    with pytest.raises(
        DataValidationError, match="field 'timestamp': timestamp without a time zone"
    ):
        build(events=events)


def test_unknown_event_type_names_row_and_value():
    events = frames()["events"]
    events.loc[4, "event_type"] = "view"
    with pytest.raises(DataValidationError) as error:
        build(events=events)
    assert "events, row 4, field 'event_type': unknown event type 'view'" in problem_text(error)


def test_null_in_required_column():
    events = frames()["events"]
    events.loc[1, "user_id"] = None
    with pytest.raises(DataValidationError, match=r"events, row 1, field 'user_id': missing value"):
        build(events=events)


def test_duplicate_id_names_both_rows():
    users = frames()["users"]
    users.loc[2, "user_id"] = "u1"
    with pytest.raises(DataValidationError) as error:
        build(users=users)
    assert "users, row 2, field 'user_id': duplicate id 'u1' (first at row 0)" in problem_text(
        error
    )


@pytest.mark.parametrize(
    ("table", "column", "row", "value", "target"),
    [
        ("events", "product_id", 5, "p99", "products.parquet"),
        ("events", "user_id", 0, "ghost", "users.parquet"),
        ("products", "seller_id", 1, "s9", "sellers.parquet"),
        ("products", "category_id", 0, "garden", "categories.parquet"),
        ("categories", "parent_id", 1, "nowhere", "categories.parquet"),
    ],
)
def test_dangling_reference_names_row_field_and_target(table, column, row, value, target):
    changed = frames()[table]
    changed.loc[row, column] = value
    with pytest.raises(DataValidationError) as error:
        build(**{table: changed})
    assert f"{table}, row {row}, field '{column}': unknown" in problem_text(error)
    assert f"{value!r} (not in {target})" in problem_text(error)


def test_category_cycle_is_refused():
    categories = frames()["categories"]
    categories.loc[0, "parent_id"] = "home/kitchen"
    with pytest.raises(DataValidationError, match="field 'parent_id': cycle"):
        build(categories=categories)


@pytest.mark.parametrize(
    ("table", "column", "value", "message"),
    [
        ("events", "hour", 24, "hour 24 outside 0-23"),
        ("events", "device", "fridge", "unknown device 'fridge'"),
        ("events", "split", "holdout", "unknown split 'holdout'"),
        ("products", "price", -1.0, "price -1.0 is not positive"),
        ("products", "margin", 1.5, "margin 1.5 outside [0, 1]"),
        ("sellers", "rating", 7.0, "rating 7.0 outside [0, 5]"),
    ],
)
def test_domain_rules(table, column, value, message):
    changed = frames()[table]
    changed.loc[1, column] = value
    with pytest.raises(DataValidationError) as error:
        build(**{table: changed})
    assert f"{table}, row 1, field '{column}': {message}" in problem_text(error)


def test_all_problems_are_reported_together():
    events = frames()["events"]
    events.loc[0, "event_type"] = "view"
    events.loc[3, "hour"] = 30
    users = frames()["users"]
    users.loc[1, "user_id"] = "u1"
    with pytest.raises(DataValidationError) as error:
        build(events=events, users=users)
    assert len(error.value.problems) == 3


def test_loading_a_corrupted_folder_names_the_file(tmp_path):
    folder = save_marketplace(marketplace(), tmp_path / "ds")
    table = pq.read_table(folder / "events.parquet")
    event_type = table.column("event_type").to_pylist()
    event_type[6] = "like"
    table = table.set_column(
        table.column_names.index("event_type"), "event_type", pa.array(event_type)
    )
    pq.write_table(table, folder / "events.parquet")
    with pytest.raises(DataValidationError) as error:
        load_marketplace(folder)
    assert f"{folder / 'events.parquet'}, row 6, field 'event_type'" in problem_text(error)


def test_missing_file_and_bad_parquet(tmp_path):
    folder = save_marketplace(marketplace(), tmp_path / "ds")
    (folder / "sellers.parquet").unlink()
    with pytest.raises(DataValidationError, match=r"sellers.parquet, field '-': file not found"):
        load_marketplace(folder)
    (folder / "sellers.parquet").write_text("not parquet")
    with pytest.raises(DataValidationError, match="not a readable Parquet file"):
        load_marketplace(folder)


def test_dataset_json_unknown_key(tmp_path):
    folder = save_marketplace(marketplace(), tmp_path / "ds")
    (folder / "dataset.json").write_text('{"name": "x", "source": "y", "colour": "red"}')
    with pytest.raises(DataValidationError, match="field 'colour': unknown key"):
        load_marketplace(folder)


def test_save_refuses_invalid_data_and_writes_nothing(tmp_path):
    market = marketplace()
    market.events.loc[0, "event_type"] = "view"
    with pytest.raises(DataValidationError):
        save_marketplace(market, tmp_path / "ds")
    assert not any((tmp_path / "ds").glob("*.parquet"))


def test_timestamps_keep_millisecond_precision():
    events = frames()["events"]
    events.loc[0, "timestamp"] = T0 + pd.Timedelta(milliseconds=7)
    market = build(events=events)
    assert market.events["timestamp"].iloc[0] == T0 + pd.Timedelta(milliseconds=7)
