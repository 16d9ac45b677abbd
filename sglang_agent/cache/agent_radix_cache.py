"""AgentRadixCache: SGLang 0.5.23's UnifiedRadixCache with agent sessions, TTL pins and a
workflow-aware eviction order. It is the mechanism behind the controller's `SessionKV` protocol
and knows nothing of hints, tool calls or policies beyond the eviction key.

Why UnifiedRadixCache: it is the tree the 0.5.23 scheduler builds by default, and HiCache (host
tier, load_back) lives inside it, which the offload work builds on. It runs on SGLang's Python
TreeCore (registered as tree-core backend "agent", making AgentTreeNodes): the per-node pin and
steps state and the split hook need Python nodes (eval/bench_radix.py measures the price against
the default native core).

Two pin modes (`--agent-pin-mode`):
- "soft": a pin is an eviction *order*: a pinned node stays evictable but sorts after every
  unpinned one, closest expiry first (policy/eviction.py).
- "hard" (Continuum's semantics): a pin also holds an SGLang tree lock on the session's path, so
  its tokens count as protected, not evictable, and admission waits for them like for a running
  request. Pins only end at a step-clock tick (`expire_pins`), on release, or when the
  controller makes them give way (`release_pins`: for the running batch's decode, for a queue
  that nothing else can unblock, or for a head of the queue that waited the stall bound for them).
Every per-node field is O(1) to read however many sessions share the node.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import time
from array import array
from typing import Callable, Iterable, Iterator, Optional

from sglang.srt.mem_cache.cache_init_params import CacheInitParams
from sglang.srt.mem_cache.radix_cache import RadixKey
from sglang.srt.mem_cache.unified_cache.component_type import ComponentType
from sglang.srt.mem_cache.unified_radix_cache import UnifiedRadixCache

from sglang_agent import upstream
from sglang_agent.cache.eviction import AgentEvictionStrategy
from sglang_agent.cache.node import AgentTreeNode
from sglang_agent.policy import Clock
from sglang_agent.policy.pins import PinHolding
from sglang_agent.policy.workflow import WorkflowPace

TREE_CORE_NAME = "agent"
PIN_MODES = ("soft", "hard")


class RequestListener:
    """Told when a request leaves the tree: finished (`turn_finished`) or not (`request_dropped`)."""

    def turn_finished(self, req) -> None: ...
    def request_dropped(self, rid: str) -> None: ...
    def cache_reset(self) -> None: ...


class AgentRadixCache(UnifiedRadixCache):
    def __init__(self, params: CacheInitParams, clock: Clock = time.perf_counter, pin_mode: str = "soft",
                 pace: Optional[WorkflowPace] = None):
        if pin_mode not in PIN_MODES:
            raise ValueError(f"pin_mode must be one of {PIN_MODES}, got {pin_mode!r}")
        upstream.register_tree_core(TREE_CORE_NAME, AgentTreeNode)
        params = dataclasses.replace(params, tree_core_backend=TREE_CORE_NAME)
        self.clock = clock
        self.pin_mode = pin_mode
        self.pace = pace or WorkflowPace()
        self.listener: Optional[RequestListener] = None  # set by the composition root (backend.py)
        # Called once per scheduler step after HiCache's own polling (a host tier's copies).
        self.step_listeners: list[Callable[[], None]] = []
        super().__init__(params)
        self.tree_core.eviction_strategy = AgentEvictionStrategy(
            self.tree_core.eviction_strategy, clock, self.pace, upstream.lru_counter)
        self.tree_core.on_split = self._on_split

    # ---- lifecycle -----------------------------------------------------------------------------
    def reset(self) -> None:
        super().reset()
        self._session_last_node: dict[str, int] = {}  # session -> last node of its latest turn
        self._anchor_nodes: dict[str, list[AgentTreeNode]] = {}  # session -> nodes with its resume mark
        # Pins: session -> deadline, the nodes it pins (kept complete across splits), its tree lock.
        self._pin_deadline: dict[str, float] = {}
        self._pinned_nodes: dict[str, set[AgentTreeNode]] = {}
        self._pin_locks: dict[str, object] = {}
        self._pin_count: dict[AgentTreeNode, int] = {}  # node -> pins through it (pinned tokens, once)
        self._pinned_total = 0  # hard mode: sum of device tokens of pinned nodes (locked: it cannot drift)
        # (deadline, seq, session) of every pin, soonest first; entries a later pin or unpin made
        # stale are skipped when met. Expiry and "closest to expiry first" read it in O(k log P).
        self._pin_heap: list[tuple[float, int, str]] = []
        self._pin_seq = itertools.count()
        # Workflow sessions: steps until their agent runs, and the nodes carrying that value.
        self._session_steps: dict[str, int] = {}
        self._step_nodes: dict[str, set[AgentTreeNode]] = {}
        # Sessions on a workflow's critical path (reservation) and the nodes carrying their mark.
        self._critical_nodes: dict[str, set[AgentTreeNode]] = {}
        # Offloaded session -> (node, host lock) keeping its host copy from host-LRU eviction.
        self._host_holds: dict[str, tuple[int, object]] = {}
        listener = getattr(self, "listener", None)
        if listener is not None:
            listener.cache_reset()

    def _on_split(self, new_parent: AgentTreeNode, child: AgentTreeNode) -> None:
        for session_id in child.pin_deadlines:
            self._pinned_nodes.setdefault(session_id, set()).add(new_parent)
        if child in self._pin_count:
            self._pin_count[new_parent] = self._pin_count[child]
        for session_id in child.step_sessions:
            self._step_nodes.setdefault(session_id, set()).add(new_parent)
        for session_id in child.critical_sessions:
            self._critical_nodes[session_id].add(new_parent)
        for session_id in child.resume_anchors:
            self._anchor_nodes[session_id].append(new_parent)

    # Requests leaving the tree: every way ends in exactly one of these two.
    def on_release(self, req, *, checkpointed: bool) -> None:
        super().on_release(req, checkpointed=checkpointed)
        if req.finished() and self.listener is not None:
            self.listener.turn_finished(req)

    def finish(self, handle, outcome) -> None:
        super().finish(handle, outcome)
        if self.listener is not None and outcome.name != "SUCCESS":
            self.listener.request_dropped(handle.rid)

    # ---- sessions ------------------------------------------------------------------------------
    def _node(self, node_id: Optional[int]) -> Optional[AgentTreeNode]:
        node = upstream.live_node(self.tree_core, node_id)
        return None if node is None or node is self.tree_core.root_node else node

    def _device_tokens(self, node: AgentTreeNode) -> int:
        """Tokens of `node` on the GPU; 0 once eviction has taken it out of the tree."""
        return node.device_tokens if upstream.live_node(self.tree_core, node.id) is node else 0

    def _path(self, session_id: str) -> Iterable[AgentTreeNode]:
        """The nodes of the session's latest turn, deepest first (the one walk over a path)."""
        node = self._node(self._session_last_node.get(session_id))
        root = self.tree_core.root_node
        while node is not None and node is not root:
            yield node
            node = node.parent

    def record_turn(self, session_id: str, last_node_id: int) -> None:
        """The session's latest turn ended on `last_node_id`. O(1) unless the session is a workflow
        agent's (then its steps go onto the new path's nodes)."""
        self._session_last_node[session_id] = last_node_id
        if session_id in self._session_steps:
            self._put_steps(session_id, self._session_steps[session_id])
        if session_id in self._critical_nodes:
            self._put_critical(session_id)

    def set_session_steps(self, steps: dict[str, Optional[int]]) -> int:
        """New steps-to-execution for some sessions; re-scores only the nodes they own. Returns the
        nodes re-scored."""
        touched = 0
        for session_id, value in steps.items():
            if value is None:
                self._session_steps.pop(session_id, None)
                for node in self._step_nodes.pop(session_id, ()):
                    node.set_steps(session_id, None)
                    touched += 1
            else:
                self._session_steps[session_id] = value
                touched += self._put_steps(session_id, value)
        return touched

    def _put_steps(self, session_id: str, value: int) -> int:
        # Nodes the tree has deleted since are forgotten (keeps the index bounded).
        owned = {n for n in self._step_nodes.get(session_id, ()) if upstream.live_node(self.tree_core, n.id) is n}
        owned.update(self._path(session_id))
        self._step_nodes[session_id] = owned
        for node in owned:
            node.set_steps(session_id, value)
        return len(owned)

    def set_session_critical(self, session_id: str, critical: bool) -> int:
        """Mark (or unmark) the session's path as a critical-path agent's: its nodes go last among
        unpinned ones, on this path and on its later turns' paths. Returns the nodes touched."""
        if not critical:
            nodes = self._critical_nodes.pop(session_id, ())
            for node in nodes:
                node.critical_sessions.discard(session_id)
            return len(nodes)
        self._critical_nodes.setdefault(session_id, set())
        return self._put_critical(session_id)

    def critical_session_count(self) -> int:
        return len(self._critical_nodes)

    def _put_critical(self, session_id: str) -> int:
        """The mark moves to the session's latest path (a role prefix moves up to a shared node)."""
        path = set(self._path(session_id))
        for node in self._critical_nodes[session_id] - path:
            node.critical_sessions.discard(session_id)
        for node in path:
            node.critical_sessions.add(session_id)
        self._critical_nodes[session_id] = path
        return len(path)

    def common_prefix_node(self, session_a: str, session_b: str) -> Optional[int]:
        """The deepest node on both sessions' latest paths (their shared prefix), or None."""
        on_b = {id(n) for n in self._path(session_b)}
        for node in self._path(session_a):
            if id(node) in on_b:
                return node.id
        return None

    def last_node(self, session_id: str) -> Optional[AgentTreeNode]:
        """The node the session's latest turn ended on, if the tree still has it."""
        return self._node(self._session_last_node.get(session_id))

    # ---- implicit sessions: the prompt that resumes a turn ---------------------------------------
    def mark_resume_anchor(self, session_id: str, tokens: int) -> bool:
        """An implicit session waits on a tool: a prompt matching `tokens` of its path resumes it.
        Only the nodes at or past that point carry the mark (a shared system prompt's node does
        not: 10k sessions under it cost it nothing). False: its path is no longer in the tree."""
        self.unmark_resume_anchor(session_id)
        path = list(self._path(session_id))  # deepest first
        end, marked, tokens = sum(len(n.key) for n in path), [], max(1, tokens)
        for node in path:
            if end < tokens:
                break
            node.resume_anchors[session_id] = tokens
            marked.append(node)
            end -= len(node.key)
        if marked:
            self._anchor_nodes[session_id] = marked
        return bool(marked)

    def unmark_resume_anchor(self, session_id: str) -> None:
        for node in self._anchor_nodes.pop(session_id, ()):
            node.resume_anchors.pop(session_id, None)

    def resume_anchor_count(self) -> int:
        return len(self._anchor_nodes)

    def _prompt_key(self, prompt) -> Optional[RadixKey]:
        """A prompt as the tree keys it: token ids, or a request as the scheduler received it (its
        LoRA adapter and cache salt namespace the tree, as in SGLang's Req)."""
        ids = getattr(prompt, "input_ids", prompt)
        if ids is None:
            return None
        extra, lora = getattr(prompt, "extra_key", None), getattr(prompt, "lora_id", None)
        if lora is not None:
            extra = (extra or "") + lora
        return RadixKey(ids if isinstance(ids, array) else array("q", ids), extra,
                        is_bigram=self.tree_core.is_eagle, cache_salt=getattr(prompt, "cache_salt", None) or None)

    def session_on_prefix(self, prompt) -> Optional[str]:
        """The implicit session a prompt resumes (token ids, or the request): walking the tree
        along it (GPU and host nodes alike, read-only), the deepest node marked for a session whose
        mark the walk covers (the most specific, then the latest, at that node). A prompt that
        diverges before the previous turn's prompt ended resumes nothing."""
        key = self._prompt_key(prompt)
        if key is None:
            return None
        page = self.page_size
        key = key.page_aligned(page)
        node, matched, found = self.tree_core.root_node, 0, None
        while len(key) > 0:
            child = node.children.get(key.child_key(page))
            if child is None:
                break
            if type(child.key.token_ids) is not type(key.token_ids):  # the tree's own key type
                ids = key.token_ids
                key = RadixKey(list(ids) if isinstance(ids, array) else array("q", ids), key.extra_key,
                               is_bigram=key.is_bigram, cache_salt=key.cache_salt)
            n = child.key.match(key, page_size=page)
            if n == 0:
                break
            best = -1
            for session_id, tokens in child.resume_anchors.items():
                if tokens <= matched + n and tokens >= best:
                    found, best = session_id, tokens
            if n < len(child.key):
                break
            matched += n
            node, key = child, key[n:]
        return found

    def path_tokens(self, session_id: str) -> int:
        return sum(n.device_tokens for n in self._path(session_id))

    def forget_session(self, session_id: str) -> None:
        self.unpin(session_id)
        self.release_host(session_id)
        self.set_session_steps({session_id: None})
        self.set_session_critical(session_id, False)
        self._session_last_node.pop(session_id, None)
        self.unmark_resume_anchor(session_id)

    def access_clock(self) -> float:
        return upstream.lru_counter()

    # ---- capacity ------------------------------------------------------------------------------
    def pool_tokens(self) -> int:
        return self.token_to_kv_pool_allocator.size

    def free_tokens(self) -> int:
        return self.token_to_kv_pool_allocator.available_size() + self.evictable_size()

    # ---- pins ----------------------------------------------------------------------------------
    def pin(self, session_id: str, ttl_deadline: float) -> int:
        """Pin the GPU-resident path of the session's latest turn until `ttl_deadline`; returns the
        tokens pinned (0: nothing of it is on the GPU, and no pin is made)."""
        self.unpin(session_id)
        nodes = {n for n in self._path(session_id) if n.device_tokens}
        if not nodes:
            return 0
        for node in nodes:
            node.add_pin(session_id, ttl_deadline)
            count = self._pin_count.get(node, 0)
            self._pin_count[node] = count + 1
            if count == 0:
                self._pinned_total += node.device_tokens
        self._pinned_nodes[session_id] = nodes
        self._pin_deadline[session_id] = ttl_deadline
        heapq.heappush(self._pin_heap, (ttl_deadline, next(self._pin_seq), session_id))
        if self.pin_mode == "hard":
            self._pin_locks[session_id] = self.lock(self._session_last_node[session_id])
        return sum(n.device_tokens for n in nodes)

    def pin_deadline(self, session_id: str) -> Optional[float]:
        return self._pin_deadline.get(session_id)

    def set_pin_deadline(self, session_id: str, ttl_deadline: float) -> None:
        if session_id not in self._pin_deadline:
            return
        for node in self._pinned_nodes[session_id]:
            node.add_pin(session_id, ttl_deadline)
        self._pin_deadline[session_id] = ttl_deadline
        heapq.heappush(self._pin_heap, (ttl_deadline, next(self._pin_seq), session_id))

    def unpin(self, session_id: str) -> None:
        self._pin_deadline.pop(session_id, None)
        for node in self._pinned_nodes.pop(session_id, ()):
            node.remove_pin(session_id)
            left = self._pin_count.get(node, 0) - 1
            if left > 0:
                self._pin_count[node] = left
            elif self._pin_count.pop(node, None) is not None:
                self._pinned_total -= self._device_tokens(node)
        lock = self._pin_locks.pop(session_id, None)
        if lock is not None:
            self.unlock(lock)

    def _heap_top(self) -> Optional[tuple[float, int, str]]:
        """The soonest live pin's entry, dropping stale ones on the way."""
        heap = self._pin_heap
        while heap and self._pin_deadline.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0] if heap else None

    def expire_pins(self, now: float) -> list[str]:
        """Drop the pins whose TTL has run out (the one sweep; run once per step-clock tick, so every
        TP rank drops the same pins at the same step). O(expired log pins)."""
        expired = []
        while (top := self._heap_top()) is not None and top[0] <= now:
            heapq.heappop(self._pin_heap)
            self.unpin(top[2])
            expired.append(top[2])
        return expired

    def pins_soonest_first(self) -> Iterator[PinHolding]:
        """The pins in order of expiry, each with the tokens only it keeps pinned, computed as they
        are read: a caller that stops after k pins pays O(k log pins), not O(pins)."""
        taken = []
        try:
            while (top := self._heap_top()) is not None:
                taken.append(heapq.heappop(self._pin_heap))
                session_id = top[2]
                yield PinHolding(session_id, top[0], self._exclusive_tokens(session_id))
        finally:
            for entry in taken:
                if self._pin_deadline.get(entry[2]) == entry[0]:
                    heapq.heappush(self._pin_heap, entry)

    def pinned_tokens(self) -> int:
        """GPU tokens under a pin, each counted once however many pins share it. O(1) with hard pins
        (their nodes are locked: neither evicted nor demoted, and a split keeps the sum); soft pins
        can be evicted under them, so their sum is taken afresh."""
        if self.pin_mode == "hard":
            return self._pinned_total
        return sum(self._device_tokens(n) for n in self._pin_count)

    def pin_count(self) -> int:
        return len(self._pin_deadline)

    def unpinned_path_tokens(self, session_id: str) -> int:
        """Tokens a pin of this session's latest path would add to the pinned total."""
        own = self._pinned_nodes.get(session_id, ())
        return sum(n.device_tokens for n in self._path(session_id)
                   if self._pin_count.get(n, 0) - (n in own) <= 0)

    def protectable_tokens(self, session_id: str) -> int:
        """Tokens a hard pin of this path would take out of the evictable pool: those neither locked
        by a running request nor pinned already."""
        return sum(n.device_tokens for n in self._path(session_id) if n.lock_ref == 0)

    def _exclusive_tokens(self, session_id: str) -> int:
        return sum(self._device_tokens(n) for n in self._pinned_nodes[session_id] if self._pin_count.get(n, 0) == 1)

    def pin_holdings(self) -> list[PinHolding]:
        """Each pin with the tokens only it keeps pinned (what releasing it frees)."""
        return [PinHolding(s, self._pin_deadline[s], self._exclusive_tokens(s)) for s in self._pinned_nodes]

    # ---- host tier (SGLang's HiCache, --enable-hierarchical-cache) -----------------------------
    def has_host_tier(self) -> bool:
        return getattr(self, "cache_controller", None) is not None

    def check_hicache_events(self) -> None:
        """SGLang calls this once per scheduler step when HiCache is on: after its own polling
        (write/load acks), run the listeners (the host tier's copies)."""
        super().check_hicache_events()
        for listener in self.step_listeners:
            listener()

    def host_room_tokens(self) -> int:
        """Host-pool tokens an offload may use: free, or held by HiCache's own cache entries that host
        LRU can evict (everything but what offloaded sessions hold)."""
        pool = self.cache_controller.mem_pool_host
        held = sum(self.session_host_tokens(s) for s in self._host_holds)
        return max(0, pool.size - held)

    def unbacked_path_tokens(self, session_id: str) -> int:
        """GPU tokens of the session's path with no host copy yet (what an offload must write)."""
        return sum(n.device_tokens for n in self._path(session_id) if not n.backuped)

    def offload_session(self, session_id: str) -> tuple[int, bool]:
        """Move the session's latest path from GPU to host memory, deepest node first. A node is
        demoted (device slots freed, host copy kept in the tree) once its host copy is written;
        write-through has usually written it at insert. A node whose copy is still being written
        is left for a later call; a node with no copy gets one queued (never waited for here).
        Nodes that running requests lock, or that have GPU-resident children of other paths,
        stay on the GPU, and so do their ancestors. Returns (GPU tokens freed, done)."""
        if not self.has_host_tier():
            return 0, True
        tracker = {ct: 0 for ct in self.tree_components}
        done = True
        for node in list(self._path(session_id)):
            if node.evicted:
                continue  # already host-only (or dropped): its ancestors may still be on the GPU
            if not upstream.is_device_leaf(self.tree_core, node):
                # Locked by its host copy still being written: retry later. Locked by a request,
                # or holding other paths' GPU-resident children: it stays.
                done = node.id not in self.ongoing_write_through
                break
            if not node.backuped:
                upstream.write_host_copy(self, node.id)
                done = False  # demoted on a later call, once the copy is acknowledged
                break
            upstream.demote(self, node.id, tracker)
        return tracker[ComponentType.FULL], done

    def prefetch_session(self, session_id: str, headroom_tokens: int) -> Optional[int]:
        """Reload the session's host-only path to the GPU now (SGLang's load_back, then the copy is
        started at once rather than with the next prefill batch). Returns tokens reloaded, 0 when
        nothing is on host only, None when the reload needs more than `headroom_tokens` (it waits)."""
        node = self._node(self._session_last_node.get(session_id))
        if node is None or not self.has_host_tier() or not node.evicted:
            self.release_host(session_id)
            return 0
        before = self.session_host_tokens(session_id)
        if before > headroom_tokens:
            return None
        loaded = self.load_back(node.id)  # holds the host copy itself until the copy is done
        if loaded:
            self.ready_to_load_host_cache()  # start the copy now: nothing waits for a prefill batch
        self.release_host(session_id)
        return before - self.session_host_tokens(session_id) if loaded else 0

    def hold_host(self, session_id: str) -> bool:
        """Keep the session's host copy from host-LRU eviction until release_host (an offloaded
        session's KV lives only there)."""
        node = self._node(self._session_last_node.get(session_id))
        if node is None or not self.has_host_tier() or session_id in self._host_holds or not node.backuped:
            return False
        self._host_holds[session_id] = (node.id, self.inc_host_lock_ref(node.id).to_dec_params())
        return True

    def release_host(self, session_id: str) -> None:
        hold = self._host_holds.pop(session_id, None)
        if hold is not None and upstream.live_node(self.tree_core, hold[0]) is not None:
            self.dec_host_lock_ref(*hold)

    def session_host_tokens(self, session_id: str) -> int:
        """Tokens of the session's latest path that sit only in host memory."""
        return sum(len(n.key) for n in self._path(session_id) if n.evicted and n.backuped)

    def loads_in_flight(self) -> bool:
        return bool(getattr(self, "ongoing_load_back", None))

    # ---- integrity -----------------------------------------------------------------------------
    def state_digest(self, times: bool = True) -> str:
        """A hash of the tree and our state on it (every node's key, tiers, locks, pins, steps, and
        the sessions' paths): TP ranks that took the same decisions have the same digest. Without
        `times`, pins count by who holds them, not until when (ranks on different clocks compare)."""
        import hashlib

        h = hashlib.sha256()
        nodes = sorted((tuple(n.key), n.id) for n in upstream.all_nodes(self.tree_core) if n is not self.tree_core.root_node)
        by_id = {n.id: n for n in upstream.all_nodes(self.tree_core)}
        for key, node_id in nodes:
            n = by_id[node_id]
            pins = sorted(n.pin_deadlines.items()) if times else sorted(n.pin_deadlines)
            h.update(repr((key, n.evicted, n.backuped, n.lock_ref, pins, n.steps_to_execution,
                           sorted(n.critical_sessions))).encode())
        for session_id in sorted(self._session_last_node):
            node = self.last_node(session_id)
            pin = self._pin_deadline.get(session_id) if times else session_id in self._pin_deadline
            h.update(repr((session_id, None if node is None else tuple(node.key), pin)).encode())
        h.update(repr((self.evictable_size(), self.protected_size(), self.token_to_kv_pool_allocator.available_size())).encode())
        return h.hexdigest()

    def check_integrity(self) -> None:
        """Our invariants over the tree (the property and end-to-end tests run it after every step),
        in the spirit of SGLang's own sanity_check."""
        counts: dict[AgentTreeNode, int] = {}
        for session_id, nodes in self._pinned_nodes.items():
            deadline = self._pin_deadline[session_id]
            for node in nodes:
                assert node.pin_deadlines.get(session_id) == deadline, (session_id, node.id)
                counts[node] = counts.get(node, 0) + 1
            if self.pin_mode == "hard":
                assert session_id in self._pin_locks, f"hard pin of {session_id!r} without its lock"
                for node in nodes:
                    if self._device_tokens(node):
                        assert node.lock_ref >= counts[node], f"pinned node {node.id} not locked"
        assert set(self._pin_deadline) == set(self._pinned_nodes), "pins without nodes or nodes without pins"
        assert set(self._pin_locks) <= set(self._pin_deadline), "a pin lock outlived its pin"
        assert counts == self._pin_count, "pin counts out of step with the pins"
        in_heap = {(s, d) for d, _, s in self._pin_heap}
        assert all((s, d) in in_heap for s, d in self._pin_deadline.items()), "a pin is missing from the expiry heap"
        for node in upstream.all_nodes(self.tree_core):
            if node is self.tree_core.root_node:
                continue
            for session_id, deadline in node.pin_deadlines.items():
                assert node in self._pinned_nodes.get(session_id, ()), (session_id, node.id)
            assert node.ttl_deadline == (max(node.pin_deadlines.values()) if node.pin_deadlines else None), node.id
            assert node.steps_to_execution == (min(node.step_sessions.values()) if node.step_sessions else None), node.id
            for session_id in node.step_sessions:
                assert node in self._step_nodes.get(session_id, ()), (session_id, node.id)
            for session_id in node.critical_sessions:
                assert node in self._critical_nodes.get(session_id, ()), (session_id, node.id)
        pinned = self.pinned_tokens()
        assert 0 <= pinned <= self.pool_tokens(), pinned
        if self.pin_mode == "hard":
            assert pinned == sum(self._device_tokens(n) for n in self._pin_count), "incremental pinned total drifted"
        if self.pin_mode == "hard":
            assert self.protected_size() >= pinned, (self.protected_size(), pinned)
        for session_id, nodes in self._critical_nodes.items():
            for node in nodes:
                assert session_id in node.critical_sessions, (session_id, node.id)
        for session_id, (node_id, _) in self._host_holds.items():
            node = upstream.live_node(self.tree_core, node_id)
            assert node is not None and node.backuped, f"host hold of {session_id!r} on a node without a host copy"
