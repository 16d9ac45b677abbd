"""Ours' host tier on the simulated HiCache (eval/sim/hicache_tier.py), the server's way: an
offloaded session's KV is its path in HiCache's host tree, held there, so shared prefixes count
once and host LRU cannot take it; it leaves the GPU at once and comes back ahead of its turn; only
what write-through has not copied goes over the link."""

from __future__ import annotations

from array import array

import pytest

from eval.sim.hicache import SimHiCache
from eval.sim.hicache_tier import SimHiCacheTier
from eval.sim.link import HostLinks
from tests.test_sim import LinearCost, ids


def tier_on_hicache(host_tokens: int):
    hicache = SimHiCache(host_tokens)
    keys: dict[str, array] = {}
    demoted: list[str] = []
    tier = SimHiCacheTier(hicache, host_tokens, LinearCost(), lambda: 0.0, HostLinks.of(LinearCost()), key_of=keys.get,
                          demote=lambda session: demoted.append(session) or 0, load=lambda session, headroom: 0)
    return hicache, keys, tier, demoted


def test_offloaded_paths_share_their_prefix_in_the_host_tree():
    hicache, keys, tier, demoted = tier_on_hicache(1000)
    role = ids(0, 100)
    keys["a"], keys["b"] = array("q", role + ids(1000, 20)), array("q", role + ids(2000, 20))
    for key in keys.values():
        assert hicache.write(key) > 0  # write-through at the end of each turn
    tier.offload("a", 120, prefetch_at=5.0, keep_until=60.0)
    tier.offload("b", 120, prefetch_at=5.0, keep_until=60.0)
    assert demoted == ["a", "b"]  # both leave the GPU at once
    assert tier.used_tokens() == 140 and tier.room_tokens() == 860  # the role prompt once, not twice
    assert tier.links.d2h.stats.tokens == 0  # nothing left to copy


def test_a_held_path_survives_host_pressure_until_its_turn_is_admitted():
    hicache, keys, tier, _ = tier_on_hicache(300)
    keys["a"] = array("q", ids(0, 120))
    hicache.write(keys["a"])
    tier.offload("a", 120, prefetch_at=5.0, keep_until=60.0)
    for n in range(5):  # 500 tokens of other turns through a 300-token host pool
        hicache.write(array("q", ids(10_000 * (n + 1), 100)))
    assert hicache.match(keys["a"]) == 120
    tier.turn_arrived("a")
    assert tier.has_job("a") and tier.poll(1.0, 10_000).reloaded == {}  # arrived: its admission loads it
    tier.admitted("a")
    assert not tier.has_job("a") and tier.used_tokens() == 0  # let go: an ordinary HiCache entry again
    hicache.write(array("q", ids(90_000, 250)))
    assert hicache.match(keys["a"]) < 120


def test_what_write_through_did_not_copy_goes_over_the_link():
    hicache, keys, tier, _ = tier_on_hicache(1000)
    keys["a"] = array("q", ids(0, 150))
    hicache.write(keys["a"][:100])  # the last 50 tokens were never backed up
    tier.offload("a", 150, prefetch_at=5.0, keep_until=60.0)
    assert tier.jobs["a"].tokens == 150 and tier.links.d2h.stats.tokens == 50


def test_an_offloaded_context_leaves_the_gpu_and_is_back_before_its_turn():
    """A (100-token prompt, 3 out) calls a 5 s tool (predicted: the prior's median, 2 s) while B
    (200 tokens) waits for memory in a 260-token pool: under that pressure ours offloads A's
    102-token context, which frees the GPU for B at once; at the predicted return less 102 x 0.1 ms
    it is loaded back and protected, so A's resumed turn finds it on the GPU and prefills its 11
    new tokens only."""
    from eval.sim.engine import Simulator
    from eval.sim.policies import POLICIES
    from eval.traces.format import Program, Turn

    a = Program("A", 0.0, ids(0, 100), [Turn([], ids(1000, 3), "tool", 5.0), Turn(ids(2000, 10), ids(3000, 3))])
    b = Program("B", 0.05, ids(10_000, 200), [Turn([], ids(11_000, 2))])
    sim = Simulator([a, b], LinearCost(), POLICIES["ours"], pool_tokens=260)
    result = {p.program_id: p for p in sim.run().programs}
    assert sim.controller.stats.offloads == 1 and sim.host.gpu_tokens_freed == 102
    assert sim.host.prefetched_tokens == 102
    assert result["B"].turns[0].admitted_s == pytest.approx(result["A"].turns[0].finish_s)
    resumed = result["A"].turns[1]
    assert (resumed.cached_tokens, resumed.gpu_cached_tokens) == (102, 102)
    assert resumed.first_token_s - resumed.arrival_s == pytest.approx(0.011)


def test_the_agent_due_next_is_prefetched_from_host_before_its_turn():
    """KVFlow's prefetch as the server's tier does it. Workflow A -> B -> C -> A (100-token agent
    prompts, 0.5 s tools) in a 230-token pool; a one-turn program X (110 tokens) arrives at 1.1 s,
    while C runs, and pushes A's path (106 tokens) out to host. Once C has finished, A is due next:
    ours loads its path back during C's tool call, so A's turn finds it on the GPU and prefills its
    5 new tokens only (0.005 s); HiCache alone reloads it at admission (0.0106 s more)."""
    from eval.sim.engine import Simulator
    from eval.sim.policies import WORKFLOW_POLICIES
    from eval.traces.format import Program, Turn

    prefixes = {a: ids(1000 * (i + 1), 100) for i, a in enumerate("ABC")}
    turns = [Turn([], ids(50_000 + 10 * k, 2), "tool" if k < 3 else None, 0.5 if k < 3 else 0.0, agent)
             for k, agent in enumerate("ABCA")]
    trace = [Program("wf", 0.0, ids(90_000, 5), turns, prefixes),
             Program("X", 1.1, ids(70_000, 110), [Turn([], ids(71_000, 2))])]
    resumed = {}
    for name in ("sglang-hicache", "ours"):
        sim = Simulator(trace, LinearCost(), WORKFLOW_POLICIES[name], pool_tokens=230)
        result = sim.run()
        resumed[name] = {p.program_id: p for p in result.programs}["wf"].turns[3]
        assert result.links["h2d_tokens"] == 106  # one copy back either way: at admission, or ahead
    assert sim.host.workflow_prefetched_tokens == 106
    assert (resumed["ours"].cached_tokens, resumed["ours"].gpu_cached_tokens) == (106, 106)
    assert (resumed["sglang-hicache"].cached_tokens, resumed["sglang-hicache"].gpu_cached_tokens) == (106, 0)
    assert resumed["ours"].first_token_s - resumed["ours"].arrival_s == pytest.approx(0.005)
    assert resumed["sglang-hicache"].first_token_s - resumed["sglang-hicache"].arrival_s == pytest.approx(0.0106 + 0.005)
