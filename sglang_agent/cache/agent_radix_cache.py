"""AgentRadixCache: SGLang 0.5.23's UnifiedRadixCache with agent sessions, TTL pins and a
workflow-aware eviction order.

Why UnifiedRadixCache: it is the tree the 0.5.23 scheduler builds by default (RadixCache is only
kept for simulation and tests), and HiCache (host tier, load_back) lives inside it, which the
offload work builds on. We select SGLang's *Python* TreeCore through the tree-core registry
(backend "agent") because our per-node fields and split hook need Python nodes; the Rust core
is a drop-in speedup upstream, not a behaviour change.

Pins are an eviction *order*, not a lock: a pinned node stays evictable but sorts after every
unpinned one (see policy/eviction.py). So pins never deadlock or starve admission: a request
that cannot be admitted otherwise takes the pins closest to expiry first, and an expired pin
is an ordinary LRU node without any sweep.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Callable, Iterable, Optional

from sglang.srt.mem_cache.cache_init_params import CacheInitParams
from sglang.srt.mem_cache.unified_radix_cache import UnifiedRadixCache

from sglang_agent.cache import tree_core as agent_tree_core
from sglang_agent.cache.eviction import AgentEvictionStrategy
from sglang_agent.cache.node import AgentTreeNode
from sglang_agent.policy import Clock
from sglang_agent.policy.eviction import is_pin_live
from sglang_agent.policy.pins import PinHolding
from sglang_agent.policy.workflow import node_steps

if TYPE_CHECKING:
    from sglang.srt.managers.schedule_batch import Req

TurnListener = Callable[["Req", bool], None]


class AgentRadixCache(UnifiedRadixCache):
    def __init__(self, params: CacheInitParams, clock: Clock = time.perf_counter):
        agent_tree_core.register()
        params = dataclasses.replace(params, tree_core_backend=agent_tree_core.TREE_CORE_NAME)
        self.clock = clock
        self.turn_listeners: list[TurnListener] = []
        super().__init__(params)
        self.tree_core.eviction_strategy = AgentEvictionStrategy(self.tree_core.eviction_strategy, clock)
        self.tree_core.on_split = self._on_split

    # ---- lifecycle -------------------------------------------------------------------------
    def reset(self) -> None:
        super().reset()
        # session -> last node of its latest finished turn
        self._session_last_node: dict[str, int] = {}
        # session -> nodes it owns / pins (kept complete across splits by _on_split)
        self._session_nodes: dict[str, set[AgentTreeNode]] = {}
        self._pinned_nodes: dict[str, set[AgentTreeNode]] = {}
        # session -> KVFlow steps until its agent runs next (sessions of declared workflows)
        self._session_steps: dict[str, int] = {}

    def _on_split(self, new_parent: AgentTreeNode, child: AgentTreeNode) -> None:
        for session_id in child.session_ids:
            self._session_nodes.setdefault(session_id, set()).add(new_parent)
        for session_id in child.pin_deadlines:
            self._pinned_nodes.setdefault(session_id, set()).add(new_parent)

    def on_release(self, req: "Req", *, checkpointed: bool) -> None:
        super().on_release(req, checkpointed=checkpointed)
        if req.finished():
            for listener in self.turn_listeners:
                listener(req, checkpointed)

    # ---- sessions --------------------------------------------------------------------------
    def _live_node(self, node_id: Optional[int]) -> Optional[AgentTreeNode]:
        node = self.tree_core._node_arena.get(node_id) if node_id is not None else None
        return None if node is None or node is self.tree_core.root_node else node

    def _device_tokens(self, node: AgentTreeNode) -> int:
        """Tokens of `node` on GPU; 0 once eviction has taken it out of the tree."""
        return node.device_tokens if self.tree_core._node_arena.get(node.id) is node else 0

    def _path(self, node: Optional[AgentTreeNode]) -> Iterable[AgentTreeNode]:
        root = self.tree_core.root_node
        while node is not None and node is not root:
            yield node
            node = node.parent

    def record_turn(self, session_id: str, last_node_id: int) -> int:
        """The session's latest turn ended on `last_node_id`; returns its cached path length."""
        self._session_last_node[session_id] = last_node_id
        arena = self.tree_core._node_arena
        # Forget nodes the tree has deleted since the last turn (keeps the index bounded).
        owned = {n for n in self._session_nodes.get(session_id, ()) if arena.get(n.id) is n}
        self._session_nodes[session_id] = owned
        tokens = 0
        for node in self._path(self._live_node(last_node_id)):
            node.session_ids.add(session_id)
            node.steps_to_execution = node_steps(self._session_steps, node.session_ids)
            owned.add(node)
            tokens += node.device_tokens
        return tokens

    def set_session_steps(self, steps: dict[str, Optional[int]]) -> int:
        """New steps-to-execution for some sessions; re-scores only the nodes they own
        (incremental: the rest of the tree is not visited). Returns nodes re-scored."""
        touched: set[AgentTreeNode] = set()
        for session_id, value in steps.items():
            if value is None:
                self._session_steps.pop(session_id, None)
            else:
                self._session_steps[session_id] = value
            touched.update(self._session_nodes.get(session_id, ()))
        for node in touched:
            node.steps_to_execution = node_steps(self._session_steps, node.session_ids)
        return len(touched)

    def session_path_tokens(self, session_id: str) -> int:
        node = self._live_node(self._session_last_node.get(session_id))
        return sum(n.device_tokens for n in self._path(node))

    def close_agent_session(self, session_id: str) -> None:
        self.unpin_session(session_id)
        self._session_steps.pop(session_id, None)
        for node in self._session_nodes.pop(session_id, ()):
            node.session_ids.discard(session_id)
            node.steps_to_execution = node_steps(self._session_steps, node.session_ids)
        self._session_last_node.pop(session_id, None)

    # ---- pins ------------------------------------------------------------------------------
    def pin_session(self, session_id: str, ttl_deadline: float) -> int:
        """Pin the path of the session's latest turn until `ttl_deadline`; returns pinned tokens."""
        self.unpin_session(session_id)
        pinned = self._pinned_nodes.setdefault(session_id, set())
        tokens = 0
        for node in self._path(self._live_node(self._session_last_node.get(session_id))):
            if node.device_tokens == 0:
                continue  # only GPU-resident KV is pinned
            node.pin_deadlines[session_id] = ttl_deadline
            pinned.add(node)
            tokens += node.device_tokens
        return tokens

    def set_pin_deadline(self, session_id: str, ttl_deadline: float) -> None:
        for node in self._pinned_nodes.get(session_id, ()):
            node.pin_deadlines[session_id] = ttl_deadline

    def unpin_session(self, session_id: str) -> None:
        for node in self._pinned_nodes.pop(session_id, ()):
            node.pin_deadlines.pop(session_id, None)

    def _live_pinned_nodes(self, now: float) -> set[AgentTreeNode]:
        return {
            node
            for nodes in self._pinned_nodes.values()
            for node in nodes
            if self._device_tokens(node) and is_pin_live(node.ttl_deadline, now)
        }

    def pinned_tokens(self, now: Optional[float] = None) -> int:
        now = self.clock() if now is None else now
        return sum(node.device_tokens for node in self._live_pinned_nodes(now))

    def session_pinned_tokens(self, session_id: str, now: Optional[float] = None) -> int:
        now = self.clock() if now is None else now
        return sum(
            self._device_tokens(n)
            for n in self._pinned_nodes.get(session_id, ())
            if is_pin_live(n.pin_deadlines.get(session_id), now)
        )

    def live_pin_sessions(self, now: Optional[float] = None) -> list[str]:
        now = self.clock() if now is None else now
        return [s for s in self._pinned_nodes if self.session_pinned_tokens(s, now) > 0]

    def unpinned_path_tokens(self, session_id: str, now: Optional[float] = None) -> int:
        """Tokens a pin of this session's latest path would add to the pinned total."""
        now = self.clock() if now is None else now
        node = self._live_node(self._session_last_node.get(session_id))
        return sum(
            n.device_tokens
            for n in self._path(node)
            if not is_pin_live(
                max((d for s, d in n.pin_deadlines.items() if s != session_id), default=None), now
            )
        )

    def pin_holdings(self, now: Optional[float] = None) -> list[PinHolding]:
        """Each live pin with the tokens only it keeps pinned (what dropping it frees)."""
        now = self.clock() if now is None else now
        holdings = []
        for session_id, nodes in self._pinned_nodes.items():
            live = [n for n in nodes if self._device_tokens(n) and is_pin_live(n.pin_deadlines.get(session_id), now)]
            if not live:
                continue
            exclusive = sum(
                self._device_tokens(n)
                for n in live
                if not any(is_pin_live(d, now) for s, d in n.pin_deadlines.items() if s != session_id)
            )
            deadline = max(n.pin_deadlines[session_id] for n in live)
            holdings.append(PinHolding(session_id, deadline, exclusive))
        return holdings

    def pool_size_tokens(self) -> int:
        return self.token_to_kv_pool_allocator.size


def agent_radix_cache_factory(ctx) -> AgentRadixCache:
    """`--radix-cache-backend agent`: SGLang's own builder with our class in place, plus the
    session controller that the hint API drives (configured by the --agent-* args)."""
    from sglang.srt.mem_cache.registry import create_unified_radix_cache

    from sglang_agent.config import AgentServerArgs
    from sglang_agent.controller import AgentController

    cache = create_unified_radix_cache(ctx, cache_class=AgentRadixCache)
    cache.agent_controller = AgentController(cache, AgentServerArgs.from_env(), cache.clock)
    return cache
