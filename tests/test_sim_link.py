"""The shared host link (eval/sim/link.py), layer-wise loading (eval/sim/layerwise.py) and how the
simulator charges both, on hand-worked numbers."""

from __future__ import annotations

from dataclasses import replace

import pytest

from eval.sim.engine import simulate
from eval.sim.host_tier import SimHostTier
from eval.sim.layerwise import prefill_end_s
from eval.sim.link import HostLinks, Link, Transfer
from eval.sim.policies import POLICIES
from tests.test_sim import LinearCost, pressure_trace

COPY_S = 0.5  # one copy of 1,000 tokens at 2,000 tokens/s


def links() -> HostLinks:
    return HostLinks(Link(lambda tokens: tokens / 2000), Link(lambda tokens: tokens / 2000))


def test_two_reloads_issued_at_once_finish_at_t_and_2t():
    h2d = links().h2d
    first, second = h2d.submit(0.0, 1000), h2d.submit(0.0, 1000)
    assert (first.end_s, second.end_s) == (pytest.approx(COPY_S), pytest.approx(2 * COPY_S))
    assert second.queued_s == pytest.approx(COPY_S)
    # The link idles in between: a copy issued after the queue drained starts at once.
    assert h2d.submit(5.0, 1000).start_s == 5.0


def test_the_other_direction_does_not_delay_reloads():
    both = links()
    both.d2h.submit(0.0, 1000)  # an offload
    assert both.h2d.submit(0.0, 1000).end_s == pytest.approx(COPY_S)
    assert both.h2d.submit(0.0, 1000).end_s == pytest.approx(2 * COPY_S)


def test_a_write_backlog_delays_nothing_on_h2d_but_queues_offloads():
    both = links()
    for _ in range(10):
        both.d2h.submit(0.0, 1000)  # write-through backups: 5 s of GPU -> host copies
    assert both.h2d.submit(0.0, 1000).end_s == pytest.approx(COPY_S)
    assert both.d2h.submit(0.0, 1000).start_s == pytest.approx(10 * COPY_S)  # an offload waits
    summary = both.summary(span_s=10.0)
    assert summary["d2h_busy_frac"] == pytest.approx(0.55) and summary["h2d_busy_frac"] == pytest.approx(0.05)


def test_layerwise_load_overlaps_the_prefill():
    load = Transfer(1000, 0.0, 0.0, 0.32)
    # Compute longer than the copy: the first layer waits for its KV (0.01 s), then compute.
    assert prefill_end_s(0.0, 1.0, [load], 32) == pytest.approx(0.01 + 1.0)
    # Copy longer than compute: the last layer runs after the copy lands.
    assert prefill_end_s(0.0, 0.064, [load], 32) == pytest.approx(0.32 + 0.002)
    # One layer: no overlap, the copy and then the compute.
    assert prefill_end_s(0.0, 1.0, [load], 1) == pytest.approx(1.32)
    # A copy that landed before the batch (a prefetch) costs nothing; no load, compute alone.
    assert prefill_end_s(1.0, 0.5, [load], 32) == pytest.approx(1.5)
    assert prefill_end_s(1.0, 0.5, [], 32) == pytest.approx(1.5)
    # A copy queued behind another starts late: the batch waits for its start.
    queued = Transfer(1000, 0.0, 0.32, 0.64)
    assert prefill_end_s(0.0, 0.064, [load, queued], 32) == pytest.approx(0.64 + 0.002)


def test_offload_tier_reload_waits_for_its_offload_and_queues_behind_other_reloads():
    clock = [0.0]
    both = links()
    tier = SimHostTier(10_000, LinearCost(), lambda: clock[0], both)
    tier.offload("s", 1000, prefetch_at=0.1, keep_until=60.0)  # its copy to host lands at 0.5
    tier.poll(0.2, headroom_tokens=10_000)  # due at 0.1: issued, but not before the offload landed
    assert tier.copies["s"].reload.start_s == pytest.approx(COPY_S)
    hicache = both.h2d.submit(0.2, 1000)  # a HiCache reload issued after it queues behind it
    assert hicache.start_s == pytest.approx(2 * COPY_S)
    clock[0] = 0.3
    reload = tier.take("s", 1000)
    assert reload.end_s == pytest.approx(2 * COPY_S) and tier.prefetch_misses == 1


def test_the_simulator_charges_reloads_and_backups_on_the_link():
    """The pressure trace under HiCache (test_sim): A's 102-token context is evicted for C and
    reloaded when A resumes at 0.62 s, with B decoding. 1 layer: the reload (0.0102 s) then the
    11-token prefill (0.011 s), then B's decode step (0.010 s); 32 layers: the reload hides under
    the prefill but for one layer's share."""
    one = simulate(pressure_trace(), LinearCost(), POLICIES["sglang-hicache"], pool_tokens=300)
    many = simulate(pressure_trace(), replace(LinearCost(), num_layers=32), POLICIES["sglang-hicache"], pool_tokens=300)
    for result, prefill_s in ((one, 0.0102 + 0.011), (many, 0.011 + 0.0102 / 32)):
        resumed = {p.program_id: p for p in result.programs}["A"].turns[1]
        assert resumed.cached_tokens == 102 and resumed.gpu_cached_tokens == 0
        assert resumed.first_token_s - resumed.admitted_s == pytest.approx(prefill_s + 0.010)
        # Every turn's new KV was backed up to host (A 102 + B 149 + C 81 + A's second turn 13 new
        # tokens), and the one reload came back over the link.
        assert result.links["d2h_tokens"] == 102 + 149 + 81 + 13
        assert result.links["h2d_tokens"] == 102
    assert simulate(pressure_trace(), LinearCost(), POLICIES["sglang-lru"], pool_tokens=300).links == {}
