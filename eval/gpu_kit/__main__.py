"""Run the GPU kit: environment, kernel checks, KV transfer bench, model costs, then a measured
cost profile for the simulator. Each part runs in its own process under its own time limit; a part
that fails is reported and the others still write their results.

    python -m eval.gpu_kit                       # GPU: eval/results/gpu/ + eval/sim/profiles/*-measured.json
    python -m eval.gpu_kit --dry --out /tmp/kit  # CPU, tiny shapes, Triton interpreter (CI)
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from eval.gpu_kit import ROOT, write_json

PARTS = ("kernel_check", "transfer", "link", "model_costs")
BASE_PROFILE = ROOT / "eval/sim/profiles/llama-3.1-8b-h100.json"


def environment(dry: bool) -> dict:
    import torch

    env = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "dry": dry, "python": platform.python_version(),
           "torch": torch.__version__, "cuda": torch.version.cuda, "commit": os.environ.get("GIT_COMMIT", "unknown")}
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    if torch.cuda.is_available() and not dry:
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpu_memory_bytes=props.total_memory, sms=props.multi_processor_count,
                   capability=f"{props.major}.{props.minor}")
        try:
            env["nvidia_smi"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,pcie.link.gen.max,pcie.link.width.max",
                 "--format=csv,noheader"], capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.TimeoutExpired) as exc:
            env["nvidia_smi"] = f"unavailable: {exc}"
    return env


def part_command(part: str, out: Path, dry: bool, budget_s: float) -> list[list[str]]:
    """The command(s) of a part; a later one is the fallback when the earlier fails."""
    py = [sys.executable, "-m"]
    dry_flag = ["--dry"] if dry else []
    if part == "kernel_check":
        return [py + ["eval.gpu_kit.kernel_check", "--out", str(out)] + dry_flag]
    if part == "model_costs":
        return [py + ["eval.gpu_kit.model_costs", "--out", str(out), "--budget-s", str(budget_s)] + dry_flag]
    if part == "link":
        return [py + ["eval.gpu_kit.link", "--out", str(out)] + dry_flag]
    bench = py + ["eval.gpu_kit.transfer", "--out", str(out / "kv_transfer")]
    if dry:
        bench += ["--interpret", "--tokens", "64,256", "--layers", "2", "--repeats", "2"]
    else:  # small pieces too: a turn's appended KV is often a few hundred tokens
        bench += ["--tokens", "64,256,1024,4096,16384,65536"]
    return [bench, bench + ["--no-triton"]]


def run_part(part: str, out: Path, dry: bool, limit_s: float, log) -> dict:
    started = time.monotonic()
    status = {"part": part, "ok": False}
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for i, cmd in enumerate(part_command(part, out, dry, budget_s=max(30.0, limit_s - 60))):
        left = limit_s - (time.monotonic() - started)
        if left < 20:
            status["error"] = "no time left for the fallback"
            break
        print(f"[kit] {part}: {' '.join(cmd[2:])} (limit {left:.0f} s)", flush=True)
        log.write(f"\n===== {part}: {' '.join(cmd)}\n")
        log.flush()
        try:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            deadline = time.monotonic() + left
            for line in proc.stdout:  # echoed as it comes, so a long part shows progress
                sys.stdout.write(line)
                log.write(line)
                if time.monotonic() > deadline:
                    proc.kill()
                    break
            rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = "timeout"
        log.flush()
        status.update(command=" ".join(cmd[2:]), rc=rc, fallback=i > 0)
        if rc == 0:
            status["ok"] = True
            break
    status["seconds"] = round(time.monotonic() - started, 1)
    print(f"[kit] {part}: {'ok' if status['ok'] else 'FAILED'} in {status['seconds']} s", flush=True)
    return status


def transfer_rows(out: Path, dry: bool) -> list[dict]:
    path = out / ("kv_transfer_cpu.csv" if dry else "kv_transfer.csv")
    if not path.exists():
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def write_profile(out: Path, profile_out: Path, env: dict, dry: bool) -> dict | None:
    """The base 8B profile with this GPU's memory and the measured efficiencies and host link.
    Nothing measured, nothing written."""
    costs_path = out / "model_costs.json"
    if not costs_path.exists():
        return None
    costs = json.loads(costs_path.read_text())
    fitted = costs.get("fitted", {})
    if "prefill_mfu" not in fitted or "decode_bw_efficiency" not in fitted:
        return None
    profile = json.loads(BASE_PROFILE.read_text())
    gpu = env.get("gpu", "CPU (dry run)")
    when = f"measured by the GPU kit (python -m eval.gpu_kit) on {gpu}, {env['date']}"
    profile["name"] = profile_out.stem
    profile["description"] = f"Llama-3.1-8B shape, bf16, one {gpu}: efficiencies measured by the GPU kit" + (
        " (DRY RUN: CPU toy shapes, not a GPU profile)" if dry else "")
    if "gpu_memory_bytes" in env:
        profile["gpu_memory_bytes"] = {"value": env["gpu_memory_bytes"], "source": f"torch total_memory, {when}"}
    profile["peak_flops"] = {"value": costs["peak_flops"], "source": "datasheet dense BF16 peak (989 TFLOPS on H100 and H200 SXM)"}
    profile["hbm_bytes_per_s"] = {"value": costs["hbm_bytes_per_s"], "source": "datasheet HBM bandwidth of this GPU (4.8 TB/s H200, 3.35 TB/s H100)"}
    pf = [r for r in costs["prefill"] if "seconds" in r]
    profile["prefill_mfu"] = {"value": fitted["prefill_mfu"], "source": (
        f"{when}: {len(pf)} prefills (new tokens x prefix) of a random-weight model of this shape in plain torch, "
        "fitted to the cost model's FLOPs through the origin; per point in eval/results/gpu/model_costs.json")}
    dc = [r for r in costs["decode"] if "seconds" in r]
    graphs = sum("graph_seconds" in r for r in dc)
    profile["decode_bw_efficiency"] = {"value": fitted["decode_bw_efficiency"], "source": (
        f"{when}: {len(dc)} decode steps (batch x context; {graphs} under CUDA graphs), weights + KV bytes "
        "against time, fitted through the origin")}
    rows = transfer_rows(out, dry)
    if rows:
        biggest = max(int(r["tokens"]) for r in rows)
        at = [r for r in rows if int(r["tokens"]) == biggest]

        def best(r):  # the faster engine of the two measured (ours when it ran and won)
            return max(float(r["torch_gbps"]), float(r["triton_gbps"] or 0))

        slower_direction = min(at, key=best)
        profile["host_bytes_per_s"] = {"value": best(slower_direction) * 1e9, "source": (
            f"{when}: scattered-slot KV transfer of {biggest} tokens, the slower direction "
            f"({slower_direction['direction']}) with the faster engine; pinned contiguous peak "
            f"{float(slower_direction['peak_gbps']):.1f} GB/s (eval/results/gpu/kv_transfer.csv)")}
    profile["iteration_overhead_s"]["source"] += " (not measured by the kit: it times the GPU, not SGLang's scheduler)"
    write_json(profile_out, profile)
    return profile


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.gpu_kit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry", action="store_true", help="CPU, tiny shapes, Triton interpreter: checks the kit, measures nothing")
    p.add_argument("--out", type=Path, default=None, help="results folder (default eval/results/gpu; with --dry a temp-like eval/results/gpu-dry)")
    p.add_argument("--profile-out", type=Path, default=None,
                   help="measured cost profile (default eval/sim/profiles/llama-3.1-8b-<gpu>-measured.json; with --dry OUT/profile-dry.json)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--budget-s", type=float, default=480.0, help="the whole kit's time limit (default %(default)s s)")
    args = p.parse_args(argv)
    parts = [x for x in args.parts.split(",") if x]
    unknown = set(parts) - set(PARTS)
    if unknown:
        p.error(f"unknown parts {sorted(unknown)}; known: {', '.join(PARTS)}")
    import torch

    if not args.dry and not torch.cuda.is_available():
        p.error("no CUDA device here: run with --dry to check the kit on the CPU")
    out = args.out or ROOT / ("eval/results/gpu-dry" if args.dry else "eval/results/gpu")
    out.mkdir(parents=True, exist_ok=True)
    env = environment(args.dry)
    if args.profile_out is None:
        gpu = env.get("gpu", "")
        tag = "h200" if "H200" in gpu else "h100" if "H100" in gpu else gpu.split()[-1].lower() if gpu else "cpu"
        args.profile_out = out / "profile-dry.json" if args.dry else ROOT / f"eval/sim/profiles/llama-3.1-8b-{tag}-measured.json"
    print(f"[kit] {env.get('gpu', 'CPU (dry)')}, torch {env['torch']}, triton {env['triton']} -> {out}", flush=True)
    started = time.monotonic()
    # Shares of the budget: model costs get the most; the transfer bench pins ~8 GiB of host memory.
    shares = {"kernel_check": 0.15, "transfer": 0.25, "link": 0.1, "model_costs": 0.5}
    statuses = []
    with open(out / "kit.log", "w") as log:
        for i, part in enumerate(parts):
            left = args.budget_s - (time.monotonic() - started)
            share = left if i == len(parts) - 1 else min(left, args.budget_s * shares[part] / sum(shares[x] for x in parts))
            statuses.append(run_part(part, out, args.dry, max(share, 20.0), log))
    profile = write_profile(out, args.profile_out, env, args.dry)
    env["parts"] = statuses
    env["profile"] = str(args.profile_out) if profile else None
    write_json(out / "env.json", env)
    failed = [s["part"] for s in statuses if not s["ok"]]
    print(f"[kit] done in {time.monotonic() - started:.0f} s; profile: {env['profile']}"
          + (f"; FAILED: {failed}" if failed else "; all parts ok"), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
