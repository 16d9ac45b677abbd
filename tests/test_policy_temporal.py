import pytest

from sglang_agent.policy.temporal import (
    DROP, KEEP, OFFLOAD, PIN, POOL_ABOVE_WATERMARK, REQUESTS_WAITING, decide_placement, memory_pressure, predicted_return_s,
)
from sglang_agent.policy.ttl import EvictionCost, TTLDecision, choose_ttl

COST = EvictionCost(recompute_s=2.0, reload_s=0.2, queue_delay_s=0.0)


def ttl_for(samples, rate=0.0):
    return choose_ttl(samples, COST, rate, max_ttl_s=60)


def test_long_tool_is_offloaded_and_prefetched_before_it_returns():
    samples = [8.0, 10.0, 12.0]
    d = decide_placement(samples, COST, ttl_for(samples), host_room=True, max_host_keep_s=600, memory_pressure=REQUESTS_WAITING)
    assert d.action == OFFLOAD
    assert d.prefetch_after_s == pytest.approx(10.0 - 0.2)  # predicted return minus the reload
    assert d.ttl_s >= 20.0  # the host copy outlives the predicted return


def test_short_tool_stays_pinned():
    samples = [0.1, 0.2, 0.3]
    d = decide_placement(samples, COST, ttl_for(samples), host_room=True, max_host_keep_s=600, memory_pressure=REQUESTS_WAITING)
    assert d.action == PIN and d.ttl_s == 0.3 and d.prefetch_after_s is None


def test_a_reload_dearer_than_recompute_leaves_the_ttl_decision():
    slow = EvictionCost(recompute_s=0.1, reload_s=0.5, queue_delay_s=0.0)
    d = decide_placement([8.0], slow, ttl_for([8.0]), host_room=True, max_host_keep_s=600, memory_pressure=None)
    assert d.action == PIN


def test_no_host_room_or_no_host_path_falls_back_to_the_ttl():
    samples = [8.0, 10.0, 12.0]
    assert decide_placement(samples, COST, ttl_for(samples), host_room=False, max_host_keep_s=600, memory_pressure=REQUESTS_WAITING).action == PIN
    no_host = EvictionCost(recompute_s=2.0, reload_s=None, queue_delay_s=0.0)
    assert decide_placement(samples, no_host, ttl_for(samples), host_room=True, max_host_keep_s=600, memory_pressure=REQUESTS_WAITING).action == PIN


def test_reload_slower_than_recompute_is_never_chosen():
    slow_link = EvictionCost(recompute_s=0.1, reload_s=0.5, queue_delay_s=0.0)
    d = decide_placement([30.0], slow_link, ttl_for([30.0]), host_room=True, max_host_keep_s=600, memory_pressure=REQUESTS_WAITING)
    assert d.action != OFFLOAD


def test_drop_when_nothing_pays():
    refused = TTLDecision(0.0, 0.0, 0.0, 0.0, "no positive utility")
    assert decide_placement([0.1], COST, refused, host_room=True, max_host_keep_s=600, memory_pressure=REQUESTS_WAITING).action == DROP


def test_median_prediction_ignores_the_tail():
    assert predicted_return_s([1.0, 1.0, 1.0, 100.0]) == 1.0


def test_no_offload_without_memory_pressure():
    """Defect (issue "No lost work", 9a): offload was decided whenever the median tool time was at
    least twice the reload, with or without memory pressure. Failed on main: a 10 s tool on an
    idle server was offloaded."""
    samples = [8.0, 10.0, 12.0]
    d = decide_placement(samples, COST, ttl_for(samples), host_room=True, max_host_keep_s=600, memory_pressure=None)
    assert d.action == KEEP  # HiCache's own host copy covers an eviction; no GPU memory is held for it
    assert memory_pressure(0, free_tokens=900, pool_tokens=1000, watermark=0.8) is None
    assert memory_pressure(3, free_tokens=900, pool_tokens=1000, watermark=0.8) == REQUESTS_WAITING
    assert memory_pressure(0, free_tokens=150, pool_tokens=1000, watermark=0.8) == POOL_ABOVE_WATERMARK


def test_long_tool_is_kept_on_host_past_the_pin_cap():
    """Defect (issue "No lost work", 9b): the host copy's keep time was capped at --agent-max-ttl-s,
    so a tool longer than 60 s was never prefetched back. Failed on main: keep was 60 s for a 300 s
    tool, so the prefetch (at ~299.8 s) came after the copy was dropped."""
    samples = [300.0]
    d = decide_placement(samples, COST, ttl_for(samples), host_room=True, max_host_keep_s=600,
                         memory_pressure=REQUESTS_WAITING)
    assert d.action == OFFLOAD
    assert d.prefetch_after_s == pytest.approx(300.0 - 0.2)
    assert d.ttl_s > d.prefetch_after_s + 0.2  # the copy is still there when the reload is due
