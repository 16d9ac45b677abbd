"""Effective memory use (eval/sim/memory_use.py): shared prefixes once, own tokens per request,
and its time integral in a run worked out by hand."""

from __future__ import annotations

from array import array
from dataclasses import dataclass

import pytest
import torch
from sglang.srt.mem_cache.base_prefix_cache import InsertParams, MatchPrefixParams
from sglang.srt.mem_cache.radix_cache import RadixKey
from sglang.srt.mem_cache.unified_radix_cache import UnifiedRadixCache

from eval.sim.engine import simulate
from eval.sim.memory_use import running_kv_tokens
from eval.sim.metrics import summarize_dag
from eval.sim.policies import POLICIES
from eval.traces.format import Program, Turn
from sglang_agent.cache.cpu_pools import cpu_cache_params
from tests.test_sim import LinearCost, ids


@dataclass
class Running:
    node: int
    key: array
    gpu_cached: int
    produced: int


def test_shared_prefix_counted_once_own_tokens_per_request():
    tree = UnifiedRadixCache(cpu_cache_params(1000, tree_core_backend="python"))
    first, second = array("q", range(100)), array("q", list(range(50)) + list(range(200, 250)))
    for key in (first, second):
        tree.insert(InsertParams(key=RadixKey(key), value=tree.token_to_kv_pool_allocator.alloc(len(key)).to(torch.int64)))
    node = {len(k): tree.match_prefix(MatchPrefixParams(key=RadixKey(k))).last_device_node for k in (first, second[:60])}
    running = [Running(node[100], first + array("q", range(900, 910)), 100, 3),  # 10 more prompt tokens, 3 out
               Running(node[60], second[:60], 60, 0)]  # matched 60 of the second path (50 shared)
    # Shared: the first path (100) + the second's own 10 matched; own: 10 + 3 and 0.
    assert running_kv_tokens(tree.tree_core, running) == 100 + 10 + 13
    assert running_kv_tokens(tree.tree_core, []) == 0


def test_run_integral_by_hand():
    # One 100-token prompt, 3 output tokens, alone: prefill 0.100 s holding 100 tokens, then two
    # decode steps (0.020 s) holding 101; utilisation = that / (pool x 0.12 s).
    program = Program("A", 0.0, ids(0, 100), [Turn([], ids(1000, 3))])
    result = simulate([program], LinearCost(), POLICIES["sglang-lru"], pool_tokens=1000)
    assert result.running_kv_token_s == pytest.approx(100 * 0.1 + 101 * 0.02)
    assert summarize_dag(result)["effective_memory_utilisation"] == pytest.approx((10 + 2.02) / (1000 * 0.12))
