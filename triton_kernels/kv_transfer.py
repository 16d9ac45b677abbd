"""Batched KV row copies between SGLang-style paged KV buffers: the copy engine of agent offload.

A KV pool is a list of per-layer buffers (K and V of each layer, MHA layout `[slots, heads,
head_dim]`, or MLA's `[slots, 1, kv_lora_rank + rope_dim]`). One transfer moves the rows of a
list of token slots for all buffers at once:

    copy_rows: dst[b][dst_slots[i]] = src[b][src_slots[i]]   (GPU pool <-> host pool, HiCache)
    gather:    out[b, i] = buffers[b][slots[i]]               (pool -> contiguous staging)
    scatter:   buffers[b][slots[i]] = src[b, i]               (the inverse)

One Triton launch covers every buffer and slot: buffers are reached through tables of int64
base addresses (for pinned/registered host memory, the device-accessible address), rows are
moved as integer words (bit-exact for fp16, bf16, fp8, NaN payloads), and offsets are int64
throughout. The `torch_*` functions are the reference; the public ones dispatch to Triton on
CUDA tensors (or CPU tensors under TRITON_INTERPRET=1) and to the reference otherwise.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import torch

_WORD_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8)


def _word_dtype(row_bytes: int) -> torch.dtype:
    """The widest integer word that divides a row, so copies never compute on the values."""
    for dtype in _WORD_DTYPES:
        if row_bytes % dtype.itemsize == 0:
            return dtype
    raise AssertionError("unreachable: int8 divides every row")


def row_bytes(buffer: torch.Tensor) -> int:
    return buffer[0].numel() * buffer.element_size() if buffer.shape[0] else 0


def _check_buffers(name: str, buffers: Sequence[torch.Tensor]) -> None:
    if not buffers:
        raise ValueError(f"no {name} buffers given")
    first = buffers[0]
    for i, buf in enumerate(buffers):
        if buf.dtype != first.dtype or buf.shape[1:] != first.shape[1:]:
            raise ValueError(f"{name} buffer {i} has dtype/shape {buf.dtype}/{tuple(buf.shape)}, "
                             f"{name} buffer 0 has {first.dtype}/{tuple(first.shape)}")
        if not buf.is_contiguous():
            raise ValueError(f"{name} buffer {i} is not contiguous")


def _check_slots(name: str, slots: torch.Tensor, n_rows: int, unique: bool) -> None:
    if slots.dtype != torch.int64 or slots.dim() != 1:
        raise ValueError(f"{name} must be a 1-D int64 tensor, got {slots.dtype} with shape {tuple(slots.shape)}")
    if slots.numel():
        lo, hi = int(slots.min()), int(slots.max())
        if lo < 0 or hi >= n_rows:
            raise ValueError(f"{name} index out of range [0, {n_rows}): min {lo}, max {hi}")
        if unique and torch.unique(slots).numel() != slots.numel():
            raise ValueError(f"{name} contain duplicates; each token slot may be transferred once")


def check_copy(src: Sequence[torch.Tensor], src_slots: torch.Tensor, dst: Sequence[torch.Tensor],
               dst_slots: torch.Tensor, check_indices: bool = True) -> None:
    """Validate a copy; raises ValueError with what is wrong. `check_indices=False` skips the
    range and duplicate checks (they read the indices, which syncs a GPU): for callers whose
    indices come from SGLang's own allocators."""
    _check_buffers("source", src)
    _check_buffers("destination", dst)
    if len(src) != len(dst):
        raise ValueError(f"{len(src)} source buffers but {len(dst)} destination buffers")
    if row_bytes(src[0]) != row_bytes(dst[0]) and src[0].shape[0] and dst[0].shape[0]:
        raise ValueError(f"source rows are {row_bytes(src[0])} bytes, destination rows {row_bytes(dst[0])}")
    if src[0].dtype != dst[0].dtype:
        raise ValueError(f"source dtype {src[0].dtype} != destination dtype {dst[0].dtype}")
    if src_slots.shape != dst_slots.shape:
        raise ValueError(f"{src_slots.numel()} source slots but {dst_slots.numel()} destination slots")
    if check_indices:
        _check_slots("source slots", src_slots, src[0].shape[0], unique=True)
        _check_slots("destination slots", dst_slots, dst[0].shape[0], unique=True)


def check_transfer(buffers: Sequence[torch.Tensor], slots: torch.Tensor, staging: torch.Tensor) -> None:
    """Validate a gather/scatter against a `[len(buffers), len(slots), *row]` staging buffer."""
    _check_buffers("KV", buffers)
    first = buffers[0]
    _check_slots("slots", slots, first.shape[0], unique=True)
    expected = (len(buffers), slots.numel(), *first.shape[1:])
    if tuple(staging.shape) != expected or staging.dtype != first.dtype:
        raise ValueError(f"staging must be {first.dtype} of shape {expected}, got {staging.dtype} {tuple(staging.shape)}")
    if not staging.is_contiguous():
        raise ValueError("staging buffer must be contiguous")


# ---- reference ----------------------------------------------------------------------------
def torch_copy_rows(src: Sequence[torch.Tensor], src_slots: torch.Tensor, dst: Sequence[torch.Tensor],
                    dst_slots: torch.Tensor, check_indices: bool = True) -> None:
    check_copy(src, src_slots, dst, dst_slots, check_indices)
    for s, d in zip(src, dst):  # through byte views: a copy, never arithmetic
        rows = s.view(torch.uint8).index_select(0, src_slots.to(s.device))
        d.view(torch.uint8).index_copy_(0, dst_slots.to(d.device), rows.to(d.device, non_blocking=True))


def torch_gather(buffers: Sequence[torch.Tensor], slots: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    check_transfer(buffers, slots, out)
    for b, buf in enumerate(buffers):
        out[b].view(torch.uint8).copy_(buf.view(torch.uint8).index_select(0, slots.to(buf.device)))
    return out


def torch_scatter(buffers: Sequence[torch.Tensor], slots: torch.Tensor, src: torch.Tensor) -> None:
    check_transfer(buffers, slots, src)
    for b, buf in enumerate(buffers):
        buf.view(torch.uint8).index_copy_(0, slots.to(buf.device), src[b].to(buf.device).view(torch.uint8))


# ---- Triton -------------------------------------------------------------------------------
def triton_usable(tensor: torch.Tensor) -> bool:
    return tensor.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"


def address_table(buffers: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
    return torch.tensor([b.data_ptr() for b in buffers], dtype=torch.int64, device=device)


def all_aligned_16(*buffer_lists: Sequence[torch.Tensor]) -> bool:
    return all(b.data_ptr() % 16 == 0 for buffers in buffer_lists for b in buffers)


# Words one program moves: enough in flight to cover PCIe latency, few enough (32 int64 per
# thread at 4 warps) to stay in registers.
TILE_WORDS = 4096


def _kernel_params(row_nbytes: int, aligned_16: bool, block_slots: Optional[int]) -> dict:
    """The kernel's compile-time parameters for rows of `row_nbytes` (one compiled kernel each)."""
    import triton
    import triton.language as tl

    word = _word_dtype(row_nbytes)
    row_words = row_nbytes // word.itemsize
    block_words = triton.next_power_of_2(row_words)
    if block_slots is None:
        block_slots = max(1, min(128, TILE_WORDS // block_words))
    tl_word = {torch.int64: tl.int64, torch.int32: tl.int32, torch.int16: tl.int16, torch.int8: tl.int8}[word]
    return dict(WORD=tl_word, ROW_WORDS=row_words, BLOCK_SLOTS=block_slots, BLOCK_WORDS=block_words,
                ALIGNED_16=aligned_16 and row_nbytes % 16 == 0)


def launch_copy_rows(src_table: torch.Tensor, src_slots: torch.Tensor, dst_table: torch.Tensor,
                     dst_slots: torch.Tensor, row_nbytes: int, aligned_16: bool,
                     block_slots: Optional[int] = None) -> None:
    """The raw launch: address tables (int64 or uint64, on the device that runs the kernel) and
    slot lists already checked. One launch, grid (slot blocks, buffers); `block_slots` defaults
    to a tile of ~TILE_WORDS words."""
    import triton

    from sglang_agent.kernels.kv_transfer_kernel import kv_copy_rows_kernel

    n = src_slots.numel()
    if n == 0:
        return
    params = _kernel_params(row_nbytes, aligned_16, block_slots)
    grid = (triton.cdiv(n, params["BLOCK_SLOTS"]), src_table.numel())
    kv_copy_rows_kernel[grid](src_table.view(torch.int64), src_slots, dst_table.view(torch.int64), dst_slots, n,
                              **params)


def precompile_copy_rows(table: torch.Tensor, row_nbytes: int, aligned_16: bool,
                         block_slots: Optional[int] = None) -> None:
    """Compile the kernel `launch_copy_rows` will use for rows of `row_nbytes` without running it
    (Triton's warmup), e.g. at server start instead of at the first copy."""
    from sglang_agent.kernels.kv_transfer_kernel import kv_copy_rows_kernel

    slots = torch.zeros(1, dtype=torch.int64, device=table.device)
    kv_copy_rows_kernel.warmup(table.view(torch.int64), slots, table.view(torch.int64), slots, 1,
                               **_kernel_params(row_nbytes, aligned_16, block_slots), grid=(1, table.numel()))


def copy_rows(src: Sequence[torch.Tensor], src_slots: torch.Tensor, dst: Sequence[torch.Tensor],
              dst_slots: torch.Tensor, *, src_table: Optional[torch.Tensor] = None,
              dst_table: Optional[torch.Tensor] = None, check_indices: bool = True,
              block_slots: Optional[int] = None) -> None:
    """dst[b][dst_slots[i]] = src[b][src_slots[i]]. Triton when the buffers are on CUDA (or under
    TRITON_INTERPRET=1), else the torch reference. Pass `src_table`/`dst_table` (address tables
    on the kernel's device) when a buffer is host memory a GPU reaches by another address."""
    check_copy(src, src_slots, dst, dst_slots, check_indices)
    on_gpu = src_slots.device
    if not (triton_usable(src[0]) or triton_usable(dst[0])):
        return torch_copy_rows(src, src_slots, dst, dst_slots, check_indices=False)
    for side, bufs, table in (("source", src, src_table), ("destination", dst, dst_table)):
        if table is None and not bufs[0].is_cuda and on_gpu.type == "cuda" and not bufs[0].is_pinned():
            raise ValueError(f"{side} buffers are pageable host memory, which a GPU kernel cannot reach: "
                             "allocate them with pin_memory=True (or pass their device-accessible address table)")
    src_table = address_table(src, on_gpu) if src_table is None else src_table
    dst_table = address_table(dst, on_gpu) if dst_table is None else dst_table
    launch_copy_rows(src_table, src_slots, dst_table, dst_slots.to(on_gpu), row_bytes(src[0]),
                     all_aligned_16(src, dst), block_slots)


def _staging_rows(staging: torch.Tensor) -> list[torch.Tensor]:
    return [staging[b] for b in range(staging.shape[0])]


def gather(buffers: Sequence[torch.Tensor], slots: torch.Tensor, out: torch.Tensor, block_slots: Optional[int] = None) -> torch.Tensor:
    """out[b, i] = buffers[b][slots[i]]; Triton on CUDA (or under TRITON_INTERPRET=1), else torch."""
    if not buffers or not triton_usable(buffers[0]):
        return torch_gather(buffers, slots, out)
    check_transfer(buffers, slots, out)
    if slots.numel():
        staging = _staging_rows(out)
        copy_rows(buffers, slots, staging, torch.arange(slots.numel(), device=slots.device),
                  check_indices=False, block_slots=block_slots)
    return out


def scatter(buffers: Sequence[torch.Tensor], slots: torch.Tensor, src: torch.Tensor, block_slots: Optional[int] = None) -> None:
    """buffers[b][slots[i]] = src[b, i]; Triton on CUDA (or under TRITON_INTERPRET=1), else torch."""
    if not buffers or not triton_usable(buffers[0]):
        return torch_scatter(buffers, slots, src)
    check_transfer(buffers, slots, src)
    if slots.numel():
        staging = _staging_rows(src)
        copy_rows(staging, torch.arange(slots.numel(), device=slots.device), buffers, slots,
                  check_indices=False, block_slots=block_slots)
