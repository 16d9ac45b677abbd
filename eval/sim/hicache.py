"""SGLang's HiCache (write-through host tier) in the simulator: every prefix the GPU tree caches
is also written to host memory (a pool of 2x the device pool by default, SGLang's
`--hicache-ratio`), and a request whose prefix left the GPU but is still in host
memory reloads it instead of recomputing it. The host side is its own
radix tree over a host-sized pool with LRU eviction, as upstream's host pool is.

Copies share the GPU's host link (eval/sim/link.py, one FIFO per direction): every write-through
backup takes GPU->host link time (it costs no compute, but a backlog delays our offloads on the
same direction, never a reload); a reload queues on the host->GPU direction behind every copy
issued before it, and is loaded layer by layer overlapped with the batch's prefill, as upstream's
`load_back` with layer-wise synchronisation does: the batch ends at max(compute, the copy) plus one
layer's share of the shorter, not compute + copy (eval/sim/layerwise.py). Our offload tier's
reloads go the same way (the server uses the same load_back).

Not modelled: upstream locks a node on the GPU while its backup is in flight (it cannot be evicted
before the copy lands); here it is evictable at once (and could be reloaded before its backup
landed). At ~51 GB/s a turn's backup lands within milliseconds unless the GPU->host queue is long,
so this frees GPU memory a few ms early, in HiCache's favour and ours alike."""

from __future__ import annotations

from array import array

import torch
from sglang.srt.mem_cache.base_prefix_cache import EvictParams, InsertParams, MatchPrefixParams
from sglang.srt.mem_cache.radix_cache import RadixKey
from sglang.srt.mem_cache.unified_radix_cache import UnifiedRadixCache

from sglang_agent.cache.cpu_pools import cpu_cache_params


class SimHiCache:
    def __init__(self, host_pool_tokens: int):
        # Ours' offloaded sessions hold their paths in this same tree (hold/release), as the server
        # holds an offloaded session's host copy: one pool, shared prefixes stored once.
        self.tree = UnifiedRadixCache(cpu_cache_params(host_pool_tokens, tree_core_backend="python"))
        self.allocator = self.tree.token_to_kv_pool_allocator
        self.reloaded_tokens = 0

    def match(self, key: array) -> int:
        """Tokens of `key`'s prefix that host memory holds (refreshes their recency)."""
        return self.tree.match_prefix(MatchPrefixParams(key=RadixKey(key))).device_prefix_len

    def hold(self, key: array) -> tuple[object, int, int]:
        """Keep `key`'s path in host memory for an offloaded session (the server's host lock on its
        node), written first where write-through has not. Returns (lock, tokens held, written)."""
        written = self.write(key)
        match = self.tree.match_prefix(MatchPrefixParams(key=RadixKey(key)))
        held = match.device_prefix_len
        return (self.tree.lock(match.last_device_node) if held else None), held, written

    def release(self, lock: object) -> None:
        self.tree.unlock(lock)

    def locked_tokens(self) -> int:
        """Host tokens offloaded sessions hold (host LRU cannot evict them)."""
        return self.tree.protected_size()

    def write(self, key: array) -> int:
        """Write-through of a finished turn's cached prefix; returns the tokens copied to host."""
        match = self.tree.match_prefix(MatchPrefixParams(key=RadixKey(key)))
        have = match.device_prefix_len
        new = len(key) - have
        if new <= 0:
            return 0
        lock = self.tree.lock(match.last_device_node) if have else None  # not evicted under us
        short = new - self.allocator.available_size()
        if short > 0:
            self.tree.evict(EvictParams(num_tokens=short))
        if self.allocator.available_size() < new:
            self.tree.unlock(lock)
            return 0  # host memory full of locked paths: this turn is not written
        prefix = self.tree.path_device_indices(match.last_device_node)[:have] if have else torch.empty(0, dtype=torch.int64)
        value = torch.cat([prefix.to(torch.int64), self.allocator.alloc(new).to(torch.int64)])
        self.tree.insert(InsertParams(key=RadixKey(key), value=value, prev_prefix_len=have))
        self.tree.unlock(lock)
        return new
