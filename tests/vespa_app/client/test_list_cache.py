"""The TTL list cache behind the shared popularity lists."""

from __future__ import annotations

import threading
import time

import pytest

from vespa_app.client.list_cache import ListCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def counting_fetch(calls: list[str], value: str):
    def fetch() -> str:
        calls.append(value)
        return value

    return fetch


def test_fetches_once_within_the_ttl_and_again_after():
    clock, calls = Clock(), []
    cache = ListCache(10.0, clock=clock)
    assert cache.get("k", counting_fetch(calls, "a")) == "a"
    clock.now = 9.9
    assert cache.get("k", counting_fetch(calls, "b")) == "a"
    clock.now = 10.0
    assert cache.get("k", counting_fetch(calls, "c")) == "c"
    assert calls == ["a", "c"]


def test_keys_are_separate_and_the_least_recently_used_goes_first():
    calls: list[str] = []
    cache = ListCache(60.0, max_entries=2, clock=Clock())
    cache.get("x", counting_fetch(calls, "x1"))
    cache.get("y", counting_fetch(calls, "y1"))
    cache.get("x", counting_fetch(calls, "x2"))  # hit: x is now the most recent
    cache.get("z", counting_fetch(calls, "z1"))  # evicts y
    assert cache.get("x", counting_fetch(calls, "x3")) == "x1"
    assert cache.get("y", counting_fetch(calls, "y2")) == "y2"
    assert calls == ["x1", "y1", "z1", "y2"]


def test_zero_ttl_always_fetches_and_bad_settings_are_refused():
    calls: list[str] = []
    cache = ListCache(0.0)
    cache.get("k", counting_fetch(calls, "a"))
    cache.get("k", counting_fetch(calls, "b"))
    assert calls == ["a", "b"]
    with pytest.raises(ValueError, match="ttl_s"):
        ListCache(-1.0)
    with pytest.raises(ValueError, match="max_entries"):
        ListCache(1.0, max_entries=0)
    with pytest.raises(ValueError, match="stale_s"):
        ListCache(1.0, stale_s=-1.0)


def _until(condition, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return False


def test_a_stale_entry_is_served_while_one_background_fetch_refreshes_it():
    clock, calls = Clock(), []
    cache = ListCache(10.0, clock=clock, stale_s=50.0)
    cache.get("k", counting_fetch(calls, "a"))
    release = threading.Event()

    def slow_b() -> str:
        release.wait(5)
        calls.append("b")
        return "b"

    clock.now = 12.0  # past the TTL, inside the stale window
    assert cache.get("k", slow_b) == "a"  # served at once, refresh started
    assert cache.get("k", slow_b) == "a"  # no second refresh while one is running
    release.set()
    assert _until(lambda: cache.get("k", counting_fetch(calls, "x")) == "b")
    assert calls == ["a", "b"]  # one background fetch; the fresh entry is then a hit
    clock.now = 12.0 + 10.0 + 50.0  # the refreshed entry (fetched at 12) is past its window
    assert cache.get("k", counting_fetch(calls, "c")) == "c"  # a foreground fetch


def test_a_failed_background_refresh_keeps_the_entry_then_the_foreground_raises():
    clock, calls = Clock(), []
    cache = ListCache(10.0, clock=clock, stale_s=50.0)
    cache.get("k", counting_fetch(calls, "a"))
    failed = threading.Event()

    def broken() -> str:
        failed.set()
        raise RuntimeError("engine down")

    clock.now = 30.0
    assert cache.get("k", broken) == "a"
    assert failed.wait(5)
    assert _until(lambda: not cache._refreshing)
    assert cache.get("k", counting_fetch(calls, "x")) == "a"  # still served, refresh retried
    assert _until(lambda: not cache._refreshing)
    clock.now = 200.0
    with pytest.raises(RuntimeError, match="engine down"):
        cache.get("k", broken)
