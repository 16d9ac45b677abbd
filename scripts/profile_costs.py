"""Measure a cost profile for the simulator on a real server (a GPU one when you have it).

    python scripts/profile_costs.py --url http://127.0.0.1:30000 --base-profile llama-3.1-8b-h100 \
        --out eval/sim/profiles/llama-3.1-8b-h100-measured.json

The simulator's cost model is built from a model's shape and a GPU's datasheet numbers times
two efficiencies; this script measures those efficiencies on the running server:
- prefill: single requests of N fresh random tokens with max_new_tokens=1, fitted to
  latency = overhead + N / throughput; throughput gives `prefill_mfu`;
- decode: B concurrent requests with short prompts and M forced output tokens; the time per
  step beyond the prefill gives `decode_bw_efficiency`.
Everything else is copied from --base-profile, whose model must be the one the server runs.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import random
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eval.sim.cost_model import PROFILE_DIR, load_profile  # noqa: E402


def _generate(url: str, input_ids: list[int], max_new_tokens: int) -> float:
    started = time.perf_counter()
    reply = requests.post(url + "/generate", timeout=600, json={
        "input_ids": input_ids, "sampling_params": {"max_new_tokens": max_new_tokens, "ignore_eos": True, "temperature": 0}})
    reply.raise_for_status()
    return time.perf_counter() - started


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    mx, my = statistics.mean(xs), statistics.mean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--base-profile", required=True, help="profile of the model the server runs")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--vocab", type=int, default=32000, help="random token ids are drawn below this")
    parser.add_argument("--prefill-tokens", default="256,1024,2048,4096")
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--decode-tokens", type=int, default=64)
    args = parser.parse_args(argv)
    base = load_profile(args.base_profile)
    rnd = random.Random(0)
    fresh = lambda n: [rnd.randrange(1, args.vocab) for _ in range(n)]  # noqa: E731

    _generate(args.url, fresh(64), 1)  # warm-up
    sizes = [int(x) for x in args.prefill_tokens.split(",")]
    latencies = [min(_generate(args.url, fresh(n), 1) for _ in range(3)) for n in sizes]
    overhead_s, s_per_token = fit_line(sizes, latencies)
    if s_per_token <= 0:
        sys.exit(f"prefill latency did not grow with prompt length ({latencies} s for {sizes} tokens): "
                 "the server is too noisy or the sizes too small; try larger --prefill-tokens")
    prefill_tokens_per_s = 1.0 / s_per_token
    prefill_mfu = 2 * base.params * prefill_tokens_per_s / (base.num_gpus * base.peak_flops)

    step_times, contexts, batches = [], [], []
    for batch in (int(x) for x in args.batch_sizes.split(",")):
        prompts = [fresh(128) for _ in range(batch)]
        with concurrent.futures.ThreadPoolExecutor(batch) as pool:
            started = time.perf_counter()
            list(pool.map(lambda p: _generate(args.url, p, args.decode_tokens), prompts))
            wall = time.perf_counter() - started
        prefill = overhead_s + batch * 128 * s_per_token
        step_times.append(max(1e-6, (wall - prefill) / (args.decode_tokens - 1)))
        contexts.append(batch * (128 + args.decode_tokens / 2))
        batches.append(batch)
    # Bytes a step reads: the weights once plus every running sequence's KV.
    bytes_read = [base.weight_bytes + c * base.kv_bytes_per_token for c in contexts]
    achieved = statistics.mean(b / t for b, t in zip(bytes_read, step_times))
    decode_bw_efficiency = achieved / (base.num_gpus * base.hbm_bytes_per_s)

    profile = json.loads((PROFILE_DIR / f"{args.base_profile}.json").read_text()) if (
        PROFILE_DIR / f"{args.base_profile}.json").exists() else json.loads(Path(args.base_profile).read_text())
    source = f"measured by scripts/profile_costs.py against {args.url} on {date.today()}"
    profile["name"] = args.out.stem
    profile["prefill_mfu"] = {"value": prefill_mfu, "source": f"{source}: {prefill_tokens_per_s:.0f} prefill tokens/s"}
    profile["decode_bw_efficiency"] = {"value": decode_bw_efficiency,
                                       "source": f"{source}: step times {[round(t * 1e3, 2) for t in step_times]} ms at batch {batches}"}
    profile["iteration_overhead_s"] = {"value": max(0.0, overhead_s), "source": f"{source}: prefill fit intercept"}
    args.out.write_text(json.dumps(profile, indent=2) + "\n")
    print(f"prefill {prefill_tokens_per_s:.0f} tok/s (MFU {prefill_mfu:.3f}), decode steps "
          f"{[round(t * 1e3, 2) for t in step_times]} ms (HBM efficiency {decode_bw_efficiency:.3f}) -> {args.out}")


if __name__ == "__main__":
    main()
