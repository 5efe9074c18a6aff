"""Context popularity (model_export/popularity.py): keys, lifts and query weights by hand."""

from __future__ import annotations

import pandas as pd
import pytest

from model_export.popularity import (
    context_keys,
    context_popularity,
    context_weights,
    daypart,
    weights_literal,
)


def test_dayparts_and_keys():
    assert [daypart(h) for h in (0, 5, 6, 11, 12, 17, 18, 23)] == [
        "night", "night", "morning", "morning", "afternoon", "afternoon", "evening", "evening",
    ]  # fmt: skip
    assert daypart(None) is None and daypart(24) is None
    assert context_keys(20, "mobile") == ["all", "device:mobile", "daypart:evening"]
    assert context_weights(None, None) == {"all": 1.0}
    assert context_weights(8, None) == {"all": 0.5, "daypart:morning": 1.0}
    assert weights_literal({"all": 0.5, "device:app": 1}) == '{"all":0.5,"device:app":1.0}'


def test_lifts_are_shares_times_the_catalogue_size():
    # 4 products; mobile events: a, a, b; desktop: c; one event without device or hour.
    events = pd.DataFrame(
        {
            "product_id": ["a", "a", "b", "c", "d", "zz"],
            "device": ["mobile", "mobile", "mobile", "desktop", None, "desktop"],
            "hour": [20, 21, 9, 9, None, 3],
        }
    )
    lifts = context_popularity(events, ["a", "b", "c", "d"])
    a, b, c, d = lifts
    assert a["all"] == pytest.approx(2 / 6 * 4)
    assert a["device:mobile"] == pytest.approx(2 / 3 * 4)
    assert b["device:mobile"] == pytest.approx(1 / 3 * 4)
    assert c["device:desktop"] == pytest.approx(1 / 2 * 4)  # "zz" counts in the total
    assert a["daypart:evening"] == pytest.approx(1.0 * 4)
    assert b["daypart:morning"] == c["daypart:morning"] == pytest.approx(1 / 2 * 4)
    assert set(d) == {"all"}  # unknown device and hour: only the global key
    assert context_popularity(events.iloc[:0], ["a"]) == [{}]
