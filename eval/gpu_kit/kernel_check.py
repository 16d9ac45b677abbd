"""The Triton copy kernel against the torch reference, bit for bit, on the device it will run on:
a real GPU (device pool <-> pinned host through UVA address tables, the way SGLang's host pool
is reached) or, with --dry, CPU tensors under the Triton interpreter.

Each check is independent: a failure is recorded with its error and the rest still run.

    python -m eval.gpu_kit.kernel_check --out eval/results/gpu [--dry]
"""

from __future__ import annotations

import argparse
import os
import time
import traceback
from pathlib import Path
from typing import Callable

import torch

from eval.gpu_kit import write_json
from sglang_agent.kernels import kv_transfer as kt

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp8": torch.float8_e4m3fn, "fp32": torch.float32}
# (slots, heads, head_dim): Llama-3.1-8B's MHA rows, an MLA row (1 x 576), an odd 6-byte fp16 row
SHAPES = {"mha-8x128": (4096, 8, 128), "mla-1x576": (2048, 1, 576), "odd-1x3": (512, 1, 3)}


def random_pool(shape, dtype, n_buffers, device, pin=False, seed=0) -> list[torch.Tensor]:
    """Random bytes viewed as `dtype` (every bit pattern, NaNs included)."""
    gen = torch.Generator().manual_seed(seed)
    byte_shape = (*shape[:-1], shape[-1] * dtype.itemsize)
    out = []
    for _ in range(n_buffers):
        raw = torch.randint(0, 256, byte_shape, generator=gen, dtype=torch.uint8)
        raw = raw.pin_memory() if pin else raw.to(device)
        out.append(raw.view(dtype))
    return out


def same_bytes(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x.view(torch.uint8).cpu(), y.view(torch.uint8).cpu()) for x, y in zip(a, b))


def slots_of(n_rows, count, device, seed) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n_rows, generator=gen)[:count].to(torch.int64).to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def check_round_trip(device, dtype, shape, n_buffers, count) -> str:
    """Device pool -> host pool (offload) and back (reload) through address tables, as the host tier
    does; the rows land exactly where the reference puts them and nothing else is touched."""
    on_gpu = device.type == "cuda"
    pool = random_pool(shape, dtype, n_buffers, device, seed=1)
    host = random_pool(shape, dtype, n_buffers, device, pin=on_gpu, seed=2)
    src, dst = slots_of(shape[0], count, device, 3), slots_of(shape[0], count, device, 4)
    want_host = [h.cpu().clone() for h in host]  # the reference runs on CPU copies
    kt.torch_copy_rows([p.cpu() for p in pool], src.cpu(), want_host, dst.cpu())
    pool_table, host_table = kt.address_table(pool, device), kt.address_table(host, device)
    kt.copy_rows(pool, src, host, dst, src_table=pool_table, dst_table=host_table)
    sync(device)
    if not same_bytes(host, want_host):
        raise AssertionError("offload (device -> host) moved different bytes than the torch reference")
    fresh = random_pool(shape, dtype, n_buffers, device, seed=5)
    want_pool = [f.cpu().clone() for f in fresh]
    kt.torch_copy_rows([h.cpu() for h in host], dst.cpu(), want_pool, src.cpu())
    kt.copy_rows(host, dst, fresh, src, src_table=host_table, dst_table=kt.address_table(fresh, device))
    sync(device)
    if not same_bytes(fresh, want_pool):
        raise AssertionError("reload (host -> device) moved different bytes than the torch reference")
    return f"{count} slots x {n_buffers} buffers, both directions"


def check_gather_scatter(device, dtype, shape) -> str:
    pool = random_pool(shape, dtype, 4, device, seed=6)
    slots = slots_of(shape[0], min(777, shape[0]), device, 7)
    out = torch.empty((4, slots.numel(), *shape[1:]), dtype=dtype, device=device)
    kt.gather(pool, slots, out)
    ref = torch.empty((4, slots.numel(), *shape[1:]), dtype=dtype)
    kt.torch_gather([p.cpu() for p in pool], slots.cpu(), ref)
    sync(device)
    if not torch.equal(out.view(torch.uint8).cpu(), ref.view(torch.uint8)):
        raise AssertionError("gather differs from torch_gather")
    mine, theirs = [p.clone() for p in pool], [p.cpu().clone() for p in pool]
    src = random_pool((4 * slots.numel(), *shape[1:]), dtype, 1, device, seed=8)[0].view(4, slots.numel(), *shape[1:])
    kt.scatter(mine, slots, src)
    kt.torch_scatter(theirs, slots.cpu(), src.cpu())
    sync(device)
    if not same_bytes(mine, theirs):
        raise AssertionError("scatter differs from torch_scatter")
    return f"{slots.numel()} slots, 4 buffers"


def check_unaligned(device) -> str:
    """Buffers 8 bytes off a 16-byte boundary take the scalar path and stay exact."""
    shape, dtype = (256, 8, 128), torch.bfloat16
    base = random_pool((shape[0] * shape[1] * shape[2] + 4,), dtype, 2, device, seed=9)
    pool = [b[4:].view(shape) for b in base]  # 8 bytes in
    assert not kt.all_aligned_16(pool)
    slots = slots_of(shape[0], 100, device, 10)
    out = torch.empty((2, 100, 8, 128), dtype=dtype, device=device)
    kt.gather(pool, slots, out)
    ref = torch.empty((2, 100, 8, 128), dtype=dtype)
    kt.torch_gather([p.cpu().contiguous() for p in pool], slots.cpu(), ref)
    sync(device)
    if not torch.equal(out.view(torch.uint8).cpu(), ref.view(torch.uint8)):
        raise AssertionError("unaligned gather differs from the reference")
    return "8-byte offset buffers"


def check_large_pool(device, rows: int) -> str:
    """Row offsets past 2^31 bytes in one buffer (int64 offsets): the last rows copy right."""
    shape, dtype = (rows, 8, 128), torch.bfloat16  # 2 KiB rows
    buf = torch.zeros(shape, dtype=dtype, device=device)
    slots = torch.tensor([0, rows // 2, rows - 2, rows - 1], dtype=torch.int64, device=device)
    marks = torch.arange(4 * 8 * 128, dtype=torch.int16, device=device).view(4, 8, 128).view(dtype)
    buf[slots] = marks
    out = torch.empty((1, 4, 8, 128), dtype=dtype, device=device)
    kt.gather([buf], slots, out)
    sync(device)
    if not torch.equal(out[0].view(torch.int16), marks.view(torch.int16)):
        raise AssertionError("rows beyond 2^31 bytes came back wrong (an int32 offset overflow?)")
    return f"{rows * 2048 / 2**30:.1f} GiB buffer, last row at byte {(rows - 1) * 2048:,}"


def check_empty(device) -> str:
    pool = random_pool((16, 1, 8), torch.float16, 2, device, seed=11)
    before = [p.clone() for p in pool]
    none = torch.empty(0, dtype=torch.int64, device=device)
    kt.gather(pool, none, torch.empty((2, 0, 1, 8), dtype=torch.float16, device=device))
    kt.scatter(pool, none, torch.empty((2, 0, 1, 8), dtype=torch.float16, device=device))
    sync(device)
    if not same_bytes(pool, before):
        raise AssertionError("an empty slot list changed the pool")
    return "no-op"


def check_precompile(device) -> str:
    """Compiling at startup (precompile_copy_rows) leaves nothing to compile at the first copy."""
    pool = random_pool((128, 8, 64), torch.bfloat16, 2, device, seed=12)
    table = kt.address_table(pool, device)
    started = time.perf_counter()
    kt.precompile_copy_rows(table, kt.row_bytes(pool[0]), kt.all_aligned_16(pool))
    compile_s = time.perf_counter() - started
    out = torch.empty((2, 10, 8, 64), dtype=torch.bfloat16, device=device)
    slots = slots_of(128, 10, device, 13)
    started = time.perf_counter()
    kt.gather(pool, slots, out)
    sync(device)
    first_s = time.perf_counter() - started
    return f"compile {compile_s:.2f} s, first copy after it {first_s * 1e3:.1f} ms"


def run(device: torch.device, dry: bool) -> list[dict]:
    checks: list[tuple[str, Callable[[], str]]] = []
    count = 64 if dry else 1000
    for shape_name, shape in SHAPES.items():
        shape = (min(shape[0], 256), *shape[1:]) if dry else shape
        dtypes = ["bf16"] if dry and shape_name != "mha-8x128" else list(DTYPES)
        for dtype_name in dtypes:
            checks.append((f"round_trip/{shape_name}/{dtype_name}",
                           lambda s=shape, d=DTYPES[dtype_name]: check_round_trip(device, d, s, 4 if dry else 16, min(count, s[0]))))
        checks.append((f"gather_scatter/{shape_name}/bf16", lambda s=shape: check_gather_scatter(device, torch.bfloat16, s)))
    checks.append(("unaligned/bf16", lambda: check_unaligned(device)))
    checks.append(("large_pool/int64_offsets", lambda: check_large_pool(device, 4096 if dry else (3 << 20))))
    checks.append(("empty_slot_list", lambda: check_empty(device)))
    if device.type == "cuda":
        checks.append(("precompile", lambda: check_precompile(device)))
    results = []
    for name, fn in checks:
        started = time.perf_counter()
        try:
            detail, ok = fn(), True
        except Exception as exc:  # recorded, and the next check runs
            detail, ok = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=4)}", False
        results.append({"check": name, "passed": ok, "detail": detail, "seconds": round(time.perf_counter() - started, 3)})
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail.splitlines()[0]}", flush=True)
    return results


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m eval.gpu_kit.kernel_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("eval/results/gpu"))
    p.add_argument("--dry", action="store_true", help="CPU tensors under the Triton interpreter, small shapes")
    args = p.parse_args(argv)
    if args.dry:
        os.environ["TRITON_INTERPRET"] = "1"
        device = torch.device("cpu")
    elif not torch.cuda.is_available():
        p.error("no CUDA device here: use --dry")
    else:
        device = torch.device("cuda")
    results = run(device, args.dry)
    import triton

    write_json(args.out / "kernel_check.json", {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "CPU (Triton interpreter)",
        "torch": torch.__version__, "triton": triton.__version__, "dry": args.dry,
        "passed": sum(r["passed"] for r in results), "failed": sum(not r["passed"] for r in results),
        "checks": results})
    failed = [r["check"] for r in results if not r["passed"]]
    print(f"kernel_check: {len(results) - len(failed)}/{len(results)} passed" + (f"; failed: {failed}" if failed else ""))
    if failed:
        raise SystemExit(1)
    return results


if __name__ == "__main__":
    main()
