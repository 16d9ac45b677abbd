"""How the host link behaves when transfers overlap: is PCIe one resource per direction (full
duplex) and do two transfers in one direction share it? The simulator models the link from this.

Measured with pinned host memory, each case timed as a whole (CUDA events around everything):
  alone:       one direction, one transfer of S bytes;
  duplex:      a device->host and a host->device transfer of S bytes each, at once, on two streams;
  same_way:    two host->device transfers of S bytes each, at once, on two streams;
for the copy engine (`copy_`) and for our Triton kernel (scattered rows, one launch).

    python -m eval.gpu_kit.link --out eval/results/gpu [--dry]
"""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path

import torch

from eval.bench_kv_transfer import timer
from eval.gpu_kit import write_json
from sglang_agent.kernels import kv_transfer as kt


def timed(fn, device, repeats=5, warmup=2) -> float:
    """Median seconds of fn and of everything it queued on the side streams."""
    def whole():
        fn()
        for s in STREAMS:
            torch.cuda.current_stream().wait_stream(s)
    return timer(device, repeats, warmup)(whole)


STREAMS: list = []


def on(stream):
    return torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m eval.gpu_kit.link", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("eval/results/gpu"))
    p.add_argument("--dry", action="store_true", help="CPU, tiny sizes, Triton interpreter (checks the code only)")
    p.add_argument("--tokens", type=int, default=16384, help="tokens per transfer (128 KiB each at Llama-3.1-8B's shape)")
    args = p.parse_args(argv)
    if args.dry:
        os.environ["TRITON_INTERPRET"] = "1"
        device, layers, tokens = torch.device("cpu"), 2, 64
    elif not torch.cuda.is_available():
        p.error("no CUDA device here: use --dry")
    else:
        device, layers, tokens = torch.device("cuda"), 32, args.tokens
    cuda = device.type == "cuda"
    row = (8, 128)
    pool_tokens = int(tokens * 2.5)
    pool = [torch.randint(0, 256, (pool_tokens, *row[:-1], row[-1] * 2), dtype=torch.uint8, device=device).view(torch.bfloat16)
            for _ in range(2 * layers)]
    hosts = [[torch.empty((tokens, *row), dtype=torch.bfloat16, pin_memory=cuda) for _ in pool] for _ in range(2)]
    nbytes = tokens * kt.row_bytes(pool[0]) * len(pool)
    flat_dev = [torch.empty(nbytes, dtype=torch.uint8, device=device) for _ in range(2)]
    flat_host = [torch.empty(nbytes, dtype=torch.uint8, pin_memory=cuda) for _ in range(2)]
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(pool_tokens, generator=gen).to(device)
    slots = [perm[:tokens].contiguous(), perm[tokens:2 * tokens].contiguous()]
    arange = torch.arange(tokens, device=device)
    pool_table = kt.address_table(pool, device)
    host_tables = [kt.address_table(h, device) for h in hosts]
    rb, aligned = kt.row_bytes(pool[0]), kt.all_aligned_16(pool, hosts[0], hosts[1])
    STREAMS[:] = [torch.cuda.Stream(), torch.cuda.Stream()] if cuda else []
    streams = STREAMS or [None, None]

    def engine_d2h(i):
        flat_host[i].copy_(flat_dev[i], non_blocking=True)

    def engine_h2d(i):
        flat_dev[i].copy_(flat_host[i], non_blocking=True)

    def kernel_d2h(i):
        kt.launch_copy_rows(pool_table, slots[i], host_tables[i], arange, rb, aligned)

    def kernel_h2d(i):
        kt.launch_copy_rows(host_tables[i], arange, pool_table, slots[i], rb, aligned)

    def together(*calls):
        def run():
            main_stream = torch.cuda.current_stream() if cuda else None
            for s, (fn, i) in zip(streams, calls):
                if s is not None:
                    s.wait_stream(main_stream)
                with on(s):
                    fn(i)
        return run

    result = {"device": torch.cuda.get_device_name() if cuda else "CPU (dry)", "dry": args.dry,
              "bytes_per_transfer": nbytes, "tokens_per_transfer": tokens, "cases": {}}
    for name, d2h, h2d in (("copy_engine", engine_d2h, engine_h2d), ("triton_kernel", kernel_d2h, kernel_h2d)):
        alone_d2h = timed(together((d2h, 0)), device)
        alone_h2d = timed(together((h2d, 0)), device)
        duplex = timed(together((d2h, 0), (h2d, 1)), device)
        same_way = timed(together((h2d, 0), (h2d, 1)), device)
        gb = lambda n, s: n / s / 1e9  # noqa: E731
        case = {"d2h_alone_gbps": gb(nbytes, alone_d2h), "h2d_alone_gbps": gb(nbytes, alone_h2d),
                "duplex_total_gbps": gb(2 * nbytes, duplex), "same_way_total_gbps": gb(2 * nbytes, same_way),
                "duplex_vs_alone": max(alone_d2h, alone_h2d) / duplex, "same_way_vs_alone": alone_h2d / same_way}
        result["cases"][name] = case
        print(f"{name:14} d2h {case['d2h_alone_gbps']:6.1f} GB/s, h2d {case['h2d_alone_gbps']:6.1f} GB/s alone; "
              f"both ways at once {case['duplex_total_gbps']:6.1f} GB/s in all; two h2d at once "
              f"{case['same_way_total_gbps']:6.1f} GB/s in all", flush=True)
    write_json(args.out / "link.json", result)
    return result


if __name__ == "__main__":
    main()
