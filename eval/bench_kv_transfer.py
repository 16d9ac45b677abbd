"""KV offload/reload bandwidth: our batched Triton copy kernel vs torch, against the PCIe peak.

For each transfer size (1k-64k tokens scattered over a Llama-3.1-8B-shaped pool: 32 layers,
K and V, 8 KV heads x 128, bf16 = 128 KiB per token), in one run:

  gather  (GPU pool -> pinned host): Triton `copy_rows` writes straight into pinned host memory
          vs torch `index_select` into a GPU staging buffer + one `copy_(non_blocking=True)`;
  scatter (pinned host -> GPU pool): Triton reads pinned host memory straight into the slots
          vs torch `copy_(non_blocking=True)` to GPU staging + `index_copy_` per buffer;
  peak:   a plain pinned `copy_` of the same bytes, contiguous, each direction.

Prints GB/s, the Triton/torch ratio and Triton's fraction of the measured peak, and writes CSV
+ PNG. Without CUDA it times the torch reference on CPU memory and says so: those numbers are
no GPU claim (use --interpret to run the Triton path through the interpreter, for checking).

    python -m eval.bench_kv_transfer                     # on a GPU machine
    python -m eval.bench_kv_transfer --tokens 1024 --layers 4   # a quick CPU look
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from sglang_agent.kernels import kv_transfer as kt

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp8": torch.float8_e4m3fn}


@dataclass
class Row:
    direction: str  # gather (GPU -> host) | scatter (host -> GPU)
    tokens: int
    bytes: int
    triton_gbps: float | None
    torch_gbps: float
    peak_gbps: float
    triton_vs_torch: float | None
    triton_of_peak: float | None


def timer(device: torch.device, repeats: int, warmup: int = 2) -> Callable[[Callable[[], None]], float]:
    """Median seconds of fn over `repeats` runs (CUDA events on a GPU)."""

    def run(fn: Callable[[], None]) -> float:
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            else:
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
        return statistics.median(times)

    return run


def bench_size(n: int, pool: list[torch.Tensor], device: torch.device, use_triton: bool, repeats: int,
               seed: int) -> list[Row]:
    row_shape, dtype = pool[0].shape[1:], pool[0].dtype
    nbytes = n * kt.row_bytes(pool[0]) * len(pool)
    gen = torch.Generator().manual_seed(seed)
    slots = torch.randperm(pool[0].shape[0], generator=gen)[:n].to(torch.int64).to(device)
    arange = torch.arange(n, dtype=torch.int64, device=device)
    pin = device.type == "cuda"
    host = torch.empty((len(pool), n, *row_shape), dtype=dtype, pin_memory=pin)
    host_views = [host[b] for b in range(len(pool))]
    staging = torch.empty((len(pool), n, *row_shape), dtype=dtype, device=device)
    flat_dev = staging.view(-1)
    flat_host = host.view(-1)
    time_it = timer(device, repeats)

    # Address tables built once, like SGLang's host pool does (pinned memory is reachable from
    # the GPU at its host address under UVA).
    pool_table = kt.address_table(pool, device)
    host_table = kt.address_table(host_views, device)
    aligned = kt.all_aligned_16(pool, host_views)
    rb = kt.row_bytes(pool[0])

    def triton_gather():
        kt.launch_copy_rows(pool_table, slots, host_table, arange, rb, aligned)

    def triton_scatter():
        kt.launch_copy_rows(host_table, arange, pool_table, slots, rb, aligned)

    def torch_gather():
        for b, buf in enumerate(pool):
            torch.index_select(buf, 0, slots, out=staging[b])
        host.copy_(staging, non_blocking=True)

    def torch_scatter():
        staging.copy_(host, non_blocking=True)
        for b, buf in enumerate(pool):
            buf.index_copy_(0, slots, staging[b])

    peak_d2h = time_it(lambda: flat_host.copy_(flat_dev, non_blocking=True))
    peak_h2d = time_it(lambda: flat_dev.copy_(flat_host, non_blocking=True))
    rows = []
    for direction, tri, ref, peak in (("gather", triton_gather, torch_gather, peak_d2h),
                                      ("scatter", triton_scatter, torch_scatter, peak_h2d)):
        ref_s = time_it(ref)
        tri_s = time_it(tri) if use_triton else None
        gbps = lambda s: nbytes / s / 1e9  # noqa: E731
        rows.append(Row(direction, n, nbytes, None if tri_s is None else gbps(tri_s), gbps(ref_s), gbps(peak),
                        None if tri_s is None else ref_s / tri_s, None if tri_s is None else peak / tri_s))
    check_exact(pool, slots, host_views, use_triton, triton_gather)
    return rows


def check_exact(pool, slots, host_views, use_triton, triton_gather) -> None:
    """The timed kernels moved the right bytes (a benchmark of a wrong copy is worthless)."""
    if not use_triton:
        return
    triton_gather()
    if pool[0].is_cuda:
        torch.cuda.synchronize()
    for buf, got in zip(pool, host_views):
        want = buf.index_select(0, slots).cpu()
        if not torch.equal(want.view(torch.uint8), got.view(torch.uint8)):
            raise AssertionError("Triton gather produced different bytes than index_select")


def make_pool(pool_tokens: int, layers: int, kv_heads: int, head_dim: int, dtype: torch.dtype,
              device: torch.device) -> list[torch.Tensor]:
    bufs = []
    for _ in range(2 * layers):  # K and V of every layer, SGLang's MHATokenToKVPool layout
        raw = torch.randint(0, 256, (pool_tokens, kv_heads, head_dim * dtype.itemsize), dtype=torch.uint8, device=device)
        bufs.append(raw.view(dtype))
    return bufs


def plot(rows: list[Row], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, direction in zip(axes, ("gather", "scatter")):
        part = [r for r in rows if r.direction == direction]
        x = [r.tokens for r in part]
        ax.plot(x, [r.peak_gbps for r in part], "k--", label="pinned copy_ (peak)")
        ax.plot(x, [r.torch_gbps for r in part], "o-", label="torch index + copy_")
        if all(r.triton_gbps is not None for r in part):
            ax.plot(x, [r.triton_gbps for r in part], "s-", label="Triton copy_rows")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("tokens moved (scattered slots)")
        ax.set_title({"gather": "GPU pool -> pinned host", "scatter": "pinned host -> GPU pool"}[direction])
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("GB/s")
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[Row]:
    p = argparse.ArgumentParser(prog="python -m eval.bench_kv_transfer", description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", default="1024,4096,16384,65536", help="comma-separated transfer sizes in tokens")
    p.add_argument("--layers", type=int, default=32, help="model layers (default: Llama-3.1-8B's 32)")
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--pool-tokens", type=int, default=None, help="pool size (default: 1.25 x the largest transfer)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--interpret", action="store_true", help="without CUDA, run the Triton path in the interpreter (slow)")
    p.add_argument("--no-triton", action="store_true", help="time torch and the peak only (e.g. if the kernel fails here)")
    p.add_argument("--out", type=Path, default=Path("eval/results/kv_transfer"),
                   help="writes OUT.csv and OUT.png (default: %(default)s; a _cpu suffix without CUDA)")
    args = p.parse_args(argv)
    sizes = sorted(int(x) for x in args.tokens.split(","))
    if min(sizes) < 1:
        p.error("--tokens must be positive")
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if args.interpret and not cuda:
        os.environ["TRITON_INTERPRET"] = "1"
    use_triton = (cuda or args.interpret) and not args.no_triton
    if cuda:
        print(f"device: {torch.cuda.get_device_name()}")
    else:
        print("no CUDA here: timing the torch reference on CPU memory (no PCIe, no pinned host copy);"
              " these numbers are not a GPU claim." + (" Triton runs in the interpreter." if use_triton else ""))
    pool_tokens = args.pool_tokens or int(1.25 * max(sizes))
    dtype = DTYPES[args.dtype]
    pool = make_pool(pool_tokens, args.layers, args.kv_heads, args.head_dim, dtype, device)
    per_token = kt.row_bytes(pool[0]) * len(pool)
    print(f"pool: {args.layers} layers x K,V x {args.kv_heads} heads x {args.head_dim} {args.dtype} = "
          f"{per_token / 1024:.0f} KiB/token, {pool_tokens} tokens")
    rows: list[Row] = []
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = lambda x, **_: x  # noqa: E731
    for i, n in enumerate(tqdm(sizes, desc="sizes")):
        rows += bench_size(n, pool, device, use_triton, args.repeats, seed=i)
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    print(f"{'dir':8}{'tokens':>8}{'MiB':>9}{'triton GB/s':>13}{'torch GB/s':>12}{'peak GB/s':>11}"
          f"{'triton/torch':>14}{'of peak':>9}")
    for r in rows:
        print(f"{r.direction:8}{r.tokens:>8}{r.bytes / 2**20:>9.0f}{fmt(r.triton_gbps, '.1f'):>13}"
              f"{r.torch_gbps:>12.1f}{r.peak_gbps:>11.1f}{fmt(r.triton_vs_torch, '.2f') + 'x':>14}"
              f"{fmt(r.triton_of_peak and 100 * r.triton_of_peak, '.0f') + '%':>9}")
    out = args.out if cuda else args.out.with_name(args.out.name + "_cpu")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    device_name = torch.cuda.get_device_name() if cuda else "CPU (reference only)"
    plot(rows, out.with_suffix(".png"), f"KV transfer, {per_token // 1024} KiB/token, {device_name}")
    print(f"wrote {out.with_suffix('.csv')} and {out.with_suffix('.png')}")
    return rows


if __name__ == "__main__":
    main()
