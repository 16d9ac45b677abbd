"""What our cache and controller cost on the scheduler thread, against upstream SGLang's trees, on
CPU tensors, all in one run.

1. Tree operations: a ~100k-token tree shaped like agent traffic (sessions whose turns extend a
   shared system prompt); insert, match and evict-everything for each cache, each time printed as a
   ratio to SGLang's default UnifiedRadixCache (its native Rust tree core) and to the Python core
   ours builds on.
2. Per request at scale: S live agent sessions sharing one system prompt, each with a turn behind
   it and a pin across its tool call; then resumed turns of random sessions, each one request's
   whole work on the scheduler thread (each a distinct session's second turn, so paths are as deep
   at every S): the hint's bind, prefix match, insert of prompt + output,
   the finished turn (path recorded, pin released), the next tool_start (TTL, pin). Printed for
   S = 100, 10k and 100k next to upstream's default cache doing the same match + insert: the work
   per request must not grow with the sessions sharing the prefix.

    python -m eval.bench_radix [--tree-tokens 100000] [--sessions 100,10000,100000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from array import array
from dataclasses import dataclass

import torch
from sglang.srt.mem_cache.base_prefix_cache import EvictParams, InsertParams, MatchPrefixParams
from sglang.srt.mem_cache.radix_cache import RadixCache, RadixKey
from sglang.srt.mem_cache.unified_radix_cache import UnifiedRadixCache

from sglang_agent.backend import build_backend
from sglang_agent.cache.agent_radix_cache import AgentRadixCache
from sglang_agent.cache.cpu_pools import cpu_cache_params
from sglang_agent.config import AgentServerArgs
from sglang_agent.hints import InlineAgentHint, ToolStart

DEFAULT = "UnifiedRadixCache (default core)"
PYTHON = "UnifiedRadixCache (python core)"
AGENT = "AgentRadixCache"


def agent_workload(tree_tokens: int, seed: int = 0) -> list[list[int]]:
    """Sessions of growing turns over a shared 1k-token system prompt, ~tree_tokens in all."""
    rnd = random.Random(seed)
    system = [rnd.randrange(32000) for _ in range(1024)]
    keys, total = [], len(system)
    while total < tree_tokens:
        context = list(system)
        for _ in range(rnd.randint(4, 12)):
            step = [rnd.randrange(32000) for _ in range(rnd.randint(64, 512))]
            context = context + step
            keys.append(list(context))
            total += len(step)
            if total >= tree_tokens:
                break
    return keys


def build(kind: str, pool: int):
    if kind == "RadixCache (legacy)":
        return RadixCache(cpu_cache_params(pool))
    if kind == PYTHON:
        return UnifiedRadixCache(cpu_cache_params(pool, tree_core_backend="python"))
    if kind == DEFAULT:
        return UnifiedRadixCache(cpu_cache_params(pool, tree_core_backend=None))
    return AgentRadixCache(cpu_cache_params(pool), pin_mode="hard")


def tree_ops_once(kind: str, keys: list, pool: int, pin_every: int) -> dict[str, float]:
    cache = build(kind, pool)
    allocator = cache.token_to_kv_pool_allocator
    values = [allocator.alloc(len(k)) for k in keys]  # allocation is not what we time
    t0 = time.perf_counter()
    results = [cache.insert(InsertParams(key=RadixKey(k), value=v)) for k, v in zip(keys, values)]
    t1 = time.perf_counter()
    if isinstance(cache, AgentRadixCache):
        # A realistic share of sessions pinned across a tool call: eviction reads them.
        for i, result in enumerate(results[::pin_every]):
            cache.record_turn(f"s{i}", result.last_device_node)
            cache.pin(f"s{i}", ttl_deadline=3600.0)
        cache.expire_pins(7200.0)  # expired: eviction takes everything, as for the other caches
    t2 = time.perf_counter()
    for k in keys:
        cache.match_prefix(MatchPrefixParams(key=RadixKey(k)))
    t3 = time.perf_counter()
    evicted = 0
    while cache.evictable_size() > 0:
        evicted += cache.evict(EvictParams(num_tokens=4096)).num_tokens_evicted
    t4 = time.perf_counter()
    return {"insert_s": t1 - t0, "match_s": t3 - t2, "evict_s": t4 - t3, "evicted_tokens": evicted}


# ---- per request, at scale ---------------------------------------------------------------------
@dataclass
class _Req:
    rid: str
    last_node: int
    origin_input_ids: array
    cached_tokens: int
    finished_reason: None = None


SYSTEM_TOKENS, TURN_TOKENS, OUTPUT_TOKENS = 1024, 48, 16


def per_request_once(sessions: int, requests: int, ours: bool, seed: int = 0) -> float:
    """Seconds per resumed-turn request on the scheduler thread, with `sessions` live sessions."""
    rnd = random.Random(seed)
    pool = SYSTEM_TOKENS + sessions * (TURN_TOKENS + OUTPUT_TOKENS) * 2 + requests * (TURN_TOKENS + OUTPUT_TOKENS) + 4096
    system = array("q", (rnd.randrange(32000) for _ in range(SYSTEM_TOKENS)))
    contexts = [system + array("q", (rnd.randrange(32000) for _ in range(TURN_TOKENS))) for _ in range(sessions)]
    if ours:
        backend = build_backend(pool, AgentServerArgs(max_pinned_fraction=0.9, pin_mode="hard"))
        cache, ctl = backend.cache, backend.controller
    else:
        cache, ctl = build(DEFAULT, pool), None
    allocator = cache.token_to_kv_pool_allocator

    # The requests' new tokens are drawn before anything is timed.
    outputs = iter([array("q", (rnd.randrange(32000) for _ in range(OUTPUT_TOKENS))) for _ in range(sessions + requests)])
    appends = iter([array("q", (rnd.randrange(32000) for _ in range(TURN_TOKENS))) for _ in range(sessions + requests)])

    def turn(i: int, rid: str) -> None:
        key = contexts[i]
        if ctl is not None:
            ctl.bind(rid, InlineAgentHint(f"s{i}"))
            ctl.request_entered(rid)
        match = cache.match_prefix(MatchPrefixParams(key=RadixKey(key)))
        cached = match.device_prefix_len
        full = key + next(outputs)
        prefix = cache.path_device_indices(match.last_device_node)[:cached].to(torch.int64)
        value = torch.cat([prefix, allocator.alloc(len(full) - cached).to(torch.int64)])
        result = cache.insert(InsertParams(key=RadixKey(full), value=value, prev_prefix_len=cached))
        if ctl is not None:
            ctl.turn_finished(_Req(rid, result.last_device_node, key, cached))
            ctl.tool_start(ToolStart(f"s{i}", "bash", 5.0))
        contexts[i] = full + next(appends)

    for i in range(sessions):  # every session has a turn behind it and is in a tool call (pinned)
        turn(i, f"setup-{i}")
    # Each timed request is a distinct session's second turn, so paths are equally deep at every S
    # (what differs is only how many sessions share the system prompt and hold pins beside it).
    picks = rnd.sample(range(sessions), min(requests, sessions))
    start = time.perf_counter()
    for n, i in enumerate(picks):
        turn(i, f"r{n}")
    elapsed = time.perf_counter() - start
    if ctl is not None:
        backend.check_integrity()
    return elapsed / len(picks)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m eval.bench_radix", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--tree-tokens", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3, help="runs per case; the median is reported")
    parser.add_argument("--pin-every", type=int, default=5, help="pin one in this many turns (agent cache)")
    parser.add_argument("--sessions", default="100,10000,100000", help="live sessions for the per-request case")
    parser.add_argument("--requests", type=int, default=2000,
                        help="timed resumed turns per per-request case (at most one per session)")
    args = parser.parse_args(argv)

    keys = [array("q", k) for k in agent_workload(args.tree_tokens)]  # the Rust core wants int64 arrays
    pool = sum(len(k) for k in keys) + 1024
    kinds = [DEFAULT, PYTHON, "RadixCache (legacy)", AGENT]
    medians, tree_tokens = {}, {}
    for kind in kinds:  # warm-up: first-use costs (lazy imports, extension loading) are not timed
        tree_ops_once(kind, keys[:20], pool, args.pin_every)
    for kind in kinds:
        runs = [tree_ops_once(kind, keys, pool, args.pin_every) for _ in range(args.repeats)]
        medians[kind] = {m: statistics.median(r[m] for r in runs) for m in ("insert_s", "match_s", "evict_s")}
        tree_tokens[kind] = runs[0]["evicted_tokens"]
    assert len(set(tree_tokens.values())) == 1, f"trees differ: {tree_tokens}"
    print(f"1. tree operations: {len(keys)} inserts/matches into a {tree_tokens[DEFAULT]}-token tree, then evict "
          f"all; median of {args.repeats} runs; ratios = time / {DEFAULT} and / {PYTHON}")
    print(f"{'cache':34s} {'insert ms':>10s} {'match ms':>10s} {'evict ms':>10s}   vs default core   vs python core")
    for kind in kinds:
        m = medians[kind]
        vs = lambda base: "/".join(f"{m[k] / medians[base][k]:.2f}x" for k in ("insert_s", "match_s", "evict_s"))  # noqa: E731
        print(f"{kind:34s} {m['insert_s']*1e3:10.1f} {m['match_s']*1e3:10.1f} {m['evict_s']*1e3:10.1f}   "
              f"{vs(DEFAULT):>16s}   {vs(PYTHON):>14s}")

    scale = {}
    print(f"\n2. per request with S live sessions sharing a {SYSTEM_TOKENS}-token system prompt "
          f"(min(S, {args.requests}) resumed turns; median of {args.repeats}): upstream = default cache, match + insert; "
          "ours = agent cache + controller, bind + match + insert + turn end + tool_start (pin)")
    print(f"{'sessions':>9s} {'upstream us/req':>16s} {'ours us/req':>12s} {'ours / upstream':>16s}")
    for sessions in (int(x) for x in args.sessions.split(",") if x.strip()):
        up = statistics.median(per_request_once(sessions, args.requests, ours=False, seed=r) for r in range(args.repeats))
        ours = statistics.median(per_request_once(sessions, args.requests, ours=True, seed=r) for r in range(args.repeats))
        scale[sessions] = (up, ours)
        print(f"{sessions:9d} {up*1e6:16.1f} {ours*1e6:12.1f} {ours/up:15.2f}x")
    if len(scale) > 1:
        lo, hi = min(scale), max(scale)
        print(f"ours at {hi} sessions / ours at {lo}: {scale[hi][1] / scale[lo][1]:.2f}x "
              "(per-request work independent of the sessions sharing a prefix: ~1x)")
    return {"tree_ops": medians, "per_request": scale}


if __name__ == "__main__":
    main()
