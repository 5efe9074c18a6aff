"""Document selection subset (spec §3 "Visit")."""

from __future__ import annotations

import pytest

from vespa_app.engine.selection import SelectionError, compile_selection
from vespa_app.engine.values import UnsupportedError

FIELDS = {"product": {"price", "in_stock", "title", "tags"}, "user": {"user_id"}}
DOC = {"price": 15.0, "in_stock": True, "title": "Chef knife", "tags": ["home", "home/kitchen"]}


def matches(selection: str, doc_type: str = "product", fields: dict | None = None) -> bool:
    return compile_selection(selection, FIELDS)(doc_type, DOC if fields is None else fields)


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        ("true", True),
        ("false", False),
        ("product", True),
        ("user", False),
        ("product.in_stock==true", True),
        ("product.in_stock == false", False),
        ("product.price > 10 AND product.price <= 15", True),
        ('product.price < 10 or product.title == "Chef knife"', True),
        ("not (product.price >= 15)", False),
        ("10 < product.price", True),
        ('product.tags == "home/kitchen"', True),
        ('product.title != "x"', True),
        ('product.price == "15"', False),
        ("product.title == null", False),
        ("user.user_id == null", False),
    ],
)
def test_selection_semantics(selection: str, expected: bool) -> None:
    assert matches(selection) is expected


def test_missing_field_only_equals_null() -> None:
    assert matches("product.price == null", fields={})
    assert not matches("product.price < 100", fields={})
    assert not matches("product.price != 3", fields={})


@pytest.mark.parametrize(
    "selection", ["", "product.", "product.nope == 1", "nosuch", "(true", "product.price >"]
)
def test_bad_selections(selection: str) -> None:
    with pytest.raises(SelectionError):
        compile_selection(selection, FIELDS)


@pytest.mark.parametrize(
    "selection", ['product.title = "Chef*"', 'product.title =~ "C.*"', "id.user == 1"]
)
def test_unsupported_selection_constructs(selection: str) -> None:
    with pytest.raises(UnsupportedError):
        compile_selection(selection, FIELDS)
