"""Serving policies compared in the evaluation, all run by the same engine and cache.

- vllm: no prefix reuse across requests; a turn's KV is freed when it finishes (evict-on-finish).
- vllm-apc: vLLM with automatic prefix caching (on by default in vLLM v1), the baseline Continuum
  (arXiv 2511.02230, Sec. 6) compares against: in this model the same as sglang-lru, named so that
  comparison reads like the paper's. vLLM hashes full 16-token blocks (a prompt's partial last
  block is never reused: <= 15 tokens a request, not modelled) and evicts from its free-block queue
  the least recently freed block first, a sequence's tail before its head: the radix tree's LRU over
  leaves. Request-level FCFS; no host tier (vLLM + LMCache offload is not modelled); recompute
  preemption where SGLang, and this engine, reserve a turn's output at admission.
- sglang-lru: upstream SGLang: radix prefix cache, LRU eviction, request-level FCFS.
- sglang-hicache: the same with HiCache (--enable-hierarchical-cache): a prefix evicted from
  the GPU is reloaded from host memory instead of recomputed (eval/sim/hicache.py).
- infercept: InferCept-style (Abhyankar et al., ICML 2024) per-request choice at each tool call
  between preserving the KV on GPU and discarding it, whichever wastes less GPU memory-time;
  swapping to host is not modelled (no host tier yet).
- autellix: Autellix-style program-level scheduling (PLAS: least attained service first, Luo et
  al., arXiv 2502.13965) on the LRU cache, no retention.
- continuum: Continuum (arXiv 2511.02230): TTL pins chosen by our TTL policy + program-level
  FCFS; pins hold the KV (hard) until the TTL, so newcomers wait for them.
- continuum-soft: the same, with soft pins that only reorder eviction.
- sglang-hicache-8x, ours-8x: the same two with a host pool of 8x the device pool instead of
  SGLang's default 2x (`--hicache-ratio`); every other policy with a host tier gets 2x.
- ours: continuum + TokenCake-style offload to a modelled host tier during long tool calls
  (policy/temporal.py) + the declared step graph when the trace has one, on top of HiCache
  (the server's host tier is SGLang's HiCache, so every prefix also has a host copy), with the
  server's defaults (no critical-path reservation).
  ours-reserve: the same with `--agent-reserve-fraction 0.3` (TokenCake's maximum share); the
  issue's "ours-no-reserve" is `ours`.
- kvflow (workflow programs): KVFlow (arXiv 2507.07400) steps-to-execution eviction from the
  declared schedule alone.
- DAG workflows (DAG_POLICIES): ours with the declared agent graph, ours-learned (no declaration:
  each agent's first step names its session and role, the controller learns the graph online,
  policy/learned_graph.py), ours-nohint (sessions and tool calls only, no workflow hints).
- belady, belady+hicache: Bélády's offline optimum (eval/sim/belady.py) as the victim choice, the
  rest sglang-lru's (GPU tier alone) or sglang-hicache's (the same host tier and budget).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional


@dataclass(frozen=True)
class PolicySpec:
    name: str
    prefix_reuse: bool = True
    retention: str = "none"  # none | ttl | infercept
    order: str = "fcfs"  # fcfs | program_fcfs | plas
    fixed_ttl_s: Optional[float] = None  # TTL sensitivity: every tool call pinned this long
    pin_mode: str = "hard"  # how retained KV is held: see AgentRadixCache
    declare_durations: bool = False  # the client states each tool's duration in tool_start
    workflow: bool = False  # workflow programs declare their step schedule (KVFlow eviction)
    # With `workflow`, what workflow programs tell the controller: "declared" (the schedule or the
    # DAG up front, then a step per agent), "learned" (steps that carry session and role, nothing
    # declared) or "none" (no workflow hints at all).
    workflow_hints: str = "declared"
    offload: bool = False  # TokenCake-style host tier during long tool calls
    hicache: bool = False  # SGLang HiCache: write-through host copy of every cached prefix
    # Host memory for KV, in tokens; None: SGLang's default `--hicache-ratio 2.0`, twice the device
    # pool. One budget per policy: with HiCache and offload both on (ours), the offloaded copies
    # count against the same host pool (eval/sim/hicache.py), as in the server.
    host_pool_tokens: Optional[int] = None
    host_ratio: float = 2.0  # host pool = ratio x device pool when host_pool_tokens is None
    # Critical-path reservation (TokenCake's spatial scheduler): the most of the pool held for the
    # agents on a workflow's critical path (--agent-reserve-fraction; 0 = off).
    reserve_fraction: float = 0.0
    eviction: str = "tree"  # tree: the cache's own order | belady: the offline optimum (eval/sim/belady.py)


POLICIES: dict[str, PolicySpec] = {
    "vllm": PolicySpec("vllm", prefix_reuse=False),
    "sglang-lru": PolicySpec("sglang-lru"),
    "vllm-apc": PolicySpec("vllm-apc"),  # = sglang-lru here (see above)
    "sglang-hicache": PolicySpec("sglang-hicache", hicache=True),
    "infercept": PolicySpec("infercept", retention="infercept"),  # preserve = held until return
    "autellix": PolicySpec("autellix", order="plas"),
    "continuum": PolicySpec("continuum", retention="ttl", order="program_fcfs"),
    "continuum-soft": PolicySpec("continuum-soft", retention="ttl", order="program_fcfs", pin_mode="soft"),
    "ours": PolicySpec("ours", retention="ttl", order="program_fcfs", offload=True, workflow=True, hicache=True),
}
# A larger host than SGLang's default (8x the device pool instead of 2x), baseline and ours alike.
POLICIES["sglang-hicache-8x"] = replace(POLICIES["sglang-hicache"], name="sglang-hicache-8x", host_ratio=8.0)
POLICIES["ours-8x"] = replace(POLICIES["ours"], name="ours-8x", host_ratio=8.0)
# Bélády's offline optimum (victim: the leaf the trace needs last) under sglang-lru's admission,
# on the GPU tier alone and over sglang-hicache's host tier (same host budget).
POLICIES["belady"] = PolicySpec("belady", eviction="belady")
POLICIES["belady+hicache"] = replace(POLICIES["sglang-hicache"], name="belady+hicache", eviction="belady")
# Multi-agent workflows: KVFlow's steps-to-execution eviction alone and with TTL pins.
WORKFLOW_POLICIES: dict[str, PolicySpec] = {
    "sglang-lru": POLICIES["sglang-lru"],
    "sglang-hicache": POLICIES["sglang-hicache"],
    "kvflow": PolicySpec("kvflow", workflow=True),
    "continuum": POLICIES["continuum"],
    "ours": POLICIES["ours"],
    "belady": POLICIES["belady"],
    "belady+hicache": POLICIES["belady+hicache"],
}
# DAG workflows (parallel agents, AND-joins): how much the controller needs to be told.
DAG_POLICIES: dict[str, PolicySpec] = {
    "ours": POLICIES["ours"],
    "ours-learned": replace(POLICIES["ours"], name="ours-learned", workflow_hints="learned"),
    "ours-nohint": replace(POLICIES["ours"], name="ours-nohint", workflow_hints="none"),
    "ours-reserve": replace(POLICIES["ours"], name="ours-reserve", reserve_fraction=0.3),
    "sglang-lru": POLICIES["sglang-lru"],
    "sglang-hicache": POLICIES["sglang-hicache"],
    "kvflow": WORKFLOW_POLICIES["kvflow"],
    "belady": POLICIES["belady"],
    "belady+hicache": POLICIES["belady+hicache"],
}


def get_policy(name: str) -> PolicySpec:
    try:
        return POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; one of {sorted(POLICIES)}") from None


def infercept_preserve(expected_tool_s: float, context_tokens: int, recompute_s: float, other_tokens: int) -> bool:
    """InferCept's min-waste rule, preserve vs discard: preserving wastes the request's memory
    for the tool's duration; discarding wastes the recompute time of every other request's
    memory (the batch stalls while the context is re-prefilled)."""
    preserve_waste = expected_tool_s * context_tokens
    discard_waste = recompute_s * (context_tokens + other_tokens)
    return preserve_waste <= discard_waste


def fixed_ttl_policy(ttl_s: float) -> PolicySpec:
    return PolicySpec(f"ttl={ttl_s:g}s", retention="ttl", order="program_fcfs", fixed_ttl_s=ttl_s)
