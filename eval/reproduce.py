"""Reproduce the papers' figures with the trace-driven simulator.

    python -m eval.reproduce --all                 # every figure (the project's main job)
    python -m eval.reproduce --figure jct          # one of: jct, throughput, hit_rate, ttl, workflow, workflows, hints, workers
    python -m eval.reproduce --all --quick         # small sizes, for a smoke run
    python -m eval.reproduce --targets             # issue 12's targets as ratios, met or not (eval/targets.py)

Figures (PNG) and their data (CSV) go to eval/results/. Workloads: BFCL v4 multi-turn programs
(real, from the bfcl-eval package), synthetic coding-agent programs and synthetic multi-agent workflows,
sequential and DAG (eval/traces/synthetic.py), on the Llama-3.1-8B / H100 cost profile unless --profile says otherwise. Every policy runs on
the same AgentRadixCache and AgentController code as the server.

Bélády's offline optimum (`belady`, `belady+hicache`: eval/sim/belady.py) runs beside the
policies of every load sweep (sweep.csv, workflow.csv, workflows.csv), dashed in the plots; not
in hints.csv (it gives no hints: it reads the trace) nor workers.csv (a cluster routes each turn
at run time, and a per-worker oracle would need to know where each future turn will go).
eval/bench_belady.py prints every policy's ratio to it, like for like.
"""

from __future__ import annotations

import argparse
import csv
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from tqdm import tqdm

from eval.sim.cost_model import load_profile
from eval.sim.engine import simulate
from eval.sim.metrics import summarize, summarize_dag
from eval.sim.policies import DAG_POLICIES, POLICIES, WORKFLOW_POLICIES, fixed_ttl_policy
from eval.traces.bfcl import load_bfcl
from eval.traces.format import Program, with_poisson_arrivals
from eval.traces.synthetic import coding_agent_programs, dag_workflows, multi_agent_workflows, tokencake_dag

RESULTS = Path(__file__).parent / "results"
FIGURES = ("jct", "throughput", "hit_rate", "ttl", "workflow", "workflows", "hints", "workers")
# The multi-agent workload's KV pool: its 24 agent prompts (144k tokens) fit, with little room
# to spare, so eviction choices between agents matter (KVFlow's setting).
WORKFLOW_POOL_TOKENS = 200_000
# The DAG workloads' KV pool: the dag workload's 28 role prompts (4 apps x 7 roles, ~74k tokens)
# do not all fit even with nothing else cached, so which roles stay is the eviction policy's
# choice at every load; one TokenCake instance's contexts take ~16k tokens, so about four run at
# once before they evict each other.
DAG_POOL_TOKENS = 64_000


@dataclass(frozen=True)
class Workload:
    name: str
    rates_per_s: tuple[float, ...]
    ttl_rate_per_s: float


def workloads(quick: bool) -> dict[str, tuple[Workload, list[Program]]]:
    if quick:
        return {
            "bfcl": (Workload("bfcl", (2.0, 6.0), 6.0), load_bfcl("base", limit=40)),
            "coding": (Workload("coding", (0.1, 0.3), 0.3), coding_agent_programs(12)),
        }
    bfcl = load_bfcl("base") + load_bfcl("long_context")
    return {
        "bfcl": (Workload("bfcl", (0.5, 1.0, 2.0, 4.0, 8.0), 4.0), bfcl),
        "coding": (Workload("coding", (0.05, 0.1, 0.15, 0.2, 0.3), 0.15), coding_agent_programs(120)),
    }


def _number(text: str):
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def sweep(work, cost, out: Path, seed: int, rerun: Optional[set[str]] = None) -> list[dict]:
    """Every policy at every load into sweep.csv; with `rerun`, only those policies are simulated
    and every other row is kept from the sweep.csv already in `out` (same workload, load, policy)."""
    kept = {}
    if rerun:
        with open(out / "sweep.csv", newline="") as f:
            kept = {(r["workload"], float(r["rate_per_s"]), r["policy"]): {k: _number(v) for k, v in r.items()}
                    for r in csv.DictReader(f)}
    rows = []
    jobs = [(name, rate, policy) for name, (w, _) in work.items() for rate in w.rates_per_s for policy in POLICIES]
    for name, rate, policy in tqdm(jobs, desc="load sweep", unit="run"):
        if rerun and policy not in rerun:
            if (name, rate, policy) not in kept:
                raise SystemExit(f"{out / 'sweep.csv'} has no row for {name} at {rate}/s under {policy}: run the whole sweep")
            rows.append(kept[(name, rate, policy)])
            continue
        programs = with_poisson_arrivals(work[name][1], rate, seed)
        started = time.perf_counter()
        summary = summarize(simulate(programs, cost, POLICIES[policy]))
        rows.append({"workload": name, "rate_per_s": rate, **summary, "wall_s": time.perf_counter() - started})
    write_csv(out / "sweep.csv", rows)
    return rows


def ttl_sweep(work, cost, out: Path, seed: int, quick: bool) -> list[dict]:
    ttls = (0.0, 1.0, 5.0) if quick else (0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
    rows = []
    jobs = [(name, spec) for name in work for spec in [POLICIES["continuum"], *map(fixed_ttl_policy, ttls)]]
    for name, spec in tqdm(jobs, desc="TTL sensitivity", unit="run"):
        w, base = work[name]
        summary = summarize(simulate(with_poisson_arrivals(base, w.ttl_rate_per_s, seed), cost, spec))
        rows.append({"workload": name, "rate_per_s": w.ttl_rate_per_s, "fixed_ttl_s": spec.fixed_ttl_s, **summary})
    write_csv(out / "ttl_sensitivity.csv", rows)
    return rows


def workflow_sweep(cost, out: Path, seed: int, quick: bool) -> list[dict]:
    programs = multi_agent_workflows(16 if quick else 120, seed=seed)
    rates = (0.1, 0.3) if quick else (0.05, 0.1, 0.2, 0.3)
    rows = []
    jobs = [(rate, name) for rate in rates for name in WORKFLOW_POLICIES]
    for rate, name in tqdm(jobs, desc="multi-agent workflows", unit="run"):
        result = simulate(with_poisson_arrivals(programs, rate, seed), cost, WORKFLOW_POLICIES[name],
                          pool_tokens=WORKFLOW_POOL_TOKENS)
        rows.append({"workload": "multi-agent", "rate_per_s": rate, **summarize(result)})
    write_csv(out / "workflow.csv", rows)
    return rows


def dag_workloads(quick: bool) -> dict[str, tuple[tuple[float, ...], list[Program]]]:
    """Workload -> (arrival rates, programs). The rates run from idle (nothing queues: 0.05/s on
    both) to saturated (LRU's average JCT 8x / 5-6x its idle one on the 8B profile)."""
    if quick:
        return {"dag": ((0.05, 0.3), dag_workflows(12)), "tokencake": ((0.05, 0.2), tokencake_dag(6))}
    return {"dag": ((0.05, 0.1, 0.2, 0.3, 0.4), dag_workflows(120)),
            "tokencake": ((0.05, 0.1, 0.15, 0.2, 0.3), tokencake_dag(48))}


def workflows_sweep(cost, out: Path, seed: int, quick: bool) -> list[dict]:
    work = dag_workloads(quick)
    jobs = [(name, rate, policy) for name, (rates, _) in work.items() for rate in rates for policy in DAG_POLICIES]
    rows = []
    for name, rate, policy in tqdm(jobs, desc="DAG workflows", unit="run"):
        result = simulate(with_poisson_arrivals(work[name][1], rate, seed), cost, DAG_POLICIES[policy],
                          pool_tokens=DAG_POOL_TOKENS)
        rows.append({"workload": name, "rate_per_s": rate, **summarize_dag(result)})
    write_csv(out / "workflows.csv", rows)
    return rows


def plot_workflows(rows, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["workload"] for r in rows))
    fig, axes = plt.subplots(len(names), 2, figsize=(11, 4 * len(names)), squeeze=False)
    for (jct_ax, hit_ax), name in zip(axes, names):
        for policy in DAG_POLICIES:
            points = sorted((r["rate_per_s"], r["avg_jct_s"], r["role_prefix_hit_rate"]) for r in rows
                            if r["workload"] == name and r["policy"] == policy)
            jct_ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=policy, **_style(policy))
            hit_ax.plot([p[0] for p in points], [p[2] for p in points], marker="o", label=policy, **_style(policy))
        jct_ax.set_ylabel("average workflow JCT (s)")
        jct_ax.set_yscale("log")
        hit_ax.set_ylabel("role-prefix hit rate (GPU)")
        hit_ax.set_ylim(-0.02, 1.02)
        jct_ax.set_title(f"{name} workflows, {DAG_POOL_TOKENS // 1000}k-token KV pool")
        for ax in (jct_ax, hit_ax):
            ax.set_xlabel("workflow arrival rate (1/s)")
            ax.grid(alpha=0.3)
    axes[0][0].legend()
    return _save(fig, out / "workflows.png")


HINTED = ("continuum", "ours")


def hints_sweep(work, cost, out: Path, seed: int) -> list[dict]:
    """What an unmodified agent gets next to a hinted one. Zero-hint (every policy's default):
    the tool's duration is learned online per tool name and the session is the conversation,
    which the server finds from the prompt (in a trace each prompt extends the previous one, so
    that finding is exact). Hinted: each tool_start also declares the tool's true duration."""
    rows = []
    jobs = [(name, rate, policy, declared) for name, (w, _) in work.items() for rate in (w.ttl_rate_per_s, w.rates_per_s[-1])
            for policy in HINTED for declared in (False, True)]
    for name, rate, policy, declared in tqdm(jobs, desc="zero-hint vs hinted", unit="run"):
        spec = replace(POLICIES[policy], declare_durations=declared)
        summary = summarize(simulate(with_poisson_arrivals(work[name][1], rate, seed), cost, spec))
        rows.append({"workload": name, "rate_per_s": rate, "clients": "hinted" if declared else "zero-hint", **summary})
    write_csv(out / "hints.csv", rows)
    return rows


def plot_hints(rows, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({r["workload"] for r in rows})
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        cases = sorted({(r["rate_per_s"], r["policy"]) for r in rows if r["workload"] == name})
        labels = [f"{policy}\n{rate:g}/s" for rate, policy in cases]
        for i, clients in enumerate(("zero-hint", "hinted")):
            jct = [next(r["avg_jct_s"] for r in rows if r["workload"] == name and r["rate_per_s"] == rate
                        and r["policy"] == policy and r["clients"] == clients) for rate, policy in cases]
            ax.bar([x + 0.4 * i for x in range(len(cases))], jct, width=0.4, label=clients)
        ax.set_xticks([x + 0.2 for x in range(len(cases))], labels)
        ax.set_ylabel("average JCT (s)")
        ax.set_title(f"{name}: clients that declare tool durations or not")
        ax.grid(alpha=0.3, axis="y")
        ax.legend()
    return _save(fig, out / "hints.png")


def plot_workflow(rows, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name in WORKFLOW_POLICIES:
        points = sorted((r["rate_per_s"], r["avg_jct_s"], r["hit_rate_after_tool"]) for r in rows if r["policy"] == name)
        axes[0].plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name, **_style(name))
        axes[1].plot([p[0] for p in points], [p[2] for p in points], marker="o", label=name, **_style(name))
    axes[0].set_ylabel("average JCT (s)")
    axes[1].set_ylabel("turns whose agent prompt was cached")
    for ax in axes:
        ax.set_xlabel("workflow arrival rate (1/s)")
        ax.grid(alpha=0.3)
    axes[0].set_title(f"multi-agent workflows, {WORKFLOW_POOL_TOKENS // 1000}k-token KV pool")
    axes[0].legend()
    return _save(fig, out / "workflow.png")


def _style(policy: str) -> dict:
    """Bélády's offline bound (eval/sim/belady.py) dashed: a yardstick, not a system."""
    return {"linestyle": "--"} if policy.startswith("belady") else {}


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _plot_metric(rows, metric: str, ylabel: str, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({r["workload"] for r in rows})
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        for policy in POLICIES:
            points = sorted((r["rate_per_s"], r[metric]) for r in rows if r["workload"] == name and r["policy"] == policy)
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=policy, **_style(policy))
        ax.set_title(f"{name}: {title}")
        ax.set_xlabel("program arrival rate (1/s)")
        ax.set_ylabel(ylabel)
        if metric.endswith("jct_s"):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    _save(fig, path)


def plot_sweep(rows, out: Path, figure: str) -> list[Path]:
    if figure == "jct":
        _plot_metric(rows, "avg_jct_s", "average JCT (s)", out / "jct_avg_vs_load.png", "average JCT")
        _plot_metric(rows, "p90_jct_s", "P90 JCT (s)", out / "jct_p90_vs_load.png", "P90 JCT")
        return [out / "jct_avg_vs_load.png", out / "jct_p90_vs_load.png"]
    if figure == "throughput":
        _plot_metric(rows, "prompt_tokens_per_s", "prompt tokens served per s", out / "throughput_vs_load.png", "throughput")
        return [out / "throughput_vs_load.png"]
    _plot_metric(rows, "hit_rate_after_tool", "resumed turns with full prefix hit", out / "hit_rate_vs_load.png",
                 "cache hit after tool calls")
    return [out / "hit_rate_vs_load.png"]


def plot_ttl(rows, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({r["workload"] for r in rows})
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        fixed = sorted((r["fixed_ttl_s"], r["avg_jct_s"]) for r in rows if r["workload"] == name and r["fixed_ttl_s"] is not None)
        adaptive = [r["avg_jct_s"] for r in rows if r["workload"] == name and r["fixed_ttl_s"] is None]
        ax.plot([f[0] for f in fixed], [f[1] for f in fixed], marker="o", label="fixed TTL")
        ax.axhline(adaptive[0], color="k", linestyle="--", label="adaptive TTL (Continuum policy)")
        ax.set_xscale("symlog", linthresh=0.5)
        ax.set_xlabel("TTL (s)")
        ax.set_ylabel("average JCT (s)")
        ax.set_title(f"{name}: TTL sensitivity at {rows[0]['rate_per_s'] if len(names) == 1 else ''}".rstrip(" at"))
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, out / "ttl_sensitivity.png")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--figure", choices=FIGURES, nargs="+", help="one figure or several")
    target.add_argument("--all", action="store_true", help="every figure")
    target.add_argument("--targets", action="store_true", help="the issue's targets as ratios, met or not (eval/targets.py)")
    parser.add_argument("--profile", default="llama-3.1-8b-h100", help="cost profile (eval/sim/profiles/*.json)")
    parser.add_argument("--quick", action="store_true", help="small workloads, for a smoke run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--rerun-policies", nargs="+", choices=sorted(POLICIES), metavar="POLICY",
                        help="load sweep only: simulate these policies again and keep every other row of the "
                             "sweep.csv already in --out (after a change that only they run)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.targets:
        from eval.targets import run_targets

        run_targets(args.profile, args.quick, args.seed, args.out)
        return
    cost = load_profile(args.profile)
    work = workloads(args.quick)
    figures = FIGURES if args.all else tuple(args.figure)
    written = []
    if set(figures) & {"jct", "throughput", "hit_rate"}:
        rows = sweep(work, cost, args.out, args.seed, set(args.rerun_policies or ()))
        for figure in figures:
            if figure in ("jct", "throughput", "hit_rate"):
                written += plot_sweep(rows, args.out, figure)
        written.append(args.out / "sweep.csv")
    if "workflow" in figures:
        written += [plot_workflow(workflow_sweep(cost, args.out, args.seed, args.quick), args.out),
                    args.out / "workflow.csv"]
    if "workflows" in figures:
        written += [plot_workflows(workflows_sweep(cost, args.out, args.seed, args.quick), args.out),
                    args.out / "workflows.csv"]
    if "ttl" in figures:
        written += [plot_ttl(ttl_sweep(work, cost, args.out, args.seed, args.quick), args.out),
                    args.out / "ttl_sensitivity.csv"]
    if "hints" in figures:
        written += [plot_hints(hints_sweep(work, cost, args.out, args.seed), args.out), args.out / "hints.csv"]
    if "workers" in figures:
        from eval.workers_sweep import plot_workers, workers_sweep

        written += [plot_workers(workers_sweep(cost, args.out, args.seed, args.quick), args.out), args.out / "workers.csv"]
    for path in written:
        print(path)


if __name__ == "__main__":
    main()
