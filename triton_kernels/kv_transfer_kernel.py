"""The Triton kernel behind kv_transfer.copy_rows / gather / scatter (imported lazily: triton is
optional)."""

import triton
import triton.language as tl


@triton.jit
def kv_copy_rows_kernel(
    src_bases_ptr,  # int64[num_buffers]: base address of each source buffer (a layer's K or V)
    src_slots_ptr,  # int64[num_slots]: source row of each copied slot
    dst_bases_ptr,  # int64[num_buffers]: base address of each destination buffer
    dst_slots_ptr,  # int64[num_slots]: destination row of each copied slot
    num_slots,
    WORD: tl.constexpr,  # the integer type rows are moved as (values are never computed on)
    ROW_WORDS: tl.constexpr,
    BLOCK_SLOTS: tl.constexpr,
    BLOCK_WORDS: tl.constexpr,
    ALIGNED_16: tl.constexpr,  # every base address is 16-byte aligned (checked by the caller)
):
    """dst_buffer[b][dst_slots[i]] = src_buffer[b][src_slots[i]] for one block of slots of one
    buffer b: a launch covers every buffer (grid axis 1) and every slot (grid axis 0)."""
    slot_block = tl.program_id(0)
    buffer = tl.program_id(1).to(tl.int64)
    idx = slot_block.to(tl.int64) * BLOCK_SLOTS + tl.arange(0, BLOCK_SLOTS).to(tl.int64)
    slot_mask = idx < num_slots
    src_rows = tl.load(src_slots_ptr + idx, mask=slot_mask, other=0)
    dst_rows = tl.load(dst_slots_ptr + idx, mask=slot_mask, other=0)
    words = tl.arange(0, BLOCK_WORDS).to(tl.int64)
    mask = slot_mask[:, None] & (words < ROW_WORDS)[None, :]
    # Rows and buffer index are int64 before any multiply: row * ROW_WORDS overflows int32 on
    # large pools. ROW_WORDS stays a constexpr so Triton knows every row start's alignment.
    src = tl.load(src_bases_ptr + buffer).to(tl.pointer_type(WORD))
    dst = tl.load(dst_bases_ptr + buffer).to(tl.pointer_type(WORD))
    if ALIGNED_16:
        # An int cast to a pointer loses its alignment; saying what the caller checked lets
        # sm_90 use 128-bit loads/stores instead of 8-byte ones.
        src = tl.multiple_of(src, 16)
        dst = tl.multiple_of(dst, 16)
    values = tl.load(src + (src_rows[:, None] * ROW_WORDS + words[None, :]), mask=mask)
    tl.store(dst + (dst_rows[:, None] * ROW_WORDS + words[None, :]), values, mask=mask)
