"""Real-dataset loaders: every format on tiny hand-written folders, every malformed input, and
(marked ``realdata``) every folder under ../shared/data against the counts of anchors.md §2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trainer.data.interactions import IdMap
from trainer.data.loaders import (
    FORMATS,
    dataset_name,
    detect_format,
    load_dataset,
    load_lightgcn,
    load_pairs,
    load_s3rec,
    read_negatives,
)
from trainer.data.loaders.s3rec import infer_layout
from trainer.data.marketplace import save_marketplace
from trainer.data.splits import split_dataset
from trainer.data.validation import DataValidationError

BASE = pd.Timestamp("2020-01-01T00:00:00Z")


def write(folder: Path, files: dict[str, str | dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        text = json.dumps(content) if isinstance(content, dict) else content
        (folder / name).write_text(text)
    return folder


def plain(values) -> list:
    """Values as a list with None for missing ones (pandas' string columns hold NaN)."""
    return [None if pd.isna(v) else v for v in values]


def events_of(market) -> list[tuple]:
    """(user_id, product_id, event_type, ordinal seconds, split) per event, in table order."""
    e = market.events
    offsets = ((e["timestamp"] - BASE).dt.total_seconds()).astype(int).tolist()
    columns = (e["user_id"], e["product_id"], e["event_type"], offsets, plain(e["split"]))
    return list(zip(*columns, strict=True))


def problem_text(error: pytest.ExceptionInfo) -> str:
    return str(error.value)


# --- S3-Rec ---------------------------------------------------------------------------------

SHOP = {
    "Shop.txt": "1 1 2 3\n2 2 4\n",
    # Amazon-like lists: [brand, root, sub]; attribute 7 has an empty name (unknown brand).
    "Shop_item2attributes.json": {"1": [1, 2, 3], "2": [4, 2, 5], "3": [2, 6], "4": [7, 2, 6, 6]},
    "Shop_attribute_id2name.derived.json": {
        "1": "Acme",
        "2": "Makeup",
        "3": "Lip&#39;s",
        "4": "Bolt",
        "5": "Mascara",
        "6": "Eyes",
        "7": "",
    },
}


def test_s3rec_brand_path_layout_gives_sellers_and_a_taxonomy(tmp_path):
    folder = write(tmp_path / "shop", SHOP)
    assert detect_format(folder) == "s3rec"
    market = load_dataset(folder)
    assert events_of(market) == [
        ("1", "1", "purchase", 0, None),
        ("1", "2", "purchase", 1, None),
        ("1", "3", "purchase", 2, None),
        ("2", "2", "purchase", 0, None),
        ("2", "4", "purchase", 1, None),
    ]
    assert market.users["user_id"].tolist() == ["1", "2"]
    products = market.products.set_index("product_id")
    assert products.index.tolist() == ["1", "2", "3", "4"]
    assert plain(products["seller_id"]) == ["1", "4", None, None]
    assert products["category_id"].tolist() == ["3", "5", "6", "6"]
    assert products["in_stock"].all() and not products["consumable"].any()
    assert products[["title", "price", "margin", "created_at"]].isna().all().all()
    assert products.loc["1", "attributes"] == {
        "attribute_ids": "1 2 3",
        "attribute_names": "Acme | Makeup | Lip's",
        "brand": "Acme",
    }
    assert products.loc["4", "attributes"] == {
        "attribute_ids": "7 2 6 6",
        "attribute_names": "Makeup | Eyes | Eyes",
    }
    categories = market.categories.set_index("category_id")
    assert categories["name"].to_dict() == {
        "2": "Makeup",
        "3": "Lip's",
        "5": "Mascara",
        "6": "Eyes",
    }
    assert dict(zip(categories.index, plain(categories["parent_id"]), strict=True)) == {
        "2": None,
        "3": "2",
        "5": "2",
        "6": "2",
    }
    assert market.sellers[["seller_id", "name"]].values.tolist() == [["1", "Acme"], ["4", "Bolt"]]
    info = market.info
    assert (info.name, info.timestamps, info.split, info.max_history) == (
        "shop",
        "ordinal",
        "leave_one_out",
        50,
    )
    assert info.positive_events == ("purchase",)
    assert "seller is a brand" in info.notes and info.extra["attribute_layout"] == "brand_path"


def test_s3rec_bag_layout_uses_datamaps_names_when_the_numbering_matches(tmp_path):
    folder = write(
        tmp_path / "yelpish",
        {
            "Yelp.txt": "1 1 2 3 1\n",
            "Yelp_item2attributes.json": {"1": [1, 2], "2": [2, 3], "3": [3, 1, 2]},
            "datamaps.json": {
                "id2attribute": {"1": "Restaurants", "2": "Bars", "3": "Pizza"},
                "id2item": {"1": "biz-a", "2": "biz-b", "3": "biz-c"},
            },
        },
    )
    market = load_s3rec(folder)
    products = market.products.set_index("product_id")
    # rarest attribute; ties go to the first listed
    assert products["category_id"].tolist() == ["1", "3", "3"]
    assert products["seller_id"].isna().all()
    assert products.loc["2", "attributes"]["source_id"] == "biz-b"
    assert market.categories["parent_id"].isna().all()
    assert sorted(market.categories["name"]) == ["Bars", "Pizza", "Restaurants"]
    assert [e[1] for e in events_of(market)] == ["1", "2", "3", "1"]  # repeats are kept
    assert "probable" in market.info.notes


def test_s3rec_datamaps_with_another_numbering_are_ignored(tmp_path):
    folder = write(
        tmp_path / "p5",
        {
            "Beauty.txt": "1 1 2\n",
            "Beauty_item2attributes.json": {"1": [1], "2": [2]},
            # P5 numbers more attributes than the S3-Rec file uses: not the same numbering
            "datamaps.json": {"id2attribute": {"1": "a", "2": "b", "3": "c"}},
        },
    )
    market = load_s3rec(folder)
    assert market.categories.empty and market.sellers.empty
    assert market.products["category_id"].isna().all()
    assert market.info.extra["attribute_layout"] == "unnamed"


def test_s3rec_unnamed_tags_keep_ids_with_repeats_and_lastfm_is_click(tmp_path):
    folder = write(
        tmp_path / "fm",
        {
            "LastFM.txt": "1 1 2 3\n2 3 1 2\n",
            "LastFM_item2attributes.json": {"1": [5, 5, 6], "2": [6], "3": [7]},
            "LastFM_sample.txt": "1 3\n2 1\n",
        },
    )
    market = load_dataset(folder)
    assert set(market.events["event_type"]) == {"click"}
    assert market.info.positive_events == ("click",)
    assert market.products.set_index("product_id").loc["1", "attributes"] == {
        "attribute_ids": "5 5 6"
    }
    assert market.products["seller_id"].isna().all() and market.categories.empty
    assert market.info.extra["negatives_file"] == "LastFM_sample.txt"


def test_infer_layout():
    assert infer_layout([[10, 1, 2], [11, 1, 3], [4, 5]]) == "brand_path"
    assert infer_layout([[1, 2], [2, 1], [3]]) == "bag"
    assert infer_layout([]) == "bag"


def test_read_negatives_maps_to_rows_and_names_bad_lines(tmp_path):
    users = IdMap(np.array(["1", "2", "3"], dtype=object))
    items = IdMap(np.array(["1", "2", "3", "4"], dtype=object))
    path = tmp_path / "X_sample.txt"
    path.write_text("2 3 4\n1 1 2\n")
    negatives = read_negatives(path, users, items)
    assert list(negatives) == [1, 0]
    assert negatives[1].tolist() == [2, 3] and negatives[0].tolist() == [0, 1]
    path.write_text("1 2 3\n2 4 9\n")
    with pytest.raises(DataValidationError) as error:
        read_negatives(path, users, items)
    assert "X_sample.txt, line 2, field 'negative 2': unknown item id 9" in problem_text(error)
    path.write_text("1 2 3\n7 1 2\n")
    with pytest.raises(DataValidationError, match=r"line 2, field 'user': unknown user id 7"):
        read_negatives(path, users, items)
    path.write_text("1 2 x3\n")
    with pytest.raises(DataValidationError, match=r"line 1, field 'negative 2'.*'x3'"):
        read_negatives(path, users, items)


# --- SASRec / BERT4Rec pairs ------------------------------------------------------------------


def test_pairs_load_in_file_order_and_split_leave_one_out(tmp_path):
    folder = write(tmp_path / "games", {"Video.txt": "1 5\n1 3\n1 4\n1 2\n2 1\n2 2\n"})
    assert detect_format(folder) == "pairs"
    market = load_dataset(folder)
    assert events_of(market) == [
        ("1", "5", "purchase", 0, None),
        ("1", "3", "purchase", 1, None),
        ("1", "4", "purchase", 2, None),
        ("1", "2", "purchase", 3, None),
        ("2", "1", "purchase", 0, None),
        ("2", "2", "purchase", 1, None),
    ]
    assert market.products["product_id"].tolist() == ["1", "2", "3", "4", "5"]
    assert market.categories.empty and market.sellers.empty
    assert (market.info.split, market.info.max_history) == ("leave_one_out", 50)
    data = split_dataset(market)
    # user 2 has fewer than three events: training only (the SASRec convention)
    assert data.items.to_id(data.test["item_idx"]).tolist() == ["2"]
    assert data.items.to_id(data.valid["item_idx"]).tolist() == ["4"]
    assert len(data.train) == 4


# --- LightGCN ---------------------------------------------------------------------------------


def test_lightgcn_keeps_the_fixed_split_and_id_lists(tmp_path):
    folder = write(
        tmp_path / "gw",
        {
            "train.txt": "0 0 1\n1 2 0\n2 1\n",
            "test.txt": "0 2\n1\n2 0 2\n",  # user 1 has an empty test line
            "user_list.txt": "org_id remap_id\n343 0\n5258 1\n77 2\n",
            "item_list.txt": "org_id remap_id\n8975 0\n9190 1\n100 2\n555 3\n",
        },
    )
    assert detect_format(folder) == "lightgcn"
    market = load_dataset(folder)
    assert events_of(market) == [
        ("0", "0", "click", 0, "train"),
        ("0", "1", "click", 1, "train"),
        ("1", "2", "click", 0, "train"),
        ("1", "0", "click", 1, "train"),
        ("2", "1", "click", 0, "train"),
        ("0", "2", "click", 2, "test"),
        ("2", "0", "click", 1, "test"),
        ("2", "2", "click", 2, "test"),
    ]
    # the listed item 3 has no events but belongs to the catalogue
    assert market.products["product_id"].tolist() == ["0", "1", "2", "3"]
    assert market.products["attributes"].tolist()[0] == {"source_id": "8975"}
    assert (market.info.split, market.info.positive_events) == ("fixed", ("click",))
    data = split_dataset(market)
    assert (len(data.train), len(data.valid), len(data.test)) == (5, 0, 3)


def test_lightgcn_without_lists_uses_the_ids_seen(tmp_path):
    folder = write(tmp_path / "plain", {"train.txt": "0 4\n3 1\n", "test.txt": "0 1\n3 4\n"})
    market = load_lightgcn(folder, event_type="purchase")
    assert market.users["user_id"].tolist() == ["0", "3"]
    assert market.products["product_id"].tolist() == ["1", "4"]
    assert market.products["attributes"].isna().all()


def test_lightgcn_id_outside_the_list_is_an_error(tmp_path):
    folder = write(
        tmp_path / "gw",
        {
            "train.txt": "0 0\n",
            "test.txt": "0 5\n",
            "item_list.txt": "org_id remap_id\n8975 0\n",
        },
    )
    with pytest.raises(DataValidationError, match=r"test.txt, field 'item': item id 5 is not in"):
        load_dataset(folder)


# --- multi-behaviour --------------------------------------------------------------------------

TMALL = {
    "data_size.txt": "3 4\n",
    "train.txt": "0 1\n1 2\n",
    "buy.txt": "1 2\n0 1\n",
    "validation.txt": "0 2\n",
    "test.txt": "1 3\n0 0\n",
    "collect.txt": "0 3\n",
    "cart.txt": "1 1\n",
}


def test_mbgcn_types_behaviours_and_keeps_the_purchase_split(tmp_path):
    folder = write(tmp_path / "tm", TMALL)
    assert detect_format(folder) == "mbgcn"
    market = load_dataset(folder)
    assert events_of(market) == [
        ("0", "3", "favorite", 0, "train"),
        ("1", "1", "cart", 0, "train"),
        ("0", "1", "purchase", 1, "train"),
        ("1", "2", "purchase", 1, "train"),
        ("0", "2", "purchase", 2, "valid"),
        ("1", "3", "purchase", 2, "test"),
        ("0", "0", "purchase", 3, "test"),
    ]
    # data_size.txt declares user 2, who has no events
    assert market.users["user_id"].tolist() == ["0", "1", "2"]
    assert market.products["product_id"].tolist() == ["0", "1", "2", "3"]
    assert market.info.positive_events == ("purchase",)
    data = split_dataset(market)
    assert (len(data.train), len(data.valid), len(data.test)) == (4, 1, 2)


def test_mbgcn_rejects_ids_beyond_data_size_and_a_diverging_buy_file(tmp_path):
    folder = write(tmp_path / "tm", {**TMALL, "cart.txt": "1 1\n2 4\n"})
    with pytest.raises(DataValidationError) as error:
        load_dataset(folder)
    assert "cart.txt, line 2, field 'item': item id 4 is outside" in problem_text(error)
    folder = write(tmp_path / "tm2", {**TMALL, "buy.txt": "0 1\n"})
    with pytest.raises(DataValidationError, match=r"buy.txt.*differs from train.txt"):
        load_dataset(folder)


def test_ghcf_loads_cart_purchases_and_sparsity_groups(tmp_path):
    folder = write(
        tmp_path / "bb",
        {
            "train.txt": "0 1 2\n1 0\n",
            "test.txt": "0 3\n1 2\n",
            "cart.txt": "0 3 1\n1 2\n",
            "sparsity.split": "#users=[1]\n0\n#users=[1]\n1\n",
        },
    )
    assert detect_format(folder) == "ghcf"
    market = load_dataset(folder)
    assert events_of(market) == [
        ("0", "3", "cart", 0, "train"),
        ("0", "1", "cart", 1, "train"),
        ("1", "2", "cart", 0, "train"),
        ("0", "1", "purchase", 2, "train"),
        ("0", "2", "purchase", 3, "train"),
        ("1", "0", "purchase", 1, "train"),
        ("0", "3", "purchase", 4, "test"),
        ("1", "2", "purchase", 2, "test"),
    ]
    assert market.info.extra["sparsity_split"] == [["0"], ["1"]]
    data = split_dataset(market)
    assert (len(data.train), len(data.test)) == (6, 2)


def test_ghcf_sparsity_header_must_match(tmp_path):
    folder = write(
        tmp_path / "bb",
        {
            "train.txt": "0 1\n",
            "test.txt": "0 2\n",
            "cart.txt": "0 1\n",
            "sparsity.split": "#users=[2]\n0\n",
        },
    )
    with pytest.raises(
        DataValidationError, match=r"sparsity.split, line 2, field 'user': header announces 2"
    ):
        load_dataset(folder)


# --- detection and canonical folders ----------------------------------------------------------


def test_unknown_folder_lists_the_recognised_formats(tmp_path):
    folder = write(tmp_path / "odd", {"a.csv": "x", "b.txt": "1 2\n", "c.txt": "1 2\n"})
    with pytest.raises(DataValidationError) as error:
        detect_format(folder)
    text = problem_text(error)
    assert "unrecognised dataset folder" in text and "a.csv, b.txt, c.txt" in text
    for name, needs in FORMATS.items():
        assert f"{name}: {needs}" in text


def test_canonical_folder_round_trips(tmp_path):
    market = load_dataset(write(tmp_path / "shop", SHOP))
    saved = save_marketplace(market, tmp_path / "saved")
    assert detect_format(saved) == "canonical"
    again = load_dataset(saved)
    assert again.info == market.info
    pd.testing.assert_frame_equal(again.events, market.events)
    assert dataset_name(tmp_path / "shop") == "shop"


# --- malformed input: every message names file, line and field ---------------------------------


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"Shop.txt": "1 1 2\n2 3 x4 5\n"},
            r"Shop.txt, line 2, field 'item 2': not a non-negative integer: 'x4'",
        ),
        ({"Shop.txt": "1 1 2\n2 3 -4\n"}, r"Shop.txt, line 2, field 'item 2': .*'-4'"),
        ({"Shop.txt": ""}, r"Shop.txt, field '-': the file is empty"),
        ({"Shop.txt": "\n  \n"}, r"Shop.txt, field '-': the file is empty"),
        ({"Shop.txt": "1 1 2\n1 3\n"}, r"Shop.txt, line 2, field 'user': user 1 appears again"),
        ({"Shop.txt": "1 1 2\n2\n"}, r"Shop.txt, line 2, field 'user': a user line with no items"),
        ({"Shop.txt": "1 0 2\n"}, r"Shop.txt, line 1, field 'item 1': user/item id 0 is below 1"),
        (
            {"Shop.txt": "1 " + "9" * 19 + "\n"},
            r"Shop.txt, line 1, field 'item 1': integer with more than 18 digits",
        ),
        (
            {"Shop_item2attributes.json": '{"1": [1],\n "2": [2,}'},
            r"Shop_item2attributes.json, line 2, field '-': invalid JSON",
        ),
        (
            {"Shop_item2attributes.json": '{"1": [1], "2": "red"}'},
            r"Shop_item2attributes.json, field 'item 2': expected a list",
        ),
        (
            {"Shop_item2attributes.json": '{"a1": [1]}'},
            r"Shop_item2attributes.json, field 'item a1': key 'a1' is not a positive integer",
        ),
        (
            {"Shop_attribute_id2name.derived.json": '{"1": 5}'},
            r"derived.json, field 'attribute 1': expected a name string",
        ),
    ],
)
def test_s3rec_malformed_input(tmp_path, files, expected):
    folder = write(tmp_path / "shop", {**SHOP, **files})
    with pytest.raises(DataValidationError, match=expected):
        load_dataset(folder)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            "1 2\n1 3 4\n",
            r"Video.txt, line 2, field 'field 3': expected 2 fields \(user item\), found 3",
        ),
        ("1 2\n1\n", r"Video.txt, line 2, field 'user': expected 2 fields \(user item\), found 1"),
        ("1 2\n1 3.5\n", r"Video.txt, line 2, field 'item': not a non-negative integer: '3.5'"),
        ("", r"Video.txt, field '-': the file is empty"),
    ],
)
def test_pairs_malformed_input(tmp_path, content, expected):
    folder = write(tmp_path / "games", {"Video.txt": content})
    with pytest.raises(DataValidationError, match=expected):
        load_pairs(folder)


def test_lightgcn_malformed_input(tmp_path):
    folder = write(tmp_path / "gw", {"train.txt": "0 1\n1 2 3\n0 4\n", "test.txt": "0 2\n"})
    with pytest.raises(
        DataValidationError,
        match=r"train.txt, line 3, field 'user': user 0 appears again \(first on line 1\)",
    ):
        load_dataset(folder)
    folder = write(
        tmp_path / "gw2",
        {"train.txt": "0 1\n", "test.txt": "0 2\n", "user_list.txt": "org_id remap_id\n5 zero\n"},
    )
    with pytest.raises(DataValidationError, match=r"user_list.txt, line 2, field 'remap_id'"):
        load_dataset(folder)


# --- the real datasets (anchors.md §2) --------------------------------------------------------

REAL = {
    # name: (format, users, items, interactions, event counts)
    "beauty_s3rec": ("s3rec", 22_363, 12_101, 198_502, {"purchase": 198_502}),
    "lastfm_s3rec": ("s3rec", 1_090, 3_646, 52_551, {"click": 52_551}),
    "yelp_s3rec": ("s3rec", 30_431, 20_033, 316_354, {"purchase": 316_354}),
    "video_sasrec": ("pairs", 31_013, 23_715, 287_107, {"purchase": 287_107}),
    "beauty_bert4rec": ("pairs", 40_226, 54_542, 353_962, {"purchase": 353_962}),
    "gowalla_lightgcn": ("lightgcn", 29_858, 40_981, 1_027_370, {"click": 1_027_370}),
    "tmall_mbgcn": (
        "mbgcn",
        41_738,
        11_953,
        510_668,
        {"purchase": 287_158, "favorite": 221_514, "cart": 1_996},
    ),
    "beibei_ghcf": ("ghcf", 21_716, 7_977, 947_198, {"purchase": 304_576, "cart": 642_622}),
}
# (train, valid, test) target/event counts of each dataset's own split protocol
SPLITS = {
    "beauty_s3rec": (198_502 - 2 * 22_363, 22_363, 22_363),
    "lastfm_s3rec": (52_551 - 2 * 1_090, 1_090, 1_090),
    "yelp_s3rec": (316_354 - 2 * 30_431, 30_431, 30_431),
    "gowalla_lightgcn": (810_128, 0, 217_242),
    "tmall_mbgcn": (181_428 + 221_514 + 1_996, 31_572, 74_158),
    "beibei_ghcf": (282_860 + 642_622, 0, 21_716),
}


@pytest.mark.realdata
@pytest.mark.parametrize("name", sorted(REAL))
def test_real_dataset_loads_with_the_published_counts(real_dataset, name):
    folder = real_dataset(name)
    fmt, num_users, num_items, num_events, by_type = REAL[name]
    assert detect_format(folder) == fmt
    market = load_dataset(folder)
    assert (len(market.users), len(market.products), len(market.events)) == (
        num_users,
        num_items,
        num_events,
    )
    assert market.events["event_type"].value_counts().to_dict() == by_type
    assert market.info.name == name and market.info.timestamps == "ordinal"
    data = split_dataset(market)
    if name in SPLITS:
        assert (len(data.train), len(data.valid), len(data.test)) == SPLITS[name]
    if name == "beauty_s3rec":
        assert data.test["user_idx"].nunique() == 22_363
        assert len(market.sellers) > 400 and len(market.categories) > 150
    if name == "tmall_mbgcn":
        purchases = data.positives(data.train)
        assert len(purchases) == 181_428
    if name == "video_sasrec":
        # users with fewer than three actions stay in training only
        assert len(data.test) == 30_901


@pytest.mark.realdata
def test_lastfm_negatives_parse_with_99_per_user(real_dataset):
    folder = real_dataset("lastfm_s3rec")
    market = load_dataset(folder)
    data = split_dataset(market)
    negatives = read_negatives(folder / market.info.extra["negatives_file"], data.users, data.items)
    assert len(negatives) == 1_090
    assert {len(v) for v in negatives.values()} == {99}
    seen = data.seen_matrix("test")
    test_item = dict(zip(data.test["user_idx"], data.test["item_idx"], strict=True))
    for user, items in negatives.items():
        assert seen[user, items].sum() == 0 and test_item[user] not in set(items.tolist())
