"""Triton KV gather/scatter (run by the Triton interpreter on CPU) against the torch reference,
bit for bit."""

from __future__ import annotations

import pytest
import torch

from sglang_agent.kernels import kv_transfer as kt

DTYPES = [torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float32]
# (slots, heads, head_dim): MHA rows, an MLA row (1 x 576), an odd 6-byte fp16 row
SHAPES = [(300, 2, 16), (64, 1, 576), (50, 1, 3)]


@pytest.fixture(autouse=True)
def triton_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


def pool(shape, dtype, n_buffers, seed):
    """Random bytes viewed as `dtype`: every bit pattern, NaNs and infs included."""
    gen = torch.Generator().manual_seed(seed)
    byte_shape = (*shape[:-1], shape[-1] * dtype.itemsize)
    return [torch.randint(0, 256, byte_shape, generator=gen, dtype=torch.uint8).view(dtype) for _ in range(n_buffers)]


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.uint8)


def random_slots(n_slots, count, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n_slots, generator=gen)[:count].to(torch.int64)  # unique, scattered


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_gather_and_scatter_match_torch_bit_for_bit(dtype, shape):
    bufs = pool(shape, dtype, n_buffers=4, seed=1)
    slots = random_slots(shape[0], min(37, shape[0]), seed=2)
    out = torch.empty((4, len(slots), *shape[1:]), dtype=dtype)
    ref = torch.empty_like(out)
    kt.gather(bufs, slots, out, block_slots=16)
    kt.torch_gather(bufs, slots, ref)
    assert torch.equal(bits(out), bits(ref))

    src = pool((4 * len(slots), shape[1], shape[2]), dtype, 1, seed=3)[0].view(4, len(slots), *shape[1:])
    mine, theirs = [b.clone() for b in bufs], [b.clone() for b in bufs]
    kt.scatter(mine, slots, src, block_slots=16)
    kt.torch_scatter(theirs, slots, src)
    assert all(torch.equal(bits(a), bits(b)) for a, b in zip(mine, theirs))
    untouched = torch.ones(shape[0], dtype=torch.bool)
    untouched[slots] = False
    assert all(torch.equal(bits(a[untouched]), bits(b[untouched])) for a, b in zip(mine, bufs))


def test_nan_payloads_survive_the_round_trip():
    buf = torch.full((8, 1, 4), float("nan"), dtype=torch.bfloat16)
    buf.view(torch.int16)[3] = 0x7FC1  # a NaN with a payload
    slots = torch.tensor([3, 5], dtype=torch.int64)
    out = torch.empty((1, 2, 1, 4), dtype=torch.bfloat16)
    kt.gather([buf], slots, out)
    assert torch.equal(out.view(torch.int16)[0, 0], buf.view(torch.int16)[3])


def test_empty_slot_list_is_a_no_op():
    bufs = pool((10, 1, 8), torch.float16, 2, seed=0)
    before = [b.clone() for b in bufs]
    out = torch.empty((2, 0, 1, 8), dtype=torch.float16)
    kt.gather(bufs, torch.empty(0, dtype=torch.int64), out)
    kt.scatter(bufs, torch.empty(0, dtype=torch.int64), out)
    assert all(torch.equal(bits(a), bits(b)) for a, b in zip(bufs, before))


@pytest.mark.parametrize(
    "slots, fragment",
    [
        (torch.tensor([1, 4, 1]), "duplicates"),
        (torch.tensor([0, 10]), "out of range"),
        (torch.tensor([-1]), "out of range"),
        (torch.tensor([1, 2], dtype=torch.int32), "int64"),
    ],
)
def test_bad_slot_lists_are_rejected(slots, fragment):
    bufs = pool((10, 1, 8), torch.float16, 2, seed=0)
    out = torch.empty((2, len(slots), 1, 8), dtype=torch.float16)
    for fn in (kt.gather, kt.scatter, kt.torch_gather):
        with pytest.raises(ValueError, match=fragment):
            fn(bufs, slots.to(torch.int64) if fragment != "int64" else slots, out)


def test_mismatched_staging_is_rejected():
    bufs = pool((10, 1, 8), torch.float16, 2, seed=0)
    with pytest.raises(ValueError, match="staging"):
        kt.gather(bufs, torch.tensor([1, 2]), torch.empty((2, 3, 1, 8), dtype=torch.float16))
    with pytest.raises(ValueError, match="staging"):
        kt.gather(bufs, torch.tensor([1, 2]), torch.empty((2, 2, 1, 8), dtype=torch.bfloat16))


@pytest.mark.parametrize("dtype", DTYPES)
def test_copy_rows_between_two_pools_matches_torch(dtype):
    """The HiCache shape: rows of a device pool to scattered rows of a larger host pool, all
    layers in one launch, and back."""
    device = pool((40, 2, 8), dtype, n_buffers=6, seed=4)
    host_mine = [torch.zeros((100, 2, 8), dtype=dtype) for _ in range(6)]
    host_ref = [h.clone() for h in host_mine]
    src = random_slots(40, 17, seed=5)
    dst = random_slots(100, 17, seed=6)
    kt.copy_rows(device, src, host_mine, dst, block_slots=8)
    kt.torch_copy_rows(device, src, host_ref, dst)
    assert all(torch.equal(bits(a), bits(b)) for a, b in zip(host_mine, host_ref))
    assert all(torch.equal(bits(h[dst]), bits(d[src])) for h, d in zip(host_mine, device))
    # ...and back into fresh device slots: the same bytes come home.
    back = [torch.zeros_like(d) for d in device]
    fresh = random_slots(40, 17, seed=7)
    kt.copy_rows(host_mine, dst, back, fresh)
    assert all(torch.equal(bits(b[fresh]), bits(d[src])) for b, d in zip(back, device))


def test_copy_rows_with_an_unaligned_destination_still_copies_exactly():
    """Staging views of 6-byte rows start off 16-byte boundaries: the kernel must not claim
    alignment it was not given (checked for the PTX in test_kv_transfer_ptx.py)."""
    src = pool((20, 1, 3), torch.float16, n_buffers=3, seed=8)
    staging = torch.zeros((3 * 7 + 1, 1, 3), dtype=torch.float16)[1:].view(3, 7, 1, 3)
    slots = random_slots(20, 7, seed=9)
    dst_bufs = [staging[b] for b in range(3)]
    assert not kt.all_aligned_16(dst_bufs)
    kt.copy_rows(src, slots, dst_bufs, torch.arange(7))
    assert all(torch.equal(bits(staging[b]), bits(src[b][slots])) for b in range(3))


@pytest.mark.parametrize(
    "change, fragment",
    [
        ("fewer_dst", "destination buffers"),
        ("dtype", "dtype"),
        ("row", "bytes"),
        ("lengths", "destination slots"),
    ],
)
def test_copy_rows_rejects_mismatched_pools(change, fragment):
    src = pool((10, 1, 8), torch.float16, 2, seed=0)
    dst = [torch.zeros((12, 1, 8), dtype=torch.float16) for _ in range(2)]
    s, d = torch.tensor([1, 2]), torch.tensor([3, 4])
    if change == "fewer_dst":
        dst = dst[:1]
    elif change == "dtype":
        dst = [x.view(torch.bfloat16) for x in dst]
    elif change == "row":
        dst = [torch.zeros((12, 1, 4), dtype=torch.float16) for _ in range(2)]
    else:
        d = torch.tensor([3])
    for fn in (kt.copy_rows, kt.torch_copy_rows):
        with pytest.raises(ValueError, match=fragment):
            fn(src, s, dst, d)
