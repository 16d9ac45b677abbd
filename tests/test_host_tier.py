"""The server's host tier (cache/host_tier.py) on a fake clock and a fake cache that records
what the tier asked of the radix tree: when it offloads, holds and releases the host copy,
reloads (only within the GPU headroom it is given), reports a reload back, and gives up."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from sglang_agent.cache.host_tier import HiCacheHostTier


class FakeCache:
    def __init__(self, offload_done_after: int = 1):
        self.cache_controller = SimpleNamespace(mem_pool_host=SimpleNamespace(size=10_000, size_per_token=1_000))
        self.calls: list[tuple[str, str]] = []
        self.on_host: dict[str, int] = {}
        self.held: set[str] = set()
        self.offload_calls_to_finish = offload_done_after
        self.loading = False

    def has_host_tier(self):
        return True

    def host_room_tokens(self):
        return 10_000 - sum(self.on_host.get(s, 0) for s in self.held)

    def offload_session(self, session_id):
        self.calls.append(("offload", session_id))
        self.offload_calls_to_finish -= 1
        done = self.offload_calls_to_finish <= 0
        if done:
            self.on_host[session_id] = 500
        return (500 if done else 0), done

    def prefetch_session(self, session_id, headroom_tokens):
        if self.on_host.get(session_id, 0) > headroom_tokens:
            return None
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

    def loads_in_flight(self):
        return self.loading


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def make(**kw):
    cache, clock = FakeCache(**kw), Clock()
    return HiCacheHostTier(cache, clock, bandwidth_gbps=1.0), cache, clock


ROOM = 1_000_000


def test_reload_time_and_room_come_from_the_host_pool():
    """Defect (issue "No lost work", 9d): room ignored what HiCache itself holds. It is read from
    the host pool now, minus what offloaded sessions hold there."""
    tier, cache, _ = make()
    assert tier.reload_s(2_000) == pytest.approx(2_000 * 1_000 / 1e9)
    assert tier.room_tokens() == 10_000
    tier.offload("a", 500, prefetch_at=110, keep_until=160)
    assert tier.room_tokens() == 9_500


def test_long_tool_is_offloaded_then_reloaded_at_the_predicted_time_and_reported():
    tier, cache, clock = make()
    tier.offload("a", 500, prefetch_at=110, keep_until=160)
    assert cache.calls == [("offload", "a")] and "a" in cache.held
    assert tier.snapshot()["host_tokens"] == 500 and tier.stats.gpu_tokens_freed == 500
    clock.now = 109.9
    assert not tier.poll(clock.now, ROOM).reloaded
    assert ("prefetch", "a") not in cache.calls  # not due yet
    clock.now = 110.1
    events = tier.poll(clock.now, ROOM)
    assert cache.calls[-1] == ("prefetch", "a") and tier.stats.prefetched_tokens == 500
    assert "a" not in cache.held  # the reload owns the host copy now
    # protected until the predicted return (already passed here: from now)
    assert events.reloaded == {"a": pytest.approx(max(clock.now, 110 + tier.reload_s(500)))}
    assert not tier.poll(clock.now, ROOM).reloaded  # reported once


def test_a_reload_waits_for_gpu_room_beyond_what_running_requests_need():
    """Defect (issue "No lost work", 1): a reload took memory the running batch needed and the
    decoding request failed with OOM. Failed on main: the reload ran with no headroom check."""
    tier, cache, clock = make()
    tier.offload("a", 500, prefetch_at=110, keep_until=160)
    clock.now = 111
    tier.poll(clock.now, headroom_tokens=100)
    assert ("prefetch", "a") not in cache.calls and tier.stats.reloads_waited == 1
    tier.poll(clock.now, headroom_tokens=600)
    assert cache.calls[-1] == ("prefetch", "a")


def test_a_reload_still_in_flight_is_not_reported_yet():
    tier, cache, clock = make()
    tier.offload("a", 500, prefetch_at=100, keep_until=160)
    cache.loading = True
    assert not tier.poll(clock.now, ROOM).reloaded
    cache.loading = False
    assert "a" in tier.poll(clock.now, ROOM).reloaded


def test_tool_end_before_the_prediction_reloads_at_the_next_step():
    tier, cache, clock = make()
    tier.offload("a", 500, prefetch_at=110, keep_until=160)
    clock.now = 101
    tier.prefetch_now("a")  # tool_end
    tier.poll(clock.now, ROOM)
    assert cache.calls[-1] == ("prefetch", "a")
    tier.poll(clock.now, ROOM)
    assert cache.calls.count(("prefetch", "a")) == 1  # not twice


def test_a_turn_before_any_reload_leaves_the_load_to_its_admission():
    """The resumed turn's own admission loads what is on host (upstream's path, inside its memory
    accounting); the tier keeps the host copy held until then, and lets go once it is loaded."""
    tier, cache, clock = make()
    tier.offload("a", 500, prefetch_at=110, keep_until=160)
    tier.turn_arrived("a")
    tier.poll(clock.now, ROOM)
    assert ("prefetch", "a") not in cache.calls and "a" in cache.held
    cache.on_host.pop("a")  # admission loaded it
    tier.poll(clock.now, ROOM)
    assert "a" not in cache.held and not tier.has_job("a")


def test_tool_that_never_returns_lets_go_at_the_keep_time_and_says_so():
    tier, cache, clock = make()
    tier.offload("a", 500, prefetch_at=1e9, keep_until=130)
    assert "a" in cache.held
    clock.now = 130
    events = tier.poll(clock.now, ROOM)
    assert events.lapsed == ["a"] and "a" not in cache.held
    assert tier.snapshot()["sessions_offloaded"] == 0 and ("prefetch", "a") not in cache.calls


def test_offload_waiting_for_its_host_copy_is_retried_each_step_and_then_held():
    tier, cache, clock = make(offload_done_after=3)
    tier.offload("a", 500, prefetch_at=110, keep_until=160)
    assert "a" not in cache.held and tier.stats.gpu_tokens_freed == 0
    tier.poll(clock.now, ROOM)
    tier.poll(clock.now, ROOM)
    assert cache.calls.count(("offload", "a")) == 3 and "a" in cache.held
    assert tier.stats.gpu_tokens_freed == 500
    tier.poll(clock.now, ROOM)
    assert cache.calls.count(("offload", "a")) == 3  # done: no more tries


def test_closing_a_session_releases_its_host_copy():
    tier, cache, _ = make()
    tier.offload("a", 500, prefetch_at=110, keep_until=160)
    tier.forget("a")
    assert "a" not in cache.held and tier.snapshot()["sessions_offloaded"] == 0
    tier.turn_arrived("a")  # unknown now: a no-op
    assert not tier.has_job("a")


def test_a_cache_without_hicache_is_refused_with_the_flag_to_use():
    cache = FakeCache()
    cache.has_host_tier = lambda: False
    with pytest.raises(ValueError, match="--enable-hierarchical-cache"):
        HiCacheHostTier(cache, Clock(), 1.0)


def test_next_workflow_agent_prefix_is_reloaded_unless_its_session_is_in_a_tool_call():
    tier, cache, clock = make()
    cache.on_host["planner"] = 700
    assert tier.prefetch_prefix("planner") == 700
    tier.poll(clock.now, headroom_tokens=100)  # no room yet: it waits
    assert tier.stats.workflow_prefetched_tokens == 0
    tier.poll(clock.now, ROOM)
    assert tier.stats.workflow_prefetched_tokens == 700 and cache.calls[-1] == ("prefetch", "planner")
    tier.offload("coder", 500, prefetch_at=110, keep_until=160)
    assert tier.prefetch_prefix("coder") == 0 and cache.calls[-1] == ("offload", "coder")
