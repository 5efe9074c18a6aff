"""The storefront's parts without an engine: catalogue names and taxonomy, demo shoppers,
parameter checks, the locally drawn product images and the "why this?" sentences."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pandas as pd
import pytest

from tests.trainer.data.builders import T0, events, frames
from trainer.data.marketplace import DatasetInfo, Marketplace, save_marketplace
from webapp.images import product_svg
from webapp.storefront import params
from webapp.storefront.catalog import Catalog
from webapp.storefront.queries import WORD, normalized_mean
from webapp.storefront.rows import why


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Catalog:
    """Two root categories (home, toys); u1 (8 events) and u3 (5, one purchase) shop mostly
    home, u2 toys, u4 too little."""
    tables = frames(num_products=6)
    tables["categories"] = pd.DataFrame(
        {
            "category_id": ["home", "home/kitchen", "toys"],
            "name": ["Home", "Kitchen", "Toys"],
            "parent_id": [None, "home", None],
        }
    )
    tables["products"]["category_id"] = ["home/kitchen"] * 3 + ["toys"] * 3
    tables["users"] = pd.DataFrame(
        {"user_id": ["u1", "u2", "u3", "u4"], "created_at": [T0] * 4, "location": ["es"] * 4}
    )
    rows = [("u1", f"p{i % 3}", "click") for i in range(7)] + [("u1", "p4", "click")]
    rows += [("u2", f"p{3 + i % 3}", "click") for i in range(6)]
    rows += [("u3", f"p{i % 3}", "cart") for i in range(4)] + [("u3", "p0", "purchase")]
    rows += [("u4", "p4", "click"), ("u4", "p5", "impression")]
    tables["events"] = events(rows)
    market = Marketplace.from_frames(DatasetInfo(name="two-roots", source="tests"), **tables)
    return Catalog.from_dataset(save_marketplace(market, tmp_path_factory.mktemp("m") / "m"))


def test_catalog_names_and_paths(catalog):
    leaf = next(c for c in catalog.categories.values() if c.parent_id is not None)
    path = catalog.path(leaf.category_id)
    assert path[-1] == leaf.category_id and catalog.categories[path[0]].parent_id is None
    assert catalog.roots() and all(catalog.categories[r].parent_id is None for r in catalog.roots())
    assert catalog.category_name(leaf.category_id) == leaf.name
    seller_id, name = next(iter(catalog.sellers.items()))
    assert catalog.seller_name(seller_id) == name


def test_without_a_dataset_names_come_from_ids():
    catalog = Catalog()
    assert catalog.category_name("home/kitchen/knives") == "Knives"
    assert catalog.category_name("garden_tools") == "Garden tools"
    assert catalog.seller_name("s7") == "s7" and catalog.seller_name(None) == "unknown seller"
    assert catalog.path("home/kitchen") == ["home/kitchen"] and catalog.demo_users == ()


def test_demo_shoppers_are_active_and_differ_in_taste(catalog):
    # u3 bought something: it is home's shopper before the more active u1; u2 has toys; u4
    # has a single positive event.
    assert [(u.user_id, u.tastes) for u in catalog.demo_users] == [
        ("u3", ("home",)),
        ("u2", ("toys",)),
    ]
    assert catalog.demo_users[1].label == "u2: Toys"


def test_missing_dataset_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"categories\.parquet"):
        Catalog.from_dataset(tmp_path)


@pytest.mark.parametrize(
    "value", ["", "a,b", 'x"y', "x\\y", "<b>", "x" * 201, "-lead", "x\ny", None]
)
def test_identifiers_are_checked(value):
    with pytest.raises(params.BadParameter) as error:
        params.identifier("product_id", value)
    assert str(error.value).startswith("product_id: ")


def test_good_identifiers_pass():
    for value in ("p001", "home/kitchen/knives", "guest-1a2b", "B00X:12.5@shop"):
        assert params.identifier("id", value) == value


def test_integers_choices_and_search_text():
    assert params.integer("page", None, 1, 40, 1) == 1
    assert params.integer("page", "3", 1, 40, 1) == 3
    for bad in ("0", "41", "x", "1.5"):
        with pytest.raises(params.BadParameter, match=r"^page: "):
            params.integer("page", bad, 1, 40, 1)
    assert params.choice("mode", None, ("text", "hybrid"), "text") == "text"
    with pytest.raises(params.BadParameter, match=r"^mode: "):
        params.choice("mode", "magic", ("text", "hybrid"), "text")
    assert params.search_text("  kettle  ") == "kettle"
    for bad in ("", "   ", "a\x00b", "x" * 201, None):
        with pytest.raises(params.BadParameter, match=r"^q: "):
            params.search_text(bad)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/product/p1", "/product/p1"),
        ("/search?q=a", "/search?q=a"),
        ("//evil.example/x", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        (None, "/"),
    ],
)
def test_redirects_only_to_local_paths(value, expected):
    assert params.local_path(value) == expected


def test_search_words_drop_query_syntax():
    assert WORD.findall('+steel -"pan" (café) a_b 42') == ["steel", "pan", "café", "a", "b", "42"]


def test_normalized_mean():
    assert normalized_mean([[3.0, 0.0], [0.0, 4.0]]) == pytest.approx([0.6, 0.8])
    assert normalized_mean([]) is None and normalized_mean([[0.0, 0.0]]) is None


def test_product_images_are_deterministic_valid_and_escaped():
    svg = product_svg("p1", ["home", "home/kitchen"], 'Pans & "pots" <b>')
    assert svg == product_svg("p1", ["home", "home/kitchen"], 'Pans & "pots" <b>')
    root = ET.fromstring(svg)  # well-formed XML: the label is escaped
    assert root.get("aria-label") == 'Pans & "pots" <b>'
    assert "<b>" not in svg
    assert svg != product_svg("p2", ["home", "home/kitchen"], "Pans")
    assert product_svg("p1", [], "product").startswith("<svg")


def test_why_this_sentences():
    item = {
        "explanation": {
            "source": "ann+walk",
            "scores": {"retrieval": 0.5, "ranker": 1.25, "final": None},
            "rules": [{"rule": "mmr", "effect": "promoted", "from": 4, "to": 2}],
            "supported_by": {"product_id": "p9", "reason": "embedding_similarity"},
        }
    }
    lines = why(item, {"p9": "Steel pan"})
    assert lines[0] == (
        "Found because it is close to your taste (embedding retrieval) and often bought by "
        "shoppers with your history (graph walk)."
    )
    assert lines[1] == "Scores: retrieval 0.500, ranker 1.250."
    assert lines[2] == "It is similar to Steel pan, which you interacted with."
    assert lines[3] == "Rule mmr: promoted from 4 to 2."
    cold = why({"explanation": {"source": "browsed:home/kitchen", "rules": []}}, {})
    assert cold == ["Found because it is popular in home/kitchen, which you browsed."]
    assert why({}, {}) == []


def test_inspector_rows_never_show_a_card_relevance_as_a_stage_score():
    from webapp.storefront.inspector import _stage_item

    card = {"product_id": "p1", "title": "Pan", "relevance": 7.0}
    stage = {"product_id": "p1", "retrieval_score": 0.5, "ranker_score": None, "final_score": None}
    row = _stage_item({**card, **stage}, 1)
    assert (row["retrieval_score"], row["ranker_score"], row["final_score"]) == (0.5, None, None)
    # A single-query row has no stage scores: its order is the query's relevance.
    assert _stage_item(card, 1)["final_score"] == 7.0
