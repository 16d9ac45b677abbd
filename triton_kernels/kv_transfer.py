"""Batched KV gather/scatter between an SGLang-style paged KV pool and a contiguous buffer.

The pool is a list of per-layer buffers (K and V of each layer, MHA layout `[slots, heads,
head_dim]`, or MLA's `[slots, 1, kv_lora_rank + rope_dim]`); a transfer moves the rows of a list
of token slots for all buffers at once:

    gather:  out[b, i] = buffers[b][slots[i]]      (GPU pool -> staging / pinned host buffer)
    scatter: buffers[b][slots[i]] = src[b, i]      (the inverse)

One Triton launch covers every buffer and slot: buffers are reached through a table of int64
base addresses, rows are moved as integer words (bit-exact for fp16, bf16, fp8, NaN payloads),
and offsets are int64 throughout. `torch_gather` / `torch_scatter` are the reference; `gather`
/ `scatter` dispatch to Triton on CUDA tensors (or CPU tensors under TRITON_INTERPRET=1).
"""

from __future__ import annotations

import os
from typing import Sequence

import torch

_WORD_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8)


def _word_dtype(row_bytes: int) -> torch.dtype:
    """The widest integer word that divides a row, so copies never compute on the values."""
    for dtype in _WORD_DTYPES:
        if row_bytes % dtype.itemsize == 0:
            return dtype
    raise AssertionError("unreachable: int8 divides every row")


def check_transfer(buffers: Sequence[torch.Tensor], slots: torch.Tensor, staging: torch.Tensor) -> None:
    """Validate a transfer; raises ValueError with what is wrong."""
    if not buffers:
        raise ValueError("no KV buffers given")
    first = buffers[0]
    for i, buf in enumerate(buffers):
        if buf.dtype != first.dtype or buf.shape[1:] != first.shape[1:]:
            raise ValueError(f"buffer {i} has dtype/shape {buf.dtype}/{tuple(buf.shape)}, "
                             f"buffer 0 has {first.dtype}/{tuple(first.shape)}")
        if not buf.is_contiguous():
            raise ValueError(f"buffer {i} is not contiguous")
    if slots.dtype != torch.int64 or slots.dim() != 1:
        raise ValueError(f"slots must be a 1-D int64 tensor, got {slots.dtype} with shape {tuple(slots.shape)}")
    if slots.numel():
        lo, hi = int(slots.min()), int(slots.max())
        if lo < 0 or hi >= first.shape[0]:
            raise ValueError(f"slot index out of range [0, {first.shape[0]}): min {lo}, max {hi}")
        if torch.unique(slots).numel() != slots.numel():
            raise ValueError("slots contain duplicates; each token slot may be transferred once")
    expected = (len(buffers), slots.numel(), *first.shape[1:])
    if tuple(staging.shape) != expected or staging.dtype != first.dtype:
        raise ValueError(f"staging must be {first.dtype} of shape {expected}, got {staging.dtype} {tuple(staging.shape)}")
    if not staging.is_contiguous():
        raise ValueError("staging buffer must be contiguous")


def torch_gather(buffers: Sequence[torch.Tensor], slots: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    check_transfer(buffers, slots, out)
    for b, buf in enumerate(buffers):  # through byte views: a copy, never arithmetic
        out[b].view(torch.uint8).copy_(buf.view(torch.uint8).index_select(0, slots.to(buf.device)))
    return out


def torch_scatter(buffers: Sequence[torch.Tensor], slots: torch.Tensor, src: torch.Tensor) -> None:
    check_transfer(buffers, slots, src)
    for b, buf in enumerate(buffers):
        buf.view(torch.uint8).index_copy_(0, slots.to(buf.device), src[b].to(buf.device).view(torch.uint8))


def _triton_usable(tensor: torch.Tensor) -> bool:
    return tensor.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"


def _launch(buffers, slots, staging, to_staging: bool, block_slots: int) -> None:
    import triton

    from sglang_agent.kernels.kv_transfer_kernel import kv_copy_kernel

    row_bytes = buffers[0][0].numel() * buffers[0].element_size()
    word = _word_dtype(row_bytes)
    row_words = row_bytes // word.itemsize
    # Per-buffer base addresses: one launch reaches every layer without passing the pools as
    # arguments (which the interpreter would copy back whole after every launch).
    bases = torch.tensor([buf.data_ptr() for buf in buffers], dtype=torch.int64, device=slots.device)
    staging_words = staging.view(word)
    grid = (triton.cdiv(slots.numel(), block_slots), len(buffers))
    kv_copy_kernel[grid](
        bases, slots, staging_words, slots.numel(),
        ROW_WORDS=row_words, TO_STAGING=to_staging, BLOCK_SLOTS=block_slots,
        BLOCK_WORDS=triton.next_power_of_2(row_words),
    )


def gather(buffers: Sequence[torch.Tensor], slots: torch.Tensor, out: torch.Tensor, block_slots: int = 64) -> torch.Tensor:
    """out[b, i] = buffers[b][slots[i]]; Triton on CUDA (or under TRITON_INTERPRET=1), else torch."""
    if not buffers or not _triton_usable(buffers[0]):
        return torch_gather(buffers, slots, out)
    check_transfer(buffers, slots, out)
    if slots.numel():
        _launch(buffers, slots, out, to_staging=True, block_slots=block_slots)
    return out


def scatter(buffers: Sequence[torch.Tensor], slots: torch.Tensor, src: torch.Tensor, block_slots: int = 64) -> None:
    """buffers[b][slots[i]] = src[b, i]; Triton on CUDA (or under TRITON_INTERPRET=1), else torch."""
    if not buffers or not _triton_usable(buffers[0]):
        return torch_scatter(buffers, slots, src)
    check_transfer(buffers, slots, src)
    if slots.numel():
        _launch(buffers, slots, src, to_staging=False, block_slots=block_slots)
