"""The KV copy kernel compiles for Hopper (sm_90) with 128-bit global loads and stores when the
caller vouches for 16-byte-aligned bases, and falls back to narrower accesses when it cannot,
checked without a GPU by Triton's bundled compiler. The attrs mirror what Triton's JIT
specialises for 16-byte-aligned tensor arguments at launch."""

import importlib.util
import re

import pytest
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

import sglang_agent.kernels


@pytest.fixture
def compiled_kernel(monkeypatch):
    """A private copy of the kernel module decorated for compilation, not for the interpreter
    (other tests run the shared module under TRITON_INTERPRET=1)."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    path = sglang_agent.kernels.__path__[0] + "/kv_transfer_kernel.py"
    spec = importlib.util.spec_from_file_location("kv_transfer_kernel_for_ptx", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.kv_copy_rows_kernel



def sm90_accesses(kernel, aligned: bool) -> set[str]:
    source = ASTSource(
        fn=kernel,
        signature={"src_bases_ptr": "*i64", "src_slots_ptr": "*i64", "dst_bases_ptr": "*i64",
                   "dst_slots_ptr": "*i64", "num_slots": "i32", "WORD": "constexpr",
                   "ROW_WORDS": "constexpr", "BLOCK_SLOTS": "constexpr", "BLOCK_WORDS": "constexpr",
                   "ALIGNED_16": "constexpr"},
        constexprs={"WORD": tl.int64, "ROW_WORDS": 256, "BLOCK_SLOTS": 16, "BLOCK_WORDS": 256,
                    "ALIGNED_16": aligned},
        attrs={(i,): [["tt.divisibility", 16]] for i in range(4)},
    )
    ptx = triton.compile(source, target=GPUTarget("cuda", 90, 32)).asm["ptx"]
    return set(re.findall(r"(?:ld|st)\.global[.\w]*", ptx))


def test_sm90_ptx_uses_vector_accesses_on_aligned_buffers(compiled_kernel):
    accesses = sm90_accesses(compiled_kernel, aligned=True)
    assert "ld.global.v2.b64" in accesses and "st.global.v2.b64" in accesses, accesses


def test_sm90_ptx_makes_no_alignment_claim_it_was_not_given(compiled_kernel):
    accesses = sm90_accesses(compiled_kernel, aligned=False)
    assert not any(".v2." in a or ".v4." in a for a in accesses), accesses
