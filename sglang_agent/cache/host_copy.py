"""Our batched copy kernel as the copy engine of SGLang's HiCache host tier (MHA pools, layer_first
layout, `--hicache-io-backend kernel`), when `--agent-copy-engine triton` selects it: one launch
moves a slot list for every layer's K and V between the device pool and the host pool, through the
pools' own address tables (for registered host memory these are the device-accessible addresses
SGLang computed); a load moves all layers at the first layer's call (one launch, not one per
layer). Counts the bytes moved each way for /agent/stats and the Prometheus metrics.

Upstream's engine stays the default on a GPU until the GPU kit (scripts/gpu_bench.sh) measures ours
at least as fast; without CUDA ours is the only one (upstream's copy ops have no CPU build).
Called from patches/hicache_copy_engine.py; `engine_applies` says when a pool is ours to copy."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import torch

from sglang_agent.kernels import kv_transfer as kt

ENGINE_ENV = "SGLANG_AGENT_COPY_ENGINE"  # "triton" (ours) or "upstream" (default); set by the launcher


@dataclass
class TransferCounters:
    offloaded_bytes: int = 0  # device -> host
    reloaded_bytes: int = 0  # host -> device
    offload_copies: int = 0
    reload_copies: int = 0
    engine: str = "none"  # the path the latest copy took: "triton" or "torch"


COUNTERS = TransferCounters()
_lock = threading.Lock()  # HiCache may copy from its own threads


def engine_applies(host_pool, io_backend: str) -> bool:
    return (
        io_backend == "kernel"
        and host_pool.layout == "layer_first"
        and os.environ.get(ENGINE_ENV, "upstream") == "triton"
        and _eligible(host_pool)
    )


def _eligible(host_pool) -> bool:
    """Rows our kernel can move: K and V rows of one size, packed device buffers (once per pool)."""
    eligible = getattr(host_pool, "agent_copy_eligible", None)
    if eligible is None:
        eligible = host_pool.head_dim == host_pool.v_head_dim and all(
            b.is_contiguous() for b in (*host_pool.device_k_buffers, *host_pool.device_v_buffers))
        host_pool.agent_copy_eligible = eligible
    return eligible


def _tables(host_pool) -> dict:
    """Buffers and address tables, built once per pool (they never move)."""
    cached = getattr(host_pool, "agent_copy_tables", None)
    if cached is None:
        device_bufs = [*host_pool.device_k_buffers, *host_pool.device_v_buffers]
        host_bufs = [*host_pool.k_data_refs, *host_pool.v_data_refs]
        device_table = torch.cat([host_pool.device_k_data_ptrs, host_pool.device_v_data_ptrs]).view(torch.int64)
        host_table = torch.cat([host_pool.k_data_ptrs, host_pool.v_data_ptrs]).view(torch.int64)
        cached = {
            "device": device_bufs,
            "host": host_bufs,
            "device_table": device_table,
            "host_table": host_table,
            "aligned": kt.all_aligned_16(device_bufs, host_bufs),
        }
        host_pool.agent_copy_tables = cached
    return cached


def _copy(src, src_idx, dst, dst_idx, src_table, dst_table, aligned) -> int:
    if src_idx.numel() == 0:
        return 0
    if kt.triton_usable(src[0]) or kt.triton_usable(dst[0]):
        device = src_table.device
        kt.launch_copy_rows(src_table, src_idx.to(device, non_blocking=True), dst_table,
                            dst_idx.to(device, non_blocking=True), kt.row_bytes(src[0]), aligned)
        COUNTERS.engine = "triton"
    else:
        kt.torch_copy_rows(src, src_idx, dst, dst_idx, check_indices=False)
        COUNTERS.engine = "torch"
    return kt.row_bytes(src[0]) * src_idx.numel() * len(src)


def backup_all_layers(host_pool, host_indices: torch.Tensor, device_indices: torch.Tensor) -> None:
    """Device -> host for every layer (HiCache write-through / write-back, agent offload)."""
    t = _tables(host_pool)
    moved = _copy(t["device"], device_indices, t["host"], host_indices, t["device_table"], t["host_table"], t["aligned"])
    with _lock:
        COUNTERS.offloaded_bytes += moved
        COUNTERS.offload_copies += 1


def load_one_layer(host_pool, host_indices: torch.Tensor, device_indices: torch.Tensor, layer_id: int) -> None:
    """Host -> device. HiCache calls this once per layer (the forward waits on each layer's
    event); the first call moves every layer in one launch, so the later ones have nothing left."""
    if layer_id != 0:
        return
    t = _tables(host_pool)
    moved = _copy(t["host"], host_indices, t["device"], device_indices, t["host_table"], t["device_table"], t["aligned"])
    with _lock:
        COUNTERS.reloaded_bytes += moved
        COUNTERS.reload_copies += 1


def precompile(host_pool) -> bool:
    """Compile the kernel for this pool's rows now (at startup), not at the first write-through in
    the middle of serving. Returns whether anything was compiled (only with CUDA)."""
    if not torch.cuda.is_available() or not _eligible(host_pool):
        return False
    t = _tables(host_pool)
    kt.precompile_copy_rows(t["device_table"], kt.row_bytes(t["device"][0]), t["aligned"])
    return True
