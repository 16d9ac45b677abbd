"""The simulator's workers behind a gateway (eval/sim/cluster.py): one worker is exactly the single
simulator; consistent hashing keeps a program on its worker, round robin moves it and its resumed
turns miss; the overload gate and the hash ring behave as smg documents them."""

from __future__ import annotations

import pytest

from eval.sim.cluster import Cluster, Ring, WorkerLoad, simulate_cluster
from eval.sim.cost_model import load_profile
from eval.sim.engine import simulate
from eval.sim.metrics import summarize
from eval.sim.policies import POLICIES
from eval.traces.bfcl import load_bfcl
from eval.traces.format import with_poisson_arrivals
from eval.workers_sweep import programs_for

COST = load_profile("llama-3.1-8b-h100")


@pytest.mark.parametrize("policy", ["sglang-hicache", "ours"])
def test_one_worker_is_the_single_simulator(policy):
    programs = with_poisson_arrivals(load_bfcl("base", limit=30), 4.0, seed=0)
    alone = simulate(programs, COST, POLICIES[policy])
    behind, cluster = simulate_cluster(programs, COST, POLICIES[policy], 1, "consistent_hashing")
    assert {p.program_id: p.jct_s for p in behind.programs} == {p.program_id: p.jct_s for p in alone.programs}
    assert [t.cached_tokens for p in behind.programs for t in p.turns] == \
        [t.cached_tokens for p in alone.programs for t in p.turns]
    assert cluster.moves == 0


@pytest.fixture(scope="module")
def four_workers():
    programs = with_poisson_arrivals(programs_for(load_bfcl("base", limit=20), 4, seed=0), 4.0, seed=0)
    return {routing: simulate_cluster(programs, COST, POLICIES["ours"], 4, routing)
            for routing in ("round_robin", "consistent_hashing", "cache_aware")}


def test_consistent_hashing_keeps_every_program_on_one_worker(four_workers):
    result, cluster = four_workers["consistent_hashing"]
    assert cluster.moves == 0
    assert min(cluster.routed) > 0  # the ring spreads the programs over every worker
    assert summarize(result)["hit_rate_after_tool"] == 1.0


def test_round_robin_moves_turns_and_they_miss(four_workers):
    rr, rr_cluster = four_workers["round_robin"]
    ch, _ = four_workers["consistent_hashing"]
    turns = sum(rr_cluster.routed)
    assert rr_cluster.moves > 0.5 * (turns - len(rr.programs))  # most resumed turns land elsewhere
    assert summarize(rr)["hit_rate_after_tool"] < 0.5 < summarize(ch)["hit_rate_after_tool"]


def test_cache_aware_follows_the_prefix(four_workers):
    ca, cluster = four_workers["cache_aware"]
    rr, _ = four_workers["round_robin"]
    assert cluster.moves < 0.1 * sum(cluster.routed)
    assert summarize(ca)["hit_rate_after_tool"] > summarize(rr)["hit_rate_after_tool"]


def test_the_overload_gate_leaves_out_loaded_workers_while_another_is_under():
    cluster = Cluster(load_bfcl("base", limit=2), COST, POLICIES["sglang-lru"], 3, "consistent_hashing")
    cluster.loads = [WorkerLoad(0.85, 0), WorkerLoad(0.1, 9), WorkerLoad(0.5, 2)]
    assert cluster._allowed() == {2}  # 0.8 token usage, 8 waiting requests
    cluster.loads = [WorkerLoad(0.9, 0)] * 3
    assert cluster._allowed() == {0, 1, 2}  # all overloaded: nobody is left out


def test_pins_count_as_used_only_when_asked():
    programs = load_bfcl("base", limit=1)
    for as_used in (False, True):
        cluster = Cluster(programs, COST, POLICIES["continuum"], 1, "consistent_hashing", pool_tokens=4096,
                          pins_count_as_used=as_used)
        sim = cluster.workers[0]
        sim.cache.pinned_tokens = lambda: 2048  # what a hard pin of half the pool reports
        sim.cache.free_tokens = lambda: 1024
        cluster._poll(0.0)
        assert cluster.loads[0].token_usage == pytest.approx(0.75 if as_used else 0.25)


def test_the_ring_is_balanced_and_stable():
    ring = Ring(8)
    keys = [f"session-{i}" for i in range(4000)]
    owners = [ring.owner(k) for k in keys]
    shares = [owners.count(w) / len(keys) for w in range(8)]
    assert all(0.07 < s < 0.2 for s in shares), shares
    assert owners == [Ring(8).owner(k) for k in keys]
    # A key whose worker is left out goes to another, and only those keys move.
    moved = [ring.owner(k, allowed=set(range(1, 8))) for k in keys]
    assert all(m != 0 for m in moved)
    assert all(a == b for a, b in zip(owners, moved) if a != 0)


def test_program_copies_share_the_system_prompt_and_nothing_else():
    from eval.workers_sweep import copy_program

    program = load_bfcl("base", limit=1)[0]
    a, b = copy_program(program, 0), copy_program(program, 1)
    assert a.program_id != b.program_id and a.system_tokens == b.system_tokens
    assert all(x.append_tokens != y.append_tokens for x, y in zip(a.turns, b.turns) if x.append_tokens)
    assert [t.tool_duration_s for t in a.turns] == [t.tool_duration_s for t in b.turns]
