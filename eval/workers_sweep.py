"""Many workers in the simulator: average JCT vs load for 1 and 8 workers behind the gateway's
routing policies (eval/sim/cluster.py), upstream (SGLang + HiCache) vs ours, in one run.

Load is per worker: 8 workers get 8 copies of the BFCL programs at 8x the rate, so each worker
sees the single worker's load; each copy has its own id and its own conversation (token ids
shifted; the shared system prompt stays), or copies would find each other's turns cached. The programs are shuffled once, so base and
long-context programs mix in time the same way for every point.

    python -m eval.reproduce --figure workers       # eval/results/workers.{csv,png}
"""

from __future__ import annotations

import random
import time
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from eval.sim.cluster import ROUTING, simulate_cluster
from eval.sim.metrics import summarize
from eval.sim.policies import POLICIES
from eval.traces.bfcl import load_bfcl
from eval.traces.format import Program, with_poisson_arrivals

UPSTREAM, OURS = "sglang-hicache", "ours"


VOCAB = 128_000  # Llama-3's vocabulary, roughly: shifted token ids stay token ids


def _shifted(tokens: list[int], k: int) -> list[int]:
    return [(t + 7919 * k) % VOCAB for t in tokens]


def copy_program(program: Program, k: int) -> Program:
    """Copy k of a program: its own id and its own turns (token ids shifted), so that no copy finds
    another copy's conversation cached; the system prompt stays shared, as agents of one framework
    share theirs."""
    if k == 0:
        return replace(program, program_id=f"{program.program_id}#0")
    turns = [replace(t, append_tokens=_shifted(t.append_tokens, k), output_tokens=_shifted(t.output_tokens, k))
             for t in program.turns]
    return replace(program, program_id=f"{program.program_id}#{k}", turns=turns)


def programs_for(base: list[Program], workers: int, seed: int) -> list[Program]:
    copies = [copy_program(p, k) for k in range(workers) for p in base]
    random.Random(seed + 1).shuffle(copies)
    return copies


def jobs(quick: bool) -> tuple[list[Program], tuple[float, ...], tuple[int, ...], list[tuple]]:
    base = load_bfcl("base", limit=40) if quick else load_bfcl("base") + load_bfcl("long_context")
    rates = (2.0, 6.0) if quick else (1.0, 2.0, 4.0)
    many = 2 if quick else 8
    out = []
    for rate in rates:
        for policy in (UPSTREAM, OURS):
            out.append((1, "-", policy, rate, False))
            out += [(many, routing, policy, rate, False) for routing in ROUTING]
    # Pins counted as used in /v1/loads (before patches/loads_pins_reclaimable.py): the gate's effect.
    out.append((many, "consistent_hashing", OURS, rates[-1], True))
    return base, rates, (1, many), out


def workers_sweep(cost, out: Path, seed: int, quick: bool) -> list[dict]:
    from eval.reproduce import write_csv

    base, _, _, todo = jobs(quick)
    rows = []
    for workers, routing, policy, rate, pins_used in tqdm(todo, desc="workers", unit="run"):
        programs = with_poisson_arrivals(programs_for(base, workers, seed), rate * workers, seed)
        started = time.perf_counter()
        result, cluster = simulate_cluster(programs, cost, POLICIES[policy], workers,
                                           "round_robin" if routing == "-" else routing, pins_count_as_used=pins_used)
        summary = summarize(result)
        turns = sum(cluster.routed)
        rows.append({"workers": workers, "routing": routing, "policy": policy + (" (pins as used)" if pins_used else ""),
                     "rate_per_worker_s": rate, **{k: summary[k] for k in (
                         "programs", "avg_jct_s", "p90_jct_s", "hit_rate_after_tool", "token_hit_rate", "avg_queue_s")},
                     "moved_turn_share": cluster.moves / max(1, turns),
                     "busiest_worker_share": max(cluster.routed) / max(1, turns),
                     "wall_s": round(time.perf_counter() - started, 1)})
    write_csv(out / "workers.csv", rows)
    return rows


def plot_workers(rows: list[dict], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from eval.reproduce import _save

    fig, ax = plt.subplots(figsize=(8, 5))
    colors = {"-": "black", "round_robin": "tab:red", "consistent_hashing": "tab:blue", "cache_aware": "tab:green"}
    for (workers, routing, policy) in sorted({(r["workers"], r["routing"], r["policy"]) for r in rows}):
        if "pins as used" in policy:
            continue
        points = sorted((r["rate_per_worker_s"], r["avg_jct_s"]) for r in rows
                        if (r["workers"], r["routing"], r["policy"]) == (workers, routing, policy))
        label = f"{workers} worker{'s' if workers > 1 else ''}" + ("" if routing == "-" else f", {routing}") + f": {policy}"
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o" if policy == OURS else "s",
                linestyle="-" if policy == OURS else "--", color=colors[routing], label=label)
    ax.set_xlabel("program arrival rate per worker (1/s), BFCL")
    ax.set_ylabel("average JCT (s)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Many workers behind the gateway (simulated, 8B profile)")
    return _save(fig, out / "workers.png")
