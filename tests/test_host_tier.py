"""The server's host tier (cache/host_tier.py) on a fake clock and a fake cache that records
what the tier asked of the radix tree: when it offloads, holds and releases the host copy,
prefetches, and gives up."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from sglang_agent.cache.host_tier import HiCacheHostTier


class FakeCache:
    def __init__(self, offload_done_after: int = 1):
        self.step_listeners = []
        self.cache_controller = SimpleNamespace(mem_pool_host=SimpleNamespace(size=10_000, size_per_token=1_000))
        self.calls: list[tuple[str, str]] = []
        self.on_host: dict[str, int] = {}
        self.held: set[str] = set()
        self.offload_calls_to_finish = offload_done_after

    def has_host_tier(self):
        return True

    def offload_session(self, session_id):
        self.calls.append(("offload", session_id))
        self.offload_calls_to_finish -= 1
        done = self.offload_calls_to_finish <= 0
        if done:
            self.on_host[session_id] = 500
        return (500 if done else 0), done

    def prefetch_session(self, session_id):
        self.calls.append(("prefetch", session_id))
        self.held.discard(session_id)
        return self.on_host.pop(session_id, 0)

    def hold_host(self, session_id):
        self.held.add(session_id)
        return True

    def release_host(self, session_id):
        self.held.discard(session_id)

    def session_host_tokens(self, session_id):
        return self.on_host.get(session_id, 0)


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def make(**kw):
    cache, clock = FakeCache(**kw), Clock()
    return HiCacheHostTier(cache, clock, bandwidth_gbps=1.0), cache, clock


def step(cache):
    for listener in cache.step_listeners:
        listener()


def test_reload_time_and_room_come_from_the_host_pool():
    tier, _, _ = make()
    assert tier.reload_s(2_000) == pytest.approx(2_000 * 1_000 / 1e9)
    assert tier.has_room(10_000) and not tier.has_room(10_001)
    tier.offload("a", 6_000, keep_s=60, prefetch_after_s=10)
    assert not tier.has_room(5_000)  # what live offloads hold counts against the room


def test_long_tool_is_offloaded_then_prefetched_at_the_predicted_time_and_counts_a_hit():
    tier, cache, clock = make()
    tier.offload("a", 500, keep_s=60, prefetch_after_s=10)
    assert cache.calls == [("offload", "a")] and "a" in cache.held
    assert tier.snapshot()["host_tokens"] == 500 and tier.stats.gpu_tokens_freed == 500
    clock.now += 9.9
    step(cache)
    assert ("prefetch", "a") not in cache.calls  # not due yet
    clock.now += 0.2
    step(cache)
    assert cache.calls[-1] == ("prefetch", "a") and tier.stats.prefetched_tokens == 500
    assert "a" not in cache.held  # the reload owns the host copy now
    tier.prefetch_now("a", turn_arrived=True)
    assert tier.stats.prefetch_hits == 1 and tier.stats.prefetch_misses == 0
    assert tier.snapshot()["sessions_offloaded"] == 0


def test_tool_end_before_the_prediction_reloads_at_once():
    tier, cache, clock = make()
    tier.offload("a", 500, keep_s=60, prefetch_after_s=10)
    clock.now += 1
    tier.prefetch_now("a")  # tool_end
    assert cache.calls[-1] == ("prefetch", "a")
    step(cache)
    assert cache.calls.count(("prefetch", "a")) == 1  # not twice


def test_turn_before_any_reload_is_a_miss_that_reloads_immediately():
    tier, cache, _ = make()
    tier.offload("a", 500, keep_s=60, prefetch_after_s=10)
    tier.prefetch_now("a", turn_arrived=True)
    assert cache.calls[-1] == ("prefetch", "a")
    assert tier.stats.prefetch_misses == 1 and tier.stats.prefetch_hits == 0


def test_tool_that_never_returns_lets_go_of_both_tiers_at_the_keep_time():
    tier, cache, clock = make()
    tier.offload("a", 500, keep_s=30, prefetch_after_s=1e9)
    assert "a" in cache.held
    clock.now += 30
    step(cache)
    assert "a" not in cache.held and tier.stats.offloads_expired == 1
    assert tier.snapshot()["sessions_offloaded"] == 0 and ("prefetch", "a") not in cache.calls


def test_offload_waiting_for_its_host_copy_is_retried_each_step_and_then_held():
    tier, cache, _ = make(offload_done_after=3)
    tier.offload("a", 500, keep_s=60, prefetch_after_s=10)
    assert "a" not in cache.held and tier.stats.gpu_tokens_freed == 0
    step(cache)
    step(cache)
    assert cache.calls.count(("offload", "a")) == 3 and "a" in cache.held
    assert tier.stats.gpu_tokens_freed == 500
    step(cache)
    assert cache.calls.count(("offload", "a")) == 3  # done: no more tries


def test_closing_a_session_releases_its_host_copy():
    tier, cache, _ = make()
    tier.offload("a", 500, keep_s=60, prefetch_after_s=10)
    tier.forget("a")
    assert "a" not in cache.held and tier.snapshot()["sessions_offloaded"] == 0
    tier.prefetch_now("a", turn_arrived=True)  # unknown now: a no-op
    assert tier.stats.prefetch_misses == 0


def test_a_cache_without_hicache_is_refused_with_the_flag_to_use():
    cache = FakeCache()
    cache.has_host_tier = lambda: False
    with pytest.raises(ValueError, match="--enable-hierarchical-cache"):
        HiCacheHostTier(cache, Clock(), 1.0)


def test_next_workflow_agent_prefix_is_reloaded_unless_its_session_is_in_a_tool_call():
    tier, cache, _ = make()
    cache.on_host["planner"] = 700
    assert tier.prefetch_prefix("planner") == 700
    assert tier.stats.workflow_prefetched_tokens == 700
    tier.offload("coder", 500, keep_s=60, prefetch_after_s=10)
    assert tier.prefetch_prefix("coder") == 0 and cache.calls[-1] == ("offload", "coder")


def test_a_prefetch_that_found_no_room_on_the_gpu_is_a_miss():
    tier, cache, clock = make()
    tier.offload("a", 500, keep_s=60, prefetch_after_s=1)
    cache.prefetch_session = lambda session_id: 0  # load_back refused: the GPU is full
    clock.now += 2
    step(cache)
    assert tier.jobs["a"].prefetched
    tier.prefetch_now("a", turn_arrived=True)
    assert tier.stats.prefetch_hits == 0 and tier.stats.prefetch_misses == 1
