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
    row_words64 = tl.full((), ROW_WORDS, tl.int64)
    # int64 before every multiply: layer * stride overflows int32 on large pools.
    base = tl.load(bases_ptr + buffer).to(tl.pointer_type(staging_ptr.dtype.element_ty))
    pool_offsets = slots[:, None] * row_words64 + words[None, :]
    staging_offsets = (buffer * num_slots + idx)[:, None] * row_words64 + words[None, :]
    if TO_STAGING:
        values = tl.load(base + pool_offsets, mask=mask)
        tl.store(staging_ptr + staging_offsets, values, mask=mask)
    else:
        values = tl.load(staging_ptr + staging_offsets, mask=mask)
        tl.store(base + pool_offsets, values, mask=mask)
