"""Radix-tree overhead of AgentRadixCache vs upstream SGLang trees, on CPU tensors.

Builds a ~100k-token tree shaped like agent traffic (sessions whose turns extend a shared
system prompt), then times insert, match and evict-everything for each cache in the same run
and prints each time as a ratio to upstream UnifiedRadixCache (same Python tree core).

    python -m eval.bench_radix [--tree-tokens 100000] [--repeats 3]
"""

from __future__ import annotations

import argparse
from array import array
import random
import statistics
import time

from sglang.srt.mem_cache.base_prefix_cache import EvictParams, InsertParams, MatchPrefixParams
from sglang.srt.mem_cache.radix_cache import RadixCache, RadixKey
from sglang.srt.mem_cache.unified_radix_cache import UnifiedRadixCache

from sglang_agent.cache.agent_radix_cache import AgentRadixCache
from sglang_agent.cache.cpu_pools import cpu_cache_params


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
    if kind == "UnifiedRadixCache (python core)":
        return UnifiedRadixCache(cpu_cache_params(pool, tree_core_backend="python"))
    if kind == "UnifiedRadixCache (default core)":
        return UnifiedRadixCache(cpu_cache_params(pool, tree_core_backend=None))
    return AgentRadixCache(cpu_cache_params(pool))


def run_once(kind: str, keys: list, pool: int, pin_every: int) -> dict[str, float]:
    cache = build(kind, pool)
    allocator = cache.token_to_kv_pool_allocator
    values = [allocator.alloc(len(k)) for k in keys]  # allocation is not what we time
    t0 = time.perf_counter()
    results = [cache.insert(InsertParams(key=RadixKey(k), value=v)) for k, v in zip(keys, values)]
    t1 = time.perf_counter()
    if isinstance(cache, AgentRadixCache):
        # A realistic share of sessions pinned across a tool call: the eviction key reads them.
        for i, result in enumerate(results[::pin_every]):
            cache.record_turn(f"s{i}", result.last_device_node)
            cache.pin(f"s{i}", ttl_deadline=3600.0)
    t2 = time.perf_counter()
    for k in keys:
        cache.match_prefix(MatchPrefixParams(key=RadixKey(k)))
    t3 = time.perf_counter()
    evicted = 0
    while cache.evictable_size() > 0:
        evicted += cache.evict(EvictParams(num_tokens=4096)).num_tokens_evicted
    t4 = time.perf_counter()
    return {"insert_s": t1 - t0, "match_s": t3 - t2, "evict_s": t4 - t3, "evicted_tokens": evicted}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree-tokens", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3, help="runs per cache; the median is reported")
    parser.add_argument("--pin-every", type=int, default=5, help="pin one in this many turns (agent cache)")
    args = parser.parse_args(argv)
    keys = [array("q", k) for k in agent_workload(args.tree_tokens)]  # the Rust core wants int64 arrays
    pool = sum(len(k) for k in keys) + 1024
    kinds = ["UnifiedRadixCache (python core)", "UnifiedRadixCache (default core)", "RadixCache (legacy)",
             "AgentRadixCache"]
    medians, tree_tokens = {}, {}
    for kind in kinds:  # warm-up: first-use costs (lazy imports, extension loading) are not timed
        run_once(kind, keys[:20], pool, args.pin_every)
    for kind in kinds:
        runs = [run_once(kind, keys, pool, args.pin_every) for _ in range(args.repeats)]
        medians[kind] = {m: statistics.median(r[m] for r in runs) for m in ("insert_s", "match_s", "evict_s")}
        tree_tokens[kind] = runs[0]["evicted_tokens"]
    base = medians[kinds[0]]
    assert len(set(tree_tokens.values())) == 1, f"trees differ: {tree_tokens}"
    print(f"{len(keys)} inserts/matches into a {tree_tokens[kinds[0]]}-token tree, median of {args.repeats} runs; "
          f"ratio = time / {kinds[0]}")
    print(f"{'cache':34s} {'insert ms':>10s} {'match ms':>10s} {'evict ms':>10s}   ratios (insert/match/evict)")
    for kind in kinds:
        m = medians[kind]
        ratios = "/".join(f"{m[k] / base[k]:.2f}x" for k in ("insert_s", "match_s", "evict_s"))
        print(f"{kind:34s} {m['insert_s']*1e3:10.1f} {m['match_s']*1e3:10.1f} {m['evict_s']*1e3:10.1f}   {ratios}")


if __name__ == "__main__":
    main()
