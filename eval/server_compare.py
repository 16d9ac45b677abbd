"""One agent trace replayed against real SGLang servers started here (CPU, tiny Llama, dummy
weights), one configuration after another with the same small KV pool: what each server's
cache does with agent traffic under memory pressure.

  sglang-lru      upstream `sglang.launch_server`; no hints
  sglang-hicache  our launcher with HiCache and *no* hints: the agent cache without hints keeps
                  upstream's LRU order (tested), so this is upstream HiCache (with our copy
                  engine, as upstream's has no CPU build)
  ours-pins       our server with hints: TTL pins + program-level FCFS
  ours            our server with HiCache and hints: pins, offload during long tool calls,
                  prefetch

Per configuration: the share of resumed turns (turns after a tool call) whose whole previous
prompt was cached, cached/prompt tokens of resumed turns, prompt tokens recomputed, mean TTFT
and JCT. A tiny model's CPU timings are no GPU claim; the cache behaviour is the point, and it
is what the simulator models. Writes CSV (and the per-turn JSON) to --out.

    python -m eval.server_compare --limit 16 --rate 1 --pool-tokens 16384
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import statistics
import tempfile
from dataclasses import asdict
from pathlib import Path

from eval.replay import ReplayResult, fold_token_ids, replay
from eval.traces.bfcl import load_bfcl
from eval.traces.format import with_poisson_arrivals
from sglang_agent.local_server import CPU_SERVER_ARGS, LocalServer
from sglang_agent.tiny_model import VOCAB_SIZE, write_tiny_llama

CONFIGS = {
    "sglang-lru": ("sglang.launch_server", [], False),
    "sglang-hicache": ("sglang_agent.launch_server", ["--enable-hierarchical-cache", "--hicache-ratio", "4"], False),
    "ours-pins": ("sglang_agent.launch_server", [], True),
    "ours": ("sglang_agent.launch_server", ["--enable-hierarchical-cache", "--hicache-ratio", "4"], True),
}


def summarize(name: str, result: ReplayResult) -> dict:
    by_program: dict[str, list] = {}
    for t in result.turns:
        by_program.setdefault(t.program_id, []).append(t)
    resumed = [(prev, t) for turns in by_program.values() for prev, t in zip(turns, turns[1:])]
    whole = sum(t.cached_tokens >= prev.prompt_tokens - 1 for prev, t in resumed)  # the last prompt token is recomputed
    prompt = sum(t.prompt_tokens for _, t in resumed)
    cached = sum(t.cached_tokens for _, t in resumed)
    return {
        "config": name,
        "programs": len(result.programs),
        "resumed_turns": len(resumed),
        "resumed_with_previous_prompt_cached": whole / len(resumed) if resumed else None,
        "resumed_cached_token_share": cached / prompt if prompt else None,
        "prompt_tokens_recomputed": sum(t.prompt_tokens - t.cached_tokens for t in result.turns),
        "avg_ttft_s": statistics.mean(t.ttft_s for t in result.turns),
        "avg_jct_s": statistics.mean(result.programs.values()),
    }


def run_config(name: str, programs, pool_tokens: int, time_scale: float, workdir: Path) -> tuple[dict, ReplayResult]:
    module, extra, hints = CONFIGS[name]
    # BFCL contexts reach ~7k tokens: past the tiny model's 4096 positions, so raise them.
    longer = ["--json-model-override-args", '{"max_position_embeddings": 16384}']
    workdir.mkdir(parents=True, exist_ok=True)
    server = LocalServer(write_tiny_llama(workdir / "tiny-llama"),
                         [*CPU_SERVER_ARGS, "--max-total-tokens", str(pool_tokens), *longer, *extra],
                         workdir / "server.log", module=module)
    try:
        server.wait_healthy()
        result = asyncio.run(replay(server.url, programs, time_scale, hints=hints, timeout_s=3600))
    finally:
        server.stop()
    return summarize(name, result), result


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m eval.server_compare", description=__doc__.split("\n\n")[0])
    p.add_argument("--limit", type=int, default=16, help="BFCL programs to replay")
    p.add_argument("--rate", type=float, default=1.0, help="program arrivals per second (Poisson, before --time-scale)")
    p.add_argument("--time-scale", type=float, default=0.5, help="multiply arrival gaps and tool durations")
    p.add_argument("--pool-tokens", type=int, default=16384, help="KV pool of every server (--max-total-tokens)")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, of {', '.join(CONFIGS)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("eval/results/server_cpu"))
    args = p.parse_args(argv)
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown:
        p.error(f"unknown configs {unknown}; choose from {sorted(CONFIGS)}")
    programs = [fold_token_ids(prog, VOCAB_SIZE - 8) for prog in load_bfcl("base", limit=args.limit, seed=args.seed)]
    programs = with_poisson_arrivals(programs, args.rate, args.seed)
    rows, turns = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            print(f"[{name}] starting a CPU server and replaying {len(programs)} BFCL programs ...", flush=True)
            row, result = run_config(name, programs, args.pool_tokens, args.time_scale, Path(tmp))
            rows.append(row)
            turns[name] = [asdict(t) for t in result.turns]
            print("  " + "  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    import json

    args.out.with_suffix(".json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "turns": turns}))
    print(f"wrote {args.out.with_suffix('.csv')} and {args.out.with_suffix('.json')}")
    return rows


if __name__ == "__main__":
    main()
