"""The SQLite event log: durability across reopen, purchase order, seller exposure, bad types."""

from __future__ import annotations

import time

import pytest

from webapp.events import Event, EventStore


@pytest.fixture
def store(tmp_path):
    s = EventStore(tmp_path / "events.sqlite3", exposure_ttl_s=0.0)
    yield s
    s.close()


def test_events_survive_reopening(tmp_path):
    path = tmp_path / "events.sqlite3"
    first = EventStore(path)
    event_id = first.record(Event("u1", "p1", "click", seller_id="s1", hour=9, device="app"))
    first.close()
    again = EventStore(path)
    [row] = again.events("u1")
    again.close()
    assert row["event_id"] == event_id
    assert (row["product_id"], row["event_type"], row["hour"], row["device"]) == (
        "p1",
        "click",
        9,
        "app",
    )


def test_purchases_come_newest_first_once_each(store):
    for product in ("p2", "p9", "p1", "p2"):  # p2 bought again last
        store.record(Event("u1", product, "purchase"))
    store.record(Event("u1", "p5", "cart"))  # not a purchase
    store.record(Event("u2", "p7", "purchase"))  # another user
    assert store.purchased("u1") == ["p2", "p1", "p9"]
    assert store.purchased("nobody") == []


def test_seller_exposure_is_the_share_of_recent_impressions(store):
    now = int(time.time())
    for seller in ("a", "a", "a", "b"):
        store.record(Event("u1", "p", "impression", seller_id=seller, ts=now))
    store.record(Event("u1", "p", "impression", seller_id="b", ts=now - 30 * 24 * 3600))
    store.record(Event("u1", "p", "click", seller_id="b", ts=now))
    assert store.seller_exposure() == pytest.approx({"a": 0.75, "b": 0.25})


def test_no_impressions_means_no_exposure(store):
    store.record(Event("u1", "p", "purchase", seller_id="a"))
    assert store.seller_exposure() is None


def test_an_unknown_event_type_is_refused_and_nothing_is_stored(store):
    store.record(Event("u1", "p1", "click"))
    with pytest.raises(ValueError, match="event_type: 'view'"):
        store.record(Event("u1", "p2", "view"))
    assert [e["product_id"] for e in store.events("u1")] == ["p1"]
