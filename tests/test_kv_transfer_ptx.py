"""The KV copy kernel compiles for Hopper (sm_90) with 128-bit global loads and stores, checked
without a GPU by Triton's bundled compiler. The attrs mirror what Triton's JIT specialises for
16-byte-aligned tensor arguments at launch."""

import importlib.util
import re

import pytest
import triton
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
    return module.kv_copy_kernel


@pytest.mark.parametrize("to_staging", [True, False])
def test_sm90_ptx_uses_vector_accesses(compiled_kernel, to_staging):
    source = ASTSource(
        fn=compiled_kernel,
        signature={"bases_ptr": "*i64", "slots_ptr": "*i64", "staging_ptr": "*i64", "num_slots": "i32",
                   "ROW_WORDS": "constexpr", "TO_STAGING": "constexpr", "BLOCK_SLOTS": "constexpr",
                   "BLOCK_WORDS": "constexpr"},
        constexprs={"ROW_WORDS": 256, "TO_STAGING": to_staging, "BLOCK_SLOTS": 16, "BLOCK_WORDS": 256},
        attrs={(i,): [["tt.divisibility", 16]] for i in range(3)},
    )
    ptx = triton.compile(source, target=GPUTarget("cuda", 90, 32)).asm["ptx"]
    accesses = set(re.findall(r"(?:ld|st)\.global[.\w]*", ptx))
    assert "ld.global.v2.b64" in accesses and "st.global.v2.b64" in accesses, accesses
