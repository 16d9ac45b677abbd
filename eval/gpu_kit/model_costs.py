"""Prefill and decode times of Llama-3.1-8B's shape on this GPU (random bf16 weights, see
llama_shape), and the simulator's two efficiencies fitted to them:

  prefill: one sequence of N new tokens after P cached ones, for N x P on a grid; the cost model's
           FLOPs (2 x params x N + attention over prefix and chunk) against the time gives
           `prefill_mfu` (least squares through the origin, the cost model's form);
  decode:  one step of B sequences with C cached tokens each, under a CUDA graph (as SGLang runs
           decode) and eagerly; weights + B x C x KV bytes against the time gives
           `decode_bw_efficiency`.

Every point is in model_costs.json with its time and what the fitted model predicts for it.

    python -m eval.gpu_kit.model_costs --out eval/results/gpu [--dry] [--budget-s 240]
"""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path

import torch

from eval.bench_kv_transfer import timer
from eval.gpu_kit import write_json
from eval.gpu_kit.llama_shape import LLAMA_3_1_8B, TINY, Model, Shape

GRID = {  # (prefill new tokens, prefill prefixes, decode batches, decode contexts, max decode KV tokens)
    "gpu": ([256, 1024, 4096, 16384], [0, 4096, 32768], [1, 8, 32, 64, 128, 256], [1024, 4096, 16384, 32768], 1 << 18),
    "dry": ([8, 32], [0, 16], [1, 2], [16, 32], 1 << 10),
}


def timed(fn, device: torch.device, repeats: int, warmup: int = 2) -> float:
    """Median seconds of fn (CUDA events on a GPU): the transfer bench's timer."""
    return timer(device, repeats, warmup)(fn)


def prefill_flops(shape: Shape, params: int, new: int, prefix: int) -> float:
    """The simulator's count (eval/sim/cost_model.py prefill_s)."""
    return 2 * params * new + 4 * shape.layers * shape.hidden * (new * prefix + new**2 / 2)


def decode_bytes(shape: Shape, params: int, batch: int, context: int) -> float:
    return 2 * params + batch * context * shape.kv_bytes_per_token


def through_origin(xs: list[float], ys: list[float]) -> float:
    """c minimising sum (y - c x)^2."""
    return sum(x * y for x, y in zip(xs, ys)) / sum(x * x for x in xs)


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure_prefill(model: Model, news, prefixes, repeats, deadline) -> list[dict]:
    rows = []
    for prefix in prefixes:
        for new in news:
            if time.monotonic() > deadline:
                rows.append({"new_tokens": new, "prefix_tokens": prefix, "skipped": "time budget"})
                continue
            cache = None
            try:
                cache = model.kv_cache(1, prefix + new)
                ids = torch.randint(0, model.shape.vocab, (new,), device=model.device)
                seconds = timed(lambda: model.prefill(ids, cache, prefix), model.device, repeats)
                rows.append({"new_tokens": new, "prefix_tokens": prefix, "seconds": seconds})
                print(f"prefill new={new:>6} prefix={prefix:>6}: {seconds * 1e3:9.2f} ms", flush=True)
            except Exception as exc:  # this point is lost, the grid goes on
                rows.append({"new_tokens": new, "prefix_tokens": prefix, "error": f"{type(exc).__name__}: {exc}"})
                print(f"prefill new={new} prefix={prefix}: FAILED {type(exc).__name__}: {exc}", flush=True)
            del cache
            free(model.device)
    return rows


def graph_step(model: Model, ids, cache, position):
    """A CUDA graph of one decode step (SGLang decodes under CUDA graphs), or None if capture fails."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            model.decode(ids, cache, position)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        model.decode(ids, cache, position)
    return graph


def measure_decode(model: Model, batches, contexts, max_kv, repeats, deadline) -> list[dict]:
    rows = []
    for context in contexts:
        for batch in batches:
            if batch * context > max_kv:
                continue
            if time.monotonic() > deadline:
                rows.append({"batch": batch, "context_tokens": context, "skipped": "time budget"})
                continue
            row = {"batch": batch, "context_tokens": context}
            try:
                cache = model.kv_cache(batch, context + 1)
                ids = torch.randint(0, model.shape.vocab, (batch,), device=model.device)
                row["eager_seconds"] = timed(lambda: model.decode(ids, cache, context), model.device, repeats)
            except Exception as exc:  # this point is lost, the grid goes on
                row["error"] = f"{type(exc).__name__}: {exc}"
                print(f"decode batch={batch} context={context}: FAILED {row['error']}", flush=True)
                rows.append(row)
                cache = None
                free(model.device)
                continue
            if model.device.type == "cuda":
                try:
                    graph = graph_step(model, ids, cache, context)
                    row["graph_seconds"] = timed(graph.replay, model.device, repeats)
                    del graph
                except Exception as exc:  # eager numbers still stand; say why there is no graph
                    row["graph_error"] = f"{type(exc).__name__}: {exc}"
            row["seconds"] = row.get("graph_seconds", row["eager_seconds"])
            print(f"decode batch={batch:>4} context={context:>6}: {row['seconds'] * 1e3:8.3f} ms"
                  f" (eager {row['eager_seconds'] * 1e3:.3f} ms)", flush=True)
            rows.append(row)
            del cache
            free(model.device)
    return rows


def _efficiency(rows: list[dict], work: list[float], peak: float, point_key: str) -> float:
    """Fraction of `peak` (work units per second) the cost model's form fits to the rows' times,
    through the origin; each row gets the model's time and its own fraction under `point_key`."""
    per_unit = through_origin(work, [r["seconds"] for r in rows])
    for r, w in zip(rows, work):
        r["model_seconds"] = w * per_unit
        r[point_key] = w / (r["seconds"] * peak)
    return 1.0 / (per_unit * peak)


def fit(shape: Shape, params: int, prefill: list[dict], decode: list[dict], peak_flops: float, hbm: float) -> dict:
    out: dict = {}
    done = [r for r in prefill if "seconds" in r]
    if done:
        flops = [prefill_flops(shape, params, r["new_tokens"], r["prefix_tokens"]) for r in done]
        out["prefill_mfu"] = _efficiency(done, flops, peak_flops, "mfu")
    done = [r for r in decode if "seconds" in r]
    if done:
        nbytes = [decode_bytes(shape, params, r["batch"], r["context_tokens"]) for r in done]
        out["decode_bw_efficiency"] = _efficiency(done, nbytes, hbm, "bw_efficiency")
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m eval.gpu_kit.model_costs", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("eval/results/gpu"))
    p.add_argument("--dry", action="store_true", help="CPU, a 2-layer toy shape (checks the code, measures nothing)")
    p.add_argument("--budget-s", type=float, default=240.0, help="stop starting new points after this long")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--peak-flops", type=float, default=989e12, help="dense bf16 peak (H100/H200 SXM datasheet)")
    p.add_argument("--hbm-bytes-per-s", type=float, default=None,
                   help="HBM bandwidth (default: 4.8e12 on an H200, 3.35e12 on an H100, from the datasheets)")
    args = p.parse_args(argv)
    started = time.monotonic()
    deadline = started + args.budget_s
    if args.dry:
        device, shape, grid = torch.device("cpu"), TINY, GRID["dry"]
    elif not torch.cuda.is_available():
        p.error("no CUDA device here: use --dry")
    else:
        device, shape, grid = torch.device("cuda"), LLAMA_3_1_8B, GRID["gpu"]
        torch.backends.cuda.matmul.allow_tf32 = True
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    hbm = args.hbm_bytes_per_s or (4.8e12 if "H200" in name else 3.35e12)
    model = Model(shape, device)
    params = model.param_count()
    assert params == shape.params, (params, shape.params)
    print(f"{name}: Llama-3.1-8B shape, {params / 1e9:.2f}B random bf16 parameters", flush=True)
    news, prefixes, batches, contexts, max_kv = grid
    # Warm the libraries once (cuBLAS handles and heuristics, SDPA kernels), or the first points
    # carry their start-up (seen: 256 new tokens took 29 ms cold, 18 ms with a 4k prefix after).
    warm = model.kv_cache(1, news[1] + prefixes[1])
    for prefix in (0, prefixes[1]):
        timed(lambda: model.prefill(torch.randint(0, shape.vocab, (news[1],), device=device), warm, prefix), device, 1, warmup=3)
    del warm
    free(device)
    prefill = measure_prefill(model, news, prefixes, args.repeats, deadline)
    decode = measure_decode(model, batches, contexts, max_kv, args.repeats, deadline)
    fitted = fit(shape, params, prefill, decode, args.peak_flops, hbm)
    result = {
        "device": name, "torch": torch.__version__, "dry": args.dry, "date": time.strftime("%Y-%m-%d"),
        "shape": shape.__dict__, "params": params, "peak_flops": args.peak_flops, "hbm_bytes_per_s": hbm,
        "method": ("plain-torch decoder of the model's shape, random bf16 weights (eval/gpu_kit/llama_shape.py); "
                   "SDPA attention (GQA by repeat_interleave in prefill, grouped query rows in decode); decode "
                   "times under a CUDA graph where capture worked; median of "
                   f"{args.repeats} after 2 warm-ups; CUDA events"),
        "fitted": fitted, "prefill": prefill, "decode": decode, "seconds": round(time.monotonic() - started, 1)}
    write_json(args.out / "model_costs.json", result)
    print(f"fitted: {fitted} -> {args.out / 'model_costs.json'}")
    return result


if __name__ == "__main__":
    main()
