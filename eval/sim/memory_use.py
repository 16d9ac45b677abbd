"""Effective memory use: the KV the running requests actually hold, as against what the pool has
allocated, cached or reserved (a request reserves its whole output at admission, SGLang-style,
and pins and idle cache hold memory no running request reads). TokenCake (arXiv 2510.18586)
reports this utilisation for its reserved pool; the workflows figure reports it per policy."""

from __future__ import annotations

from typing import Iterable

from sglang_agent import upstream


def running_kv_tokens(tree_core, running: Iterable) -> int:
    """Tokens of KV the running requests read: their matched GPU prefixes, a node shared by several
    counted once, plus each one's own tokens (the rest of its prompt, computed or reloaded, and the
    output so far). Requests carry `node` (the id of their matched prefix's last node, locked
    while they run), `key` (the prompt), `gpu_cached` and `produced`."""
    seen: set[int] = set()
    shared = own = 0
    root = tree_core.root_node
    for req in running:
        own += len(req.key) - req.gpu_cached + req.produced
        node = upstream.live_node(tree_core, req.node)
        while node is not None and node is not root and node.id not in seen:
            seen.add(node.id)
            shared += len(node.key)
            node = node.parent
    return shared + own
