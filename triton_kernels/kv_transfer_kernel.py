"""The Triton kernel behind kv_transfer.gather / scatter (imported lazily: triton is optional)."""

import triton
import triton.language as tl


@triton.jit
def kv_copy_kernel(
    bases_ptr,  # int64[num_buffers]: base address of each per-layer K or V buffer
    slots_ptr,  # int64[num_slots]
    staging_ptr,  # WORD[num_buffers, num_slots, row_words]
    num_slots,
    ROW_WORDS: tl.constexpr,
    TO_STAGING: tl.constexpr,
    BLOCK_SLOTS: tl.constexpr,
    BLOCK_WORDS: tl.constexpr,
):
    slot_block = tl.program_id(0)
    buffer = tl.program_id(1).to(tl.int64)
    idx = slot_block.to(tl.int64) * BLOCK_SLOTS + tl.arange(0, BLOCK_SLOTS).to(tl.int64)
    slot_mask = idx < num_slots
    slots = tl.load(slots_ptr + idx, mask=slot_mask, other=0)
    words = tl.arange(0, BLOCK_WORDS).to(tl.int64)
    word_mask = words < ROW_WORDS
    mask = slot_mask[:, None] & word_mask[None, :]
    # slots, idx and buffer are int64 before any multiply: slot * row would overflow int32 on
    # large pools. ROW_WORDS stays a constexpr so Triton knows every row start's alignment.
    # An int cast to a pointer loses its alignment; torch buffers are 16-byte aligned, and saying
    # so lets sm_90 use 128-bit loads/stores instead of 8-byte ones.
    base = tl.multiple_of(tl.load(bases_ptr + buffer).to(tl.pointer_type(staging_ptr.dtype.element_ty)), 16)
    pool_offsets = slots[:, None] * ROW_WORDS + words[None, :]
    staging_offsets = (buffer * num_slots + idx)[:, None] * ROW_WORDS + words[None, :]
    if TO_STAGING:
        values = tl.load(base + pool_offsets, mask=mask)
        tl.store(staging_ptr + staging_offsets, values, mask=mask)
    else:
        values = tl.load(staging_ptr + staging_offsets, mask=mask)
        tl.store(base + pool_offsets, values, mask=mask)
