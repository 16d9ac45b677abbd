"""Bélády's offline optimum in the simulator (eval/sim/belady.py, future_uses.py,
arrival_estimate.py): the next-use lookup against brute force on random small traces, on the
index alone and through a real radix tree's nodes; the arrival estimates by hand; and a hand-made
trace where LRU misses and Bélády hits."""

from __future__ import annotations

import math
import random
from array import array

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sglang.srt.mem_cache.base_prefix_cache import InsertParams
from sglang.srt.mem_cache.radix_cache import RadixKey
from sglang.srt.mem_cache.unified_radix_cache import UnifiedRadixCache

from eval.sim.arrival_estimate import ArrivalEstimate, TurnGraph, TurnProgress
from eval.sim.belady import BeladyEviction
from eval.sim.engine import simulate
from eval.sim.future_uses import FutureUseIndex, common_prefix_len
from eval.sim.policies import POLICIES
from eval.traces.format import Program, Turn
from sglang_agent import upstream
from sglang_agent.cache.cpu_pools import cpu_cache_params
from tests.test_sim import LinearCost, fan_out_program, ids

VOCAB = 3  # a tiny vocabulary: prompts of different programs share prefixes by chance


def random_trace(seed: int) -> list[Program]:
    """Sequential programs and DAG programs whose role prompts recur across programs."""
    rnd = random.Random(seed)
    toks = lambda n: [rnd.randrange(VOCAB) for _ in range(n)]  # noqa: E731
    roles = {r: toks(rnd.randint(1, 4)) for r in "xyz"}
    programs = []
    for p in range(rnd.randint(1, 4)):
        if rnd.random() < 0.5:
            turns = [Turn(toks(rnd.randint(0, 3)), toks(rnd.randint(1, 3)), "tool", rnd.random()) for _ in range(rnd.randint(1, 4))]
            turns[-1].tool_name, turns[-1].tool_duration_s = None, 0.0
            programs.append(Program(f"s{p}", rnd.random(), toks(rnd.randint(0, 4)), turns))
        else:
            agents = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}
            turns = []
            for agent in agents:
                n = rnd.randint(1, 2)
                turns += [Turn(toks(rnd.randint(0, 2)), toks(rnd.randint(1, 3)), "tool" if k < n - 1 else None,
                               rnd.random() if k < n - 1 else 0.0, agent) for k in range(n)]
            prefixes = {a: roles[rnd.choice("xyz")] for a in agents}
            programs.append(Program(f"d{p}", rnd.random(), toks(rnd.randint(0, 3)), turns, prefixes, agents))
    return programs


def brute_next_use(prompts: dict, arrivals: dict, path: list[int], depth: int) -> float:
    """Earliest arrival of a pending turn whose prompt reads token `depth` of `path`."""
    return min((arrivals[t] for t, prompt in prompts.items()
                if len(prompt) > depth and prompt[:depth + 1] == path[:depth + 1]), default=math.inf)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_next_use_lookup_matches_brute_force(seed):
    rnd = random.Random(seed)
    programs = random_trace(seed)
    prompts = {(i, t): list(prompt) for i, p in enumerate(programs) for t, prompt in enumerate(p.turn_inputs())}
    index = FutureUseIndex((turn, array("q", prompt)) for turn, prompt in prompts.items())
    # Some turns admitted (inf), the others at random arrivals, set in a random order and re-set.
    arrivals = {t: (math.inf if rnd.random() < 0.3 else rnd.uniform(0, 10)) for t in prompts}
    for turn in rnd.sample(sorted(arrivals), len(arrivals)):
        index.set_arrival(turn, rnd.uniform(0, 10))
        index.set_arrival(turn, arrivals[turn])
    queries = [prompt[:rnd.randint(1, len(prompt))] for prompt in prompts.values() if prompt]
    queries += [[rnd.randrange(VOCAB) for _ in range(rnd.randint(1, 8))] for _ in range(10)]
    queries += [prompt + [rnd.randrange(VOCAB)] for prompt in prompts.values()]  # past every prompt's end
    for path in queries:
        depth = rnd.randrange(len(path))
        at = index.advance(index.advance(index.start, array("q", path[:depth])), array("q", path[depth:depth + 1]))
        assert index.next_use_s(at) == brute_next_use(prompts, arrivals, path, depth), (path, depth)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6))
def test_next_use_of_real_tree_nodes_matches_brute_force(seed):
    """The same through SGLang's radix tree: nodes made by inserts and splits, read from their keys."""
    rnd = random.Random(seed)
    programs = random_trace(seed)
    prompts = {(i, t): list(prompt) for i, p in enumerate(programs) for t, prompt in enumerate(p.turn_inputs())}
    index = FutureUseIndex((turn, array("q", prompt)) for turn, prompt in prompts.items())
    arrivals = {t: (math.inf if rnd.random() < 0.3 else rnd.uniform(0, 10)) for t in prompts}
    for turn, arrival_s in arrivals.items():
        index.set_arrival(turn, arrival_s)
    belady = BeladyEviction(index)
    tree = UnifiedRadixCache(cpu_cache_params(4096, tree_core_backend="python"))
    cached = [p[:rnd.randint(1, len(p))] + [rnd.randrange(VOCAB) for _ in range(rnd.randint(0, 2))]
              for p in prompts.values() if p]
    for key in cached + [[rnd.randrange(VOCAB) for _ in range(rnd.randint(1, 6))] for _ in range(3)]:
        value = tree.token_to_kv_pool_allocator.alloc(len(key)).to(torch.int64)
        tree.insert(InsertParams(key=RadixKey(array("q", key)), value=value))
        for node in upstream.all_nodes(tree.tree_core):  # after every insert: splits renew the memo
            if node is tree.tree_core.root_node:
                continue
            path, up = [], node
            while up is not tree.tree_core.root_node:
                path[:0] = list(up.key.raw_token_ids())
                up = up.parent
            depth = len(path) - len(node.key)
            assert belady.next_use_s(node) == brute_next_use(prompts, arrivals, path, depth)


def test_common_prefix_len():
    a = array("q", range(100))
    for cut in (0, 1, 37, 99, 100):
        b = a[:cut] + array("q", [-1] * 5)
        assert common_prefix_len(a, b) == cut
    assert common_prefix_len(a, a[:50]) == 50


def test_arrival_estimates_by_hand():
    # The fan-out DAG a -> (b, c) -> d; b has two turns (tool 1 s between), the others one.
    program = fan_out_program(arrival=0.5)
    graph = TurnGraph.of(program)
    assert graph.waits_for == ((), ((0, 0.0),), ((0, 0.0),), ((1, 1.0),), ((3, 0.0), (2, 0.0)))
    service = [0.1, 0.2, 0.3, 0.4, 0.5]
    estimate = ArrivalEstimate(graph, service)
    # Nothing known: a at the program's arrival, b and c when a would finish, b2 a tool later,
    # d at the later of b2's and c's finishes.
    assert estimate.pending_arrivals() == pytest.approx({0: 0.5, 1: 0.6, 2: 0.6, 3: 1.8, 4: 2.2})
    # a was admitted late (2.0) and finished at 2.5; b2 is scheduled at 4.0 (exact); c runs since 2.6.
    estimate.progress = {0: TurnProgress(0.5, 2.0, 2.5), 1: TurnProgress(2.5, 2.5, 3.0), 2: TurnProgress(2.5, 2.6),
                         3: TurnProgress(4.0)}
    assert estimate.pending_arrivals() == pytest.approx({0: math.inf, 1: math.inf, 2: math.inf, 3: 4.0, 4: 4.4})
    # A sequential program: each turn a tool call after the previous one's finish.
    seq = Program("s", 1.0, ids(0, 5), [Turn([], ids(10, 2), "t", 2.0), Turn([], ids(20, 2), "t", 3.0), Turn([], ids(30, 2))])
    assert ArrivalEstimate(TurnGraph.of(seq), [0.5, 0.5, 0.5]).pending_arrivals() == pytest.approx({0: 1.0, 1: 3.5, 2: 7.0})


def lru_loses_trace() -> list[Program]:
    """A calls a 0.5 s tool and resumes; B finished later than A's first turn and never comes back;
    C arrives at 0.3 and needs the room of one of the two contexts (pool 300)."""
    a = Program("A", 0.0, ids(0, 100), [Turn([], ids(1000, 3), "tool", 0.5), Turn(ids(2000, 10), ids(3000, 3))])
    b = Program("B", 0.0, ids(10_000, 100), [Turn([], ids(11_000, 10))])
    c = Program("C", 0.3, ids(20_000, 150), [Turn([], ids(21_000, 2))])
    return [a, b, c]


def test_lru_evicts_the_context_needed_next_belady_the_one_never_needed():
    # A's first turn ends at 0.22 holding 102 tokens, B's at 0.29 holding 109; C (152 slots, 89
    # free) needs one of them out. LRU takes A's, the least recent; Bélády takes B's, whose next
    # use is never, so A's resumed turn (0.72) finds its whole context.
    runs = {name: {p.program_id: p for p in simulate(lru_loses_trace(), LinearCost(), POLICIES[name], pool_tokens=300).programs}
            for name in ("sglang-lru", "belady")}
    assert runs["sglang-lru"]["A"].turns[1].cached_tokens == 0
    assert runs["belady"]["A"].turns[1].cached_tokens == 102
    for run in runs.values():  # the same admission: C goes in on arrival either way
        assert run["C"].turns[0].admitted_s == pytest.approx(0.3)
    assert runs["belady"]["A"].jct_s < runs["sglang-lru"]["A"].jct_s


def test_belady_over_hicache_reloads_what_it_evicted():
    # Over the host tier the context Bélády evicts (B's) is never asked for again, and A hits on
    # the GPU: no reload; HiCache with LRU reloads A's context from host instead.
    hc = {p.program_id: p for p in simulate(lru_loses_trace(), LinearCost(), POLICIES["sglang-hicache"], pool_tokens=300).programs}
    bh = {p.program_id: p for p in simulate(lru_loses_trace(), LinearCost(), POLICIES["belady+hicache"], pool_tokens=300).programs}
    assert hc["A"].turns[1].cached_tokens == 102 and hc["A"].turns[1].gpu_cached_tokens == 0
    assert bh["A"].turns[1].gpu_cached_tokens == 102


def test_belady_refuses_a_cluster():
    from eval.sim.belady import BeladySimulator

    with pytest.raises(ValueError):
        BeladySimulator(lru_loses_trace(), LinearCost(), POLICIES["belady"], cluster=object())
