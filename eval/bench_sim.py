"""How fast the simulator replays programs on this CPU (the cache and policy code included).

    python -m eval.bench_sim [--programs 1000] [--policy continuum]

Replays N BFCL programs (the 800 real ones, repeated with new ids to reach N) at a moderate
load and prints the wall time per policy, plus the ratio to the sglang-lru baseline run in the
same process.
"""

from __future__ import annotations

import argparse
import time

from eval.sim.cost_model import load_profile
from eval.sim.engine import simulate
from eval.sim.policies import POLICIES
from eval.traces.bfcl import CATEGORIES, load_bfcl
from eval.traces.format import Program, with_poisson_arrivals


def bfcl_programs(count: int) -> list[Program]:
    real = [p for category in CATEGORIES for p in load_bfcl(category)]
    return [Program(f"{real[i % len(real)].program_id}#{i}", 0.0, real[i % len(real)].system_tokens,
                    real[i % len(real)].turns) for i in range(count)]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--programs", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=4.0, help="program arrivals per second")
    parser.add_argument("--policy", action="append", help="policies to time (default: sglang-lru and continuum)")
    args = parser.parse_args(argv)
    programs = with_poisson_arrivals(bfcl_programs(args.programs), args.rate, seed=0)
    turns = sum(len(p.turns) for p in programs)
    cost = load_profile("llama-3.1-8b-h100")
    walls = {}
    for name in args.policy or ["sglang-lru", "continuum"]:
        started = time.perf_counter()
        simulate(programs, cost, POLICIES[name])
        walls[name] = time.perf_counter() - started
    base = walls.get("sglang-lru")
    for name, wall in walls.items():
        ratio = f"  {wall / base:.2f}x sglang-lru" if base else ""
        print(f"{name:15s} {args.programs} programs ({turns} LLM calls): {wall:6.1f} s wall{ratio}")


if __name__ == "__main__":
    main()
