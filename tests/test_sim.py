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
    num_layers: int = 1  # no layer-wise overlap: a load still in flight is charged in full before the prefill

    def prefill_s(self, new_tokens: int, prefix_tokens: int = 0) -> float:
        return 0.001 * new_tokens

    def decode_step_s(self, batch_size: int, context_tokens: int) -> float:
        return 0.010 if batch_size else 0.0

    def prefill_tokens_per_s(self) -> float:
        return 1000.0

    def reload_s(self, tokens: int) -> float:
        return 0.0001 * tokens  # host -> GPU: 10x faster than recomputing

    def offload_s(self, tokens: int) -> float:
        return 0.0001 * tokens  # GPU -> host, the other direction of the link


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
    assert tier.take("s", 1000).end_s - clock[0] == pytest.approx(LinearCost().reload_s(1000))


def fan_out_program(arrival=0.0):
    """a -> (b, c) -> d: b runs two turns around a 1 s tool, c one; 50-token role prompts."""
    turns = [
        Turn([], ids(60_000, 4), None, 0.0, "a"),
        Turn(ids(61_000, 5), ids(61_100, 6), "search", 1.0, "b"),
        Turn(ids(62_000, 5), ids(62_100, 30), None, 0.0, "c"),
        Turn(ids(61_200, 8), ids(61_300, 3), None, 0.0, "b"),
        Turn([], ids(63_000, 2), None, 0.0, "d"),
    ]
    prefixes = {a: ids(1000 * (i + 1), 50) for i, a in enumerate("abcd")}
    deps = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}
    return Program("g", arrival, ids(90_000, 10), turns, prefixes, deps, ["a", "b", "d"], {a: f"app/{a}" for a in deps})


def test_dag_agents_run_in_parallel_and_the_join_waits_for_all():
    result = simulate([fan_out_program(arrival=0.5)], LinearCost(), POLICIES["sglang-lru"])
    (program,) = result.programs
    turn = {t.turn: t for t in program.turns}
    a, b1, c, b2, d = (turn[i] for i in range(5))
    assert a.arrival_s == 0.5  # the entry agent arrives with the program
    # b and c become ready together when a finishes, and run at the same time.
    assert b1.arrival_s == c.arrival_s == a.finish_s
    assert b1.first_token_s < c.finish_s and c.first_token_s < b1.finish_s
    # b's next turn comes its tool's 1 s after its first turn finished, whatever c does.
    assert b2.arrival_s == pytest.approx(b1.finish_s + 1.0)
    # AND-join: d's first turn arrives the moment the last of its predecessors finished.
    assert d.arrival_s == max(b2.finish_s, c.finish_s) and d.arrival_s > c.finish_s
    assert program.finish_s == d.finish_s and program.jct_s == pytest.approx(d.finish_s - 0.5)
    # The engine's prompts are the format's (prefix + task + predecessors' answers + append).
    assert [turn[i].prompt_tokens for i in range(5)] == [len(x) for x in fan_out_program().turn_inputs()]
    # b's second turn finds all its first turn left (prompt + output but the last token).
    assert b2.cached_tokens == b2.previous_context_tokens == b1.prompt_tokens + 6 - 1


def test_dag_workflow_hints_follow_the_policy():
    """declared: one DAG declaration, then a step on each agent's first turn only; learned: no
    declaration, first-turn steps that name their session and role; none: sessions only."""
    from dataclasses import replace

    from eval.sim.engine import Simulator
    from eval.sim.policies import DAG_POLICIES

    def hints(policy):
        sim = Simulator([fan_out_program()], LinearCost(), policy)
        calls = []
        bind, declare = sim.controller.bind, sim.controller.declare_workflow
        sim.controller.bind = lambda rid, hint: (calls.append((rid, hint)), bind(rid, hint))[1]
        sim.controller.declare_workflow = lambda d: (calls.append(("declare", d)), declare(d))[1]
        sim.run()
        return calls

    declared = hints(DAG_POLICIES["ours"])
    assert declared[0][0] == "declare"
    definition = declared[0][1]
    assert definition.dag and set(definition.edges) == {("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")}
    assert {(x.agent_id, x.session_id, x.role) for x in definition.agents} == {
        (a, f"g/{a}", f"app/{a}") for a in "abcd"}
    steps = {rid: hint.workflow_step for rid, hint in declared[1:]}
    assert steps["g/3"] is None  # b's second turn: b is still running
    assert {rid: (s.agent_id, s.session_id) for rid, s in steps.items() if s} == {
        "g/0": ("a", None), "g/1": ("b", None), "g/2": ("c", None), "g/4": ("d", None)}
    assert all(hint.session_id == f"g/{fan_out_program().turns[int(rid[2:])].agent_id}" for rid, hint in declared[1:])

    learned = hints(DAG_POLICIES["ours-learned"])
    assert all(rid != "declare" for rid, _ in learned)
    steps = {rid: hint.workflow_step for rid, hint in learned}
    assert steps["g/3"] is None and steps["g/4"].agent_id == "d"
    assert (steps["g/4"].session_id, steps["g/4"].role) == ("g/d", "app/d")

    silent = hints(DAG_POLICIES["ours-nohint"])
    assert len(silent) == 5 and all(rid != "declare" and hint.workflow_step is None for rid, hint in silent)
    # A TTL policy without workflow hints sends the same as ours-nohint.
    assert [(r, h) for r, h in hints(replace(DAG_POLICIES["ours"], workflow_hints="none"))] == silent


def test_every_dag_policy_finishes_every_workflow():
    from eval.sim.policies import DAG_POLICIES
    from eval.traces.format import with_poisson_arrivals
    from eval.traces.synthetic import dag_workflows, tokencake_dag

    programs = with_poisson_arrivals(dag_workflows(3) + tokencake_dag(2), 0.5, 0)
    for policy in DAG_POLICIES.values():
        result = simulate(programs, LinearCost(), policy, pool_tokens=40_000)
        assert len(result.programs) == 5, policy.name
        for p, source in zip(result.programs, programs):
            assert len(p.turns) == len(source.turns) and all(t.finish_s > 0 for t in p.turns), policy.name


def test_dag_metrics_by_hand():
    """Two programs: P (a -> b, b two turns) and Q (a -> b, a -> c). Worked out below."""
    from eval.sim.engine import ProgramResult, SimResult, TurnRecord
    from eval.sim.metrics import summarize, summarize_dag

    def rec(pid, turn, agent, arrival, finish, prompt, cached, gpu, role=None, prefix=0):
        return TurnRecord(pid, turn, arrival, admitted_s=arrival, first_token_s=arrival + 0.1, finish_s=finish,
                          prompt_tokens=prompt, cached_tokens=cached, gpu_cached_tokens=gpu, agent_id=agent,
                          role=role, role_prefix_tokens=prefix)

    p = ProgramResult("P", 0.0, 6.0, [
        rec("P", 0, "a", 0.0, 2.0, 100, 0, 0, "r/a", 50),
        rec("P", 1, "b", 2.0, 3.0, 80, 60, 40, "r/b", 40),
        rec("P", 2, "b", 4.0, 6.0, 120, 100, 90),
    ], critical_path=["a", "b"])
    q = ProgramResult("Q", 1.0, 5.0, [
        rec("Q", 0, "a", 1.0, 2.0, 100, 50, 30, "r/a", 50),
        rec("Q", 1, "b", 2.2, 5.0, 80, 80, 80, "r/b", 40),
        rec("Q", 2, "c", 2.0, 4.0, 60, 10, 10, "r/c", 30),
    ], critical_path=["a", "c"])
    result = SimResult("x", [p, q], 6.0)
    dag = summarize_dag(result)
    assert {k: dag[k] for k in summarize(result)} == summarize(result)  # summarize's keys unchanged
    assert dag["avg_jct_s"] == pytest.approx((6.0 + 4.0) / 2)
    # P: a ready 0 -> done 2, b ready 2 -> done 6: 6 s; Q: a 1 -> 2, c 2 -> 4: 3 s.
    assert dag["critical_path_jct_s"] == pytest.approx((6.0 + 3.0) / 2)
    # P is the first to use r/a and r/b, Q the first to use r/c: only Q's a (30 of 50 on the GPU)
    # and Q's b (40 of 40: a hit is capped at the role prompt) count.
    assert dag["role_prefix_hit_rate"] == pytest.approx((30 + 40) / (50 + 40))
    assert dag["recomputed_tokens"] == (100 + 20 + 20) + (50 + 0 + 50)
    assert dag["gpu_miss_tokens"] == (100 + 40 + 30) + (70 + 0 + 50)


def test_a_dag_run_does_not_depend_on_python_hash_order():
    """The same seed gives the same run whatever PYTHONHASHSEED is: no decision (eviction order,
    the order prefetches queue on the link) may follow a set's iteration order."""
    import os
    import subprocess
    import sys

    script = (
        "from eval.reproduce import DAG_POLICIES, DAG_POOL_TOKENS, dag_workloads\n"
        "from eval.sim.cost_model import load_profile\n"
        "from eval.sim.engine import simulate\n"
        "from eval.traces.format import with_poisson_arrivals\n"
        "rates, programs = dag_workloads(True)['dag']\n"
        "r = simulate(with_poisson_arrivals(programs, 0.3, 0), load_profile('llama-3.1-8b-h100'), DAG_POLICIES['ours'],"
        " pool_tokens=DAG_POOL_TOKENS)\n"
        "print(repr(sorted((p.program_id, p.finish_s) for p in r.programs)))\n")
    outputs = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
        assert run.returncode == 0, run.stderr[-2000:]
        outputs.add(run.stdout.strip().splitlines()[-1])
    assert len(outputs) == 1
