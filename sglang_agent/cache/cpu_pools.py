"""SGLang KV pools on CPU tensors, sized in tokens: what the eval simulator, the radix benchmark
and the tests build an AgentRadixCache on (no server, no GPU). The KV rows are tiny; only the
slot accounting matters there."""

from __future__ import annotations

import torch
from sglang.srt.mem_cache.allocator import TokenToKVPoolAllocator
from sglang.srt.mem_cache.cache_init_params import CacheInitParams
from sglang.srt.mem_cache.memory_pool import MHATokenToKVPool, ReqToTokenPool
from sglang.srt.mem_cache.unified_cache.component_type import ComponentType


def cpu_cache_params(pool_tokens: int, tree_core_backend: str = "python") -> CacheInitParams:
    kv = MHATokenToKVPool(
        size=pool_tokens, page_size=1, dtype=torch.bfloat16, head_num=1, head_dim=4,
        layer_num=1, device="cpu", enable_memory_saver=False,
    )
    allocator = TokenToKVPoolAllocator(size=pool_tokens, dtype=torch.bfloat16, device="cpu", kvcache=kv, need_sort=False)
    # Unused by our callers, which manage their own slots; the cache requires one.
    req_to_token = ReqToTokenPool(size=4, max_context_len=16, device="cpu", enable_memory_saver=False)
    return CacheInitParams(
        disable=False, req_to_token_pool=req_to_token, token_to_kv_pool_allocator=allocator,
        page_size=1, tree_components=(ComponentType.FULL,), tree_core_backend=tree_core_backend,
    )
