"""The simulator on tiny hand-made traces whose timings and cache decisions can be worked out
by hand, with a linear cost model (1 ms per prefill token, 10 ms per decode step)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from eval.sim.engine import simulate
from eval.sim.policies import POLICIES
from eval.traces.format import Program, Turn


@dataclass(frozen=True)
class LinearCost:
    max_prefill_tokens: int = 16384
    iteration_overhead_s: float = 0.0
    kv_pool_tokens: int = 10_000

    def prefill_s(self, new_tokens: int, prefix_tokens: int = 0) -> float:
        return 0.001 * new_tokens

    def decode_step_s(self, batch_size: int, context_tokens: int) -> float:
        return 0.010 if batch_size else 0.0

    def prefill_tokens_per_s(self) -> float:
        return 1000.0

    def reload_s(self, tokens: int) -> float:
        return 0.0001 * tokens  # host -> GPU: 10x faster than recomputing


def ids(start: int, n: int) -> list[int]:
    return list(range(start, start + n))


def two_turn_program(pid="A", base=0, arrival=0.0, tool_s=1.0):
    return Program(pid, arrival, ids(base, 100), [
        Turn([], ids(base + 1000, 3), "tool", tool_s),
        Turn(ids(base + 2000, 10), ids(base + 3000, 3)),
    ])


def test_single_program_jct_by_hand():
    # Turn 0: prefill 100 tokens (0.100 s, first token), 2 decode steps (0.020): ends at 0.120.
    # Tool 1 s: turn 1 arrives at 1.120 with 113 prompt tokens, 102 of them cached (the prompt
    # and the 2 output tokens that were fed back): prefill 11 (0.011) + 2 steps (0.020) = 1.151.
    lru = simulate([two_turn_program()], LinearCost(), POLICIES["sglang-lru"])
    assert lru.programs[0].jct_s == pytest.approx(1.151)
    assert [t.cached_tokens for t in lru.programs[0].turns] == [0, 102]
    # Without prefix reuse turn 1 re-prefills all 113 tokens: 1.120 + 0.113 + 0.020.
    vllm = simulate([two_turn_program()], LinearCost(), POLICIES["vllm"])
    assert vllm.programs[0].jct_s == pytest.approx(1.253)


def pressure_trace():
    a = two_turn_program("A", 0, 0.0, tool_s=0.5)
    b = Program("B", 0.0, ids(10_000, 50), [Turn([], ids(11_000, 100))])  # decodes for ~1 s
    c = Program("C", 0.3, ids(20_000, 80), [Turn([], ids(21_000, 2))])
    return [a, b, c]


def test_pool_too_small_lru_evicts_the_agent_continuum_keeps_it():
    # Pool 300: A (103 reserved) and B (150) run; A's turn ends holding 102 cached tokens and
    # calls a 0.5 s tool. C (needs 82) arrives at 0.3 while 48 slots are free.
    lru = {p.program_id: p for p in simulate(pressure_trace(), LinearCost(), POLICIES["sglang-lru"], pool_tokens=300).programs}
    assert lru["A"].turns[1].cached_tokens == 0  # LRU evicted A's context to admit C
    assert lru["C"].turns[0].admitted_s == pytest.approx(0.3, abs=0.02)

    ttl = {p.program_id: p for p in simulate(pressure_trace(), LinearCost(), POLICIES["continuum"], pool_tokens=300).programs}
    assert ttl["A"].turns[1].cached_tokens == 102  # the pin held A's context through the tool call
    # C waited: the hard pin kept A's context until A's last turn ended and released it.
    assert ttl["C"].turns[0].admitted_s >= ttl["A"].finish_s
    assert ttl["A"].jct_s < lru["A"].jct_s


def test_program_fcfs_lets_the_resumed_turn_go_first():
    # Two programs resume while a newcomer waits: program-level FCFS orders by first arrival.
    trace = pressure_trace()
    result = simulate(trace, LinearCost(), POLICIES["continuum"], pool_tokens=300)
    turns = {(t.program_id, t.turn): t for p in result.programs for t in p.turns}
    assert turns[("A", 1)].admitted_s < turns[("C", 0)].admitted_s


def test_every_policy_finishes_every_program():
    trace = [two_turn_program(f"P{i}", 100_000 * i, 0.1 * i) for i in range(6)]
    for policy in POLICIES.values():
        result = simulate(trace, LinearCost(), policy, pool_tokens=400)
        assert len(result.programs) == 6 and all(p.finish_s > p.arrival_s for p in result.programs), policy.name


def test_kvflow_keeps_the_agent_due_next():
    # One workflow A -> B -> C -> A over three agents whose 100-token prompts do not all fit a
    # 260-token pool. When C runs, LRU drops A (least recent); the declared schedule drops B
    # (never needed again), so A's second turn finds its prompt.
    from eval.sim.policies import WORKFLOW_POLICIES

    prefixes = {a: ids(1000 * (i + 1), 100) for i, a in enumerate("ABC")}
    turns = [Turn([], ids(50_000 + 10 * k, 2), "tool" if k < 3 else None, 0.1 if k < 3 else 0.0, agent)
             for k, agent in enumerate("ABCA")]
    program = Program("wf", 0.0, ids(90_000, 5), turns, prefixes)
    lru = simulate([program], LinearCost(), WORKFLOW_POLICIES["sglang-lru"], pool_tokens=260)
    kvflow = simulate([program], LinearCost(), WORKFLOW_POLICIES["kvflow"], pool_tokens=260)
    assert lru.programs[0].turns[3].cached_tokens < 100
    assert kvflow.programs[0].turns[3].cached_tokens >= 100


def test_offload_reloads_a_long_tool_callers_context_from_host():
    # A 100-token context and a 5 s tool: the temporal policy offloads (5 s >> 0.01 s reload)
    # and prefetches at the predicted return, so the resumed turn finds all 102 tokens without
    # recomputing, although the GPU copy was evicted by another program meanwhile.
    from eval.sim.policies import PolicySpec

    a = two_turn_program("A", 0, 0.0, tool_s=5.0)
    b = Program("B", 1.0, ids(10_000, 150), [Turn([], ids(11_000, 2))])  # needs A's slots
    spec = PolicySpec("offload", retention="ttl", order="program_fcfs", offload=True, declare_durations=True)
    result = {p.program_id: p for p in simulate([a, b], LinearCost(), spec, pool_tokens=260).programs}
    resumed = result["A"].turns[1]
    assert resumed.cached_tokens == 102
    # No recompute: prefill of the 11 new tokens only; the prefetch finished before the return.
    assert resumed.first_token_s - resumed.arrival_s == pytest.approx(0.011, abs=1e-6)


def test_hicache_reloads_an_evicted_context_from_host_instead_of_recomputing():
    # The pressure trace: LRU evicts A's 102-token context to admit C. With HiCache the context
    # was written to host at the end of A's first turn, so A's resumed turn reloads those 102
    # tokens (0.0102 s at the linear cost's host bandwidth) and prefills only its 11 new ones.
    lru = {p.program_id: p for p in simulate(pressure_trace(), LinearCost(), POLICIES["sglang-lru"], pool_tokens=300).programs}
    hc = {p.program_id: p for p in simulate(pressure_trace(), LinearCost(), POLICIES["sglang-hicache"], pool_tokens=300).programs}
    assert lru["A"].turns[1].cached_tokens == 0
    resumed = hc["A"].turns[1]
    assert resumed.cached_tokens == 102
    assert hc["A"].jct_s < lru["A"].jct_s
    assert hc["C"].turns[0].admitted_s == pytest.approx(lru["C"].turns[0].admitted_s)  # nobody waits for it


def test_a_turn_before_the_planned_reload_starts_it_at_once():
    """Regression: the simulated host tier kept a copy's planned reload time when the turn came
    earlier, so the resumed turn waited for a prefetch planned for a tool it did not run (ours fell
    to 0.53x of HiCache on BFCL at 8/s). The reload starts at the arrival, as the server's admission
    loads it."""
    from eval.sim.host_tier import SimHostTier

    clock = [0.0]
    tier = SimHostTier(10_000, LinearCost(), lambda: clock[0])
    tier.offload("s", 1000, prefetch_at=30.0, keep_until=60.0)
    clock[0] = 2.0
    tier.turn_arrived("s")
    assert tier.take("s", 1000) == pytest.approx(LinearCost().reload_s(1000))
