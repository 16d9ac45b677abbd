"""What the critical-path reservation does, in the simulator, as ratios measured in one run (8B /
H100 profile unless --profile says otherwise).

    python -m eval.reservation [--quick]

The reservation (`--agent-reserve-fraction 0.3`, TokenCake's maximum share) against none (`ours`),
on the DAG workloads of `python -m eval.reproduce --figure workflows` alone and sharing the server
with BFCL agent programs as other tenants (TokenCake's setting: critical agents that side traffic
would otherwise delay): average workflow JCT, the other tenants' average JCT, memory held for
critical agents while others waited (token-seconds) and effective memory utilisation.

Writes eval/results/reservation.csv.
"""

from __future__ import annotations

import argparse
import math
import statistics
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from eval.reproduce import DAG_POOL_TOKENS, RESULTS, dag_workloads, write_csv
from eval.sim.cost_model import load_profile
from eval.sim.engine import simulate
from eval.sim.metrics import summarize
from eval.sim.policies import POLICIES
from eval.traces.bfcl import load_bfcl
from eval.traces.format import with_poisson_arrivals


def reservation_rows(cost, quick: bool, seed: int) -> list[dict]:
    dags = dag_workloads(quick)
    tenants = load_bfcl("base", limit=40 if quick else 200)
    tenant_rate = 1.0
    jobs = [(name, rate, mixed) for name, (rates, _) in dags.items() for rate in rates[1:] for mixed in (False, True)]
    rows = []
    for name, rate, mixed in tqdm(jobs, desc="reservation", unit="point"):
        programs = with_poisson_arrivals(dags[name][1], rate, seed)
        if mixed:
            programs = sorted(programs + with_poisson_arrivals(tenants, tenant_rate, seed + 1), key=lambda p: p.arrival_s)
        runs = {}
        for spec in (POLICIES["ours"], replace(POLICIES["ours"], name="ours-reserve", reserve_fraction=0.3)):
            result = simulate(programs, cost, spec, pool_tokens=DAG_POOL_TOKENS)
            workflow = [p.jct_s for p in result.programs if p.critical_path is not None]
            others = [p.jct_s for p in result.programs if p.critical_path is None]
            span = result.makespan_s - min(p.arrival_s for p in result.programs)
            runs[spec.name] = {
                "workflow_jct_s": statistics.mean(workflow),
                "tenant_jct_s": statistics.mean(others) if others else float("nan"),
                "reserved_idle_token_s": result.reserved_idle_token_s,
                "effective_memory_utilisation": result.running_kv_token_s / max(1e-9, result.pool_tokens * span),
            }
        on, off = runs["ours-reserve"], runs["ours"]
        rows.append({"workload": name + ("+bfcl" if mixed else ""), "rate_per_s": rate,
                     "tenant_rate_per_s": tenant_rate if mixed else 0.0, "policy": "ours-reserve", "baseline": "ours",
                     **{f"{k}": v for k, v in on.items()}, **{f"baseline_{k}": v for k, v in off.items()},
                     "ratio": on["workflow_jct_s"] / off["workflow_jct_s"],
                     "tenant_ratio": on["tenant_jct_s"] / off["tenant_jct_s"] if mixed else float("nan")})
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--profile", default="llama-3.1-8b-h100")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    cost = load_profile(args.profile)
    rows = reservation_rows(cost, args.quick, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "reservation.csv", rows)
    for row in rows:
        tenants = f"; other tenants x{row['tenant_ratio']:.3f}" if not math.isnan(row["tenant_ratio"]) else ""
        print(f"{row['workload']:<15} {row['rate_per_s']:>5g}/s  ours-reserve vs ours: workflow JCT "
              f"x{row['ratio']:.3f} ({row['workflow_jct_s']:.1f} vs {row['baseline_workflow_jct_s']:.1f} s){tenants}; "
              f"held idle {row['reserved_idle_token_s']:.3g} token-s")
    print(f"wrote {args.out / 'reservation.csv'}")


if __name__ == "__main__":
    main()
