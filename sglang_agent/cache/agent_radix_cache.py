"""AgentRadixCache: SGLang 0.5.23's UnifiedRadixCache with agent sessions, TTL pins and a
workflow-aware eviction order.

Why UnifiedRadixCache: it is the tree the 0.5.23 scheduler builds by default (RadixCache is only
kept for simulation and tests), and HiCache (host tier, load_back) lives inside it, which the
offload work builds on. We select SGLang's *Python* TreeCore through the tree-core registry
(backend "agent") because our per-node fields and split hook need Python nodes; the Rust core
is a drop-in speedup upstream, not a behaviour change.

Two pin modes (`--agent-pin-mode`):
- "soft": a pin is an eviction *order*: a pinned node stays evictable but sorts after every
  unpinned one, closest expiry first (policy/eviction.py). A request that cannot be admitted
  otherwise takes the pins closest to expiry; an expired pin is an ordinary LRU node.
- "hard" (Continuum's semantics): a pin also holds an SGLang tree lock on the session's path,
  so its tokens count as protected, not evictable, and admission waits for them like for a
  running request. Expired pins are released by a sweep that runs before every capacity read
  (`evictable_size`, `evict`), and `release_pins_for_admission` releases the pins closest to
  expiry when nothing else can free memory, so pins never deadlock admission.
"""

from __future__ import annotations

import dataclasses
import functools
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
StepListener = Callable[[], None]
PIN_MODES = ("soft", "hard")


class AgentRadixCache(UnifiedRadixCache):
    def __init__(self, params: CacheInitParams, clock: Clock = time.perf_counter, pin_mode: str = "soft"):
        if pin_mode not in PIN_MODES:
            raise ValueError(f"pin_mode must be one of {PIN_MODES}, got {pin_mode!r}")
        agent_tree_core.register()
        params = dataclasses.replace(params, tree_core_backend=agent_tree_core.TREE_CORE_NAME)
        self.clock = clock
        self.pin_mode = pin_mode
        self.turn_listeners: list[TurnListener] = []
        # Called once per scheduler step after HiCache's own polling (the host tier's timers).
        self.step_listeners: list[StepListener] = []
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
        # session -> its pin's deadline; lets expired pins be dropped without visiting nodes
        self._pin_deadline: dict[str, float] = {}
        # hard mode: session -> the tree lock that keeps its pinned path protected
        self._pin_locks: dict[str, object] = {}
        # session -> KVFlow steps until its agent runs next (sessions of declared workflows)
        self._session_steps: dict[str, int] = {}
        # offloaded session -> (node, host lock) keeping its host copy from host-LRU eviction
        self._host_holds: dict[str, tuple[int, object]] = {}

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
        self.release_host(session_id)
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
        self._pin_deadline[session_id] = ttl_deadline
        if self.pin_mode == "hard" and tokens:
            self._pin_locks[session_id] = self.lock(self._session_last_node[session_id])
        return tokens

    def set_pin_deadline(self, session_id: str, ttl_deadline: float) -> None:
        for node in self._pinned_nodes.get(session_id, ()):
            node.pin_deadlines[session_id] = ttl_deadline
        if session_id in self._pinned_nodes:
            self._pin_deadline[session_id] = ttl_deadline

    def unpin_session(self, session_id: str) -> None:
        for node in self._pinned_nodes.pop(session_id, ()):
            node.pin_deadlines.pop(session_id, None)
        self._pin_deadline.pop(session_id, None)
        lock = self._pin_locks.pop(session_id, None)
        if lock is not None:
            self.unlock(lock)

    def release_pins_for_admission(self, needed_tokens: int) -> list[str]:
        """Hard mode, when a waiting request cannot be admitted and nothing running will free
        memory: release pins closest to expiry first until `needed_tokens` could be evicted."""
        released = []
        for session_id, _ in sorted(self._pin_deadline.items(), key=lambda item: item[1]):
            if self.pin_mode != "hard" or super().evictable_size() + self.token_to_kv_pool_allocator.available_size() >= needed_tokens:
                break
            self.unpin_session(session_id)
            released.append(session_id)
        return released

    # Capacity reads sweep expired hard pins first, so an expired pin costs nothing.
    def evictable_size(self) -> int:
        if self._pin_locks:
            self._live_pin_sessions(self.clock())
        return super().evictable_size()

    def evict(self, params):
        if self._pin_locks:
            self._live_pin_sessions(self.clock())
        return super().evict(params)

    def evict_for_alloc(self, params, **kwargs):
        if self._pin_locks:
            self._live_pin_sessions(self.clock())
        return super().evict_for_alloc(params, **kwargs)

    def _live_pin_sessions(self, now: float) -> list[str]:
        """Sessions whose pin is live; expired pins are dropped here (they already cost nothing
        in the eviction order, this only forgets them)."""
        expired = [s for s, deadline in self._pin_deadline.items() if not is_pin_live(deadline, now)]
        for session_id in expired:
            self.unpin_session(session_id)
        return list(self._pin_deadline)

    def _live_pinned_nodes(self, now: float) -> dict[AgentTreeNode, int]:
        """Every GPU-resident node under a live pin, once, with its token count."""
        tokens: dict[AgentTreeNode, int] = {}
        for session_id in self._live_pin_sessions(now):
            for node in self._pinned_nodes[session_id]:
                if node not in tokens:
                    tokens[node] = self._device_tokens(node)
        return tokens

    def pinned_tokens(self, now: Optional[float] = None) -> int:
        now = self.clock() if now is None else now
        return sum(self._live_pinned_nodes(now).values())

    def session_pinned_tokens(self, session_id: str, now: Optional[float] = None) -> int:
        now = self.clock() if now is None else now
        return sum(
            self._device_tokens(n)
            for n in self._pinned_nodes.get(session_id, ())
            if is_pin_live(n.pin_deadlines.get(session_id), now)
        )

    def live_pin_sessions(self, now: Optional[float] = None) -> list[str]:
        now = self.clock() if now is None else now
        return [s for s in self._live_pin_sessions(now) if self.session_pinned_tokens(s, now) > 0]

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
        for session_id in self._live_pin_sessions(now):
            live = [n for n in self._pinned_nodes[session_id] if self._device_tokens(n)]
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

    # ---- host tier (SGLang's HiCache, --enable-hierarchical-cache) ---------------------------
    def has_host_tier(self) -> bool:
        return getattr(self, "cache_controller", None) is not None

    def check_hicache_events(self) -> None:
        """SGLang calls this once per scheduler step when HiCache is on: after its own polling
        (write/load acks), run the agent host tier's due work (offload retries, prefetches)."""
        super().check_hicache_events()
        for listener in self.step_listeners:
            listener()

    def offload_session(self, session_id: str) -> tuple[int, bool]:
        """Move the session's latest path from GPU to host memory, deepest node first. A node is
        demoted (device slots freed, host copy kept in the tree) once its host copy is written;
        write-through has usually written it at insert. A node whose copy is still being written
        is left for a later call; a node with no copy gets one queued (never waited for here).
        Nodes that running requests lock, or that have GPU-resident children of other paths,
        stay on the GPU, and so do their ancestors. Returns (GPU tokens freed, done)."""
        if not self.has_host_tier():
            return 0, True
        from sglang.srt.mem_cache.unified_cache.component_type import ComponentType

        tracker = {ct: 0 for ct in self.tree_components}
        done = True
        for node in list(self._path(self._live_node(self._session_last_node.get(session_id)))):
            if node.evicted:
                continue  # already host-only (or dropped): its ancestors may still be on GPU
            if not self.tree_core._is_device_leaf(node):
                # Locked by its host copy still being written: retry later. Locked by a request,
                # or holding other paths' GPU-resident children: it stays.
                done = node.id not in self.ongoing_write_through
                break
            if not node.backuped:
                self._execute_and_commit_kv_backup(self.tree_core.build_backup_kv_action(node.id))
                done = False  # demoted on a later call, once the copy is acknowledged
                break
            self._demote(node.id, tracker)
        return tracker[ComponentType.FULL], done

    def prefetch_session(self, session_id: str) -> int:
        """Queue the reload of the session's host-only path to GPU (SGLang's load_back: slots
        are allocated now, the copy runs on HiCache's load stream with the next prefill batch,
        whose forward waits for it layer by layer). Returns tokens queued (0: nothing to load,
        or no room on the GPU)."""
        node = self._live_node(self._session_last_node.get(session_id))
        if node is None or not self.has_host_tier() or not node.evicted:
            self.release_host(session_id)
            return 0
        before = self.session_host_tokens(session_id)
        loaded = self.load_back(node.id)  # holds the host copy itself until the copy is done
        self.release_host(session_id)
        return before - self.session_host_tokens(session_id) if loaded else 0

    def hold_host(self, session_id: str) -> bool:
        """Keep the session's host copy from host-LRU eviction until release_host (an offloaded
        session's KV lives only there)."""
        node = self._live_node(self._session_last_node.get(session_id))
        if node is None or not self.has_host_tier() or session_id in self._host_holds or not node.backuped:
            return False
        self._host_holds[session_id] = (node.id, self.inc_host_lock_ref(node.id).to_dec_params())
        return True

    def release_host(self, session_id: str) -> None:
        hold = self._host_holds.pop(session_id, None)
        if hold is not None:
            self.dec_host_lock_ref(*hold)

    def session_host_tokens(self, session_id: str) -> int:
        """Tokens of the session's latest path that sit only in host memory."""
        node = self._live_node(self._session_last_node.get(session_id))
        return sum(len(n.key) for n in self._path(node) if n.evicted and n.backuped)


def agent_radix_cache_factory(ctx) -> AgentRadixCache:
    """`--radix-cache-backend agent`: SGLang's own builder with our class in place, plus the
    session controller that the hint API drives (configured by the --agent-* args)."""
    from sglang.srt.mem_cache.registry import create_unified_radix_cache

    from sglang_agent.config import AgentServerArgs
    from sglang_agent.controller import AgentController

    args = AgentServerArgs.from_env()
    cache_class = functools.partial(AgentRadixCache, pin_mode=args.pin_mode)
    cache = create_unified_radix_cache(ctx, cache_class=cache_class)
    host_tier = None
    if cache.has_host_tier():  # --enable-hierarchical-cache
        from sglang_agent.cache.host_tier import HiCacheHostTier

        host_tier = HiCacheHostTier(cache, cache.clock, args.host_bandwidth_gbps)
    cache.agent_controller = AgentController(cache, args, cache.clock, host_tier=host_tier)
    cache.agent_metrics = None
    if getattr(ctx.server_args, "enable_metrics", False):
        from sglang_agent.server import metrics

        cache.agent_metrics = metrics.attach(cache, cache.agent_controller)
    return cache
