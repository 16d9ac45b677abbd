"""Every eviction order against Bélády's offline optimum, in one run per workload and load.

    python -m eval.bench_belady --workload dag --rates 0.1 0.3
    python -m eval.bench_belady --workload bfcl coding multi-agent dag tokencake   # the figures' loads

GPU-tier misses (prompt tokens not found in the GPU tree: recomputed + reloaded) and average JCT,
each as a ratio to the Bélády run (eval/sim/belady.py) with the same tier and admission: the same
waiting-queue order and no hard pins, so that only the victim choice differs:
- GPU tier alone (no host tier): sglang-lru and kvflow (request FCFS) against `belady`;
  ours-soft-no-host (ours without HiCache and offload, its pins soft and no critical-path
  reservation: our eviction order, TTL pins then steps-to-execution then LRU, under program-FCFS)
  against `belady-pfcfs` (Bélády under program-FCFS);
- over the host tier (HiCache, the same host budget): sglang-hicache against `belady+hicache`,
  ours-soft (ours with soft pins, no reservation) against `belady-pfcfs+hicache`;
- pins and the reservation change admission (a newcomer waits while a pin or the reservation
  holds memory): continuum, ours-no-host and ours (as shipped: hard pins, no reservation) are shown
  against the same bounds, and may beat them;
- floor: sglang-lru on a pool that never evicts (compulsory misses: tokens no earlier turn left;
  its timing differs, so it is approximate); "excess" ratios count misses above it.
Workloads and pools are the figures' (eval/reproduce.py); loads default to theirs, or --rates.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from eval.reproduce import DAG_POOL_TOKENS, WORKFLOW_POOL_TOKENS, dag_workloads, workloads
from eval.sim.cost_model import load_profile
from eval.sim.engine import simulate
from eval.sim.metrics import summarize_dag
from eval.sim.policies import POLICIES, WORKFLOW_POLICIES, PolicySpec
from eval.traces.format import Program, with_poisson_arrivals
from eval.traces.synthetic import multi_agent_workflows

_OURS_NO_HOST = replace(POLICIES["ours"], offload=False, hicache=False)
# Our eviction order alone: soft pins (an order, not a hold) and no critical-path reservation
# (which also changes admission), under ours' program-FCFS.
_ORDER_ONLY = {"pin_mode": "soft", "reserve_fraction": 0.0}
_PFCFS = replace(POLICIES["belady"], name="belady-pfcfs", order="program_fcfs")
# tier -> policy -> (its spec, the Bélády run it is measured against)
RUNS: dict[str, dict[str, tuple[PolicySpec, str]]] = {
    "gpu": {
        "sglang-lru": (POLICIES["sglang-lru"], "belady"),
        "kvflow": (WORKFLOW_POLICIES["kvflow"], "belady"),
        "ours-soft-no-host": (replace(_OURS_NO_HOST, name="ours-soft-no-host", **_ORDER_ONLY), "belady-pfcfs"),
        "continuum": (POLICIES["continuum"], "belady-pfcfs"),
        "ours-no-host": (replace(_OURS_NO_HOST, name="ours-no-host"), "belady-pfcfs"),
        "belady": (POLICIES["belady"], "belady"),
        "belady-pfcfs": (_PFCFS, "belady-pfcfs"),
    },
    "host": {
        "sglang-hicache": (POLICIES["sglang-hicache"], "belady+hicache"),
        "ours-soft": (replace(POLICIES["ours"], name="ours-soft", **_ORDER_ONLY), "belady-pfcfs+hicache"),
        "ours": (POLICIES["ours"], "belady-pfcfs+hicache"),
        "belady+hicache": (POLICIES["belady+hicache"], "belady+hicache"),
        "belady-pfcfs+hicache": (replace(_PFCFS, name="belady-pfcfs+hicache", hicache=True), "belady-pfcfs+hicache"),
    },
}
WORKFLOW_ONLY = {"kvflow"}


def workload(name: str, quick: bool) -> tuple[tuple[float, ...], list[Program], int | None]:
    """(the figure's loads, its programs, its pool; None: the profile's)."""
    if name in ("bfcl", "coding"):
        w, programs = workloads(quick)[name]
        return w.rates_per_s, programs, None
    if name == "multi-agent":
        return ((0.1, 0.3) if quick else (0.05, 0.1, 0.2, 0.3)), multi_agent_workflows(16 if quick else 120), \
            WORKFLOW_POOL_TOKENS
    rates, programs = dag_workloads(quick)[name]
    return rates, programs, DAG_POOL_TOKENS


def no_eviction_pool(programs: list[Program]) -> int:
    prefixes = {tuple(p) for program in programs for p in (program.agent_prefixes or {}).values()}
    return sum(program.total_tokens for program in programs) + sum(map(len, prefixes))


def run(name: str, rate: float, programs: list[Program], pool: int | None, cost) -> list[dict]:
    arrivals = with_poisson_arrivals(programs, rate, seed=0)
    rows = []
    for tier, runs in RUNS.items():
        for policy, (spec, bound) in runs.items():
            if policy in WORKFLOW_ONLY and not programs[0].agent_prefixes:
                continue
            summary = summarize_dag(simulate(arrivals, cost, spec, pool_tokens=pool))
            rows.append({"workload": name, "rate_per_s": rate, "tier": tier, "bound": bound, **summary})
    big = max(pool or cost.kv_pool_tokens, no_eviction_pool(programs))
    floor = summarize_dag(simulate(arrivals, cost, POLICIES["sglang-lru"], pool_tokens=big))
    rows.append({"workload": name, "rate_per_s": rate, "tier": "floor", "bound": "belady", **floor, "policy": "no-eviction"})
    return rows


def print_table(rows: list[dict]) -> None:
    runs = {r["policy"]: r for r in rows}
    floor = runs["no-eviction"]["gpu_miss_tokens"]
    print(f"\n{rows[0]['workload']} at {rows[0]['rate_per_s']:g}/s   (floor: {floor} compulsory GPU misses)")
    print(f"  {'tier':5s} {'policy':20s} {'against':20s} {'GPU misses':>11s} {'x bound':>7s} {'excess x':>8s}"
          f" {'recomputed':>11s} {'avg JCT s':>9s} {'x bound':>7s} {'mem util':>8s}")
    for r in rows:
        ref = runs[r["bound"]]
        excess = (r["gpu_miss_tokens"] - floor) / max(1, ref["gpu_miss_tokens"] - floor)
        print(f"  {r['tier']:5s} {r['policy']:20s} {r['bound']:20s} {r['gpu_miss_tokens']:11d}"
              f" {r['gpu_miss_tokens'] / ref['gpu_miss_tokens']:7.3f} {excess:8.3f} {r['recomputed_tokens']:11d}"
              f" {r['avg_jct_s']:9.1f} {r['avg_jct_s'] / ref['avg_jct_s']:7.3f} {r['effective_memory_utilisation']:8.3f}",
              flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", nargs="+", default=["dag"],
                        choices=["bfcl", "coding", "multi-agent", "dag", "tokencake"])
    parser.add_argument("--rates", type=float, nargs="+", help="program arrivals per second (default: the figure's)")
    parser.add_argument("--quick", action="store_true", help="the figures' --quick sizes")
    parser.add_argument("--profile", default="llama-3.1-8b-h100")
    args = parser.parse_args(argv)
    cost = load_profile(args.profile)
    for name in args.workload:
        rates, programs, pool = workload(name, args.quick)
        for rate in args.rates or rates:
            print_table(run(name, rate, programs, pool, cost))


if __name__ == "__main__":
    main()
