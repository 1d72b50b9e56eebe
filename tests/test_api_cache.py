"""The API's answer cache: never older than its TTL, never larger than its cap."""

from __future__ import annotations

import threading

from streamcast.api import TTLCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_idle_key_is_recomputed_not_served_stale() -> None:
    clock, version = Clock(), [1]
    cache = TTLCache(1.0, clock=clock)
    assert cache.get("k", lambda: version[0]) == 1
    version[0] = 2  # a commit
    clock.now += 0.4
    assert cache.get("k", lambda: version[0]) == 1  # young enough: served as is
    clock.now += 3.0  # the key sat idle: its answer is older than the TTL
    assert cache.get("k", lambda: version[0]) == 2


def test_a_busy_key_is_refreshed_in_the_background_within_the_ttl() -> None:
    clock = Clock()
    cache = TTLCache(1.0, clock=clock)
    cache.get("k", lambda: "old")
    clock.now += 0.7  # past half the TTL: answered now, recomputed behind the answer
    refreshed = threading.Event()

    def compute() -> str:
        refreshed.set()
        return "new"

    assert cache.get("k", compute) == "old"
    assert refreshed.wait(5)
    for _ in range(500):  # the refresh stores its value right after computing it
        if cache.get("k", lambda: "sync") == "new":
            break
        threading.Event().wait(0.01)
    assert cache.get("k", lambda: "sync") == "new"


def test_distinct_query_values_cannot_grow_the_cache_without_bound() -> None:
    cache = TTLCache(60.0, max_entries=8, clock=Clock())
    for i in range(1_000):
        cache.get(("latest", f"series-{i}"), lambda i=i: i)
    assert len(cache) == 8
    assert cache.get(("latest", "series-999"), lambda: -1) == 999  # the most recent survive
    assert cache.get(("latest", "series-0"), lambda: -1) == -1
