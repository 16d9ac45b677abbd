"""A modelled host-memory KV tier for the simulator (TokenCake-style offload during tool calls),
the controller's `HostTier` there (the server's is SGLang's HiCache, sglang_agent/cache/host_tier.py).

On HiCache (as ours runs) an offload holds the session's path in HiCache's host tree, where
write-through has nearly always copied it already, as the server's offload demotes the path and
holds its host copy: shared prefixes (a role prompt) are stored once and the budget is the tree's
pool. Without HiCache the tier keeps copies of its own in a pool of the same size.

Copies go over the GPU's shared host link (eval/sim/link.py): the offload queues on the
GPU->host direction at tool_start for what is not on host yet (it costs the GPU no compute: it
overlaps the tool call); the reload queues on the host->GPU direction from the
moment the prefetch is due (predicted return minus reload time, or at once when the tool
returns early or the turn arrives first), and never before the offload has landed. A resumed
turn admitted before its reload has landed gets the copy as a layer-wise load of its prefill
(eval/sim/layerwise.py), as HiCache's load_back does. A copy not used within its keep time is
dropped (both tiers free).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

from eval.sim.cost_model import CostModel
from eval.sim.link import HostLinks, Transfer
from sglang_agent.policy.temporal import HostEvents

if TYPE_CHECKING:
    from eval.sim.hicache import SimHiCache


@dataclass
class HostCopy:
    tokens: int
    expires_at: float
    prefetch_at: float
    offload: Optional[Transfer] = None  # GPU -> host
    reload: Optional[Transfer] = None  # host -> GPU, once issued
    hold: object = None  # on HiCache: the lock that keeps the path in its host tree


class SimHostTier:
    def __init__(self, capacity_tokens: int, cost: CostModel, clock: Callable[[], float],
                 links: Optional[HostLinks] = None, loader: Optional[Callable[[str, int], Optional[int]]] = None,
                 host_tree: Optional["SimHiCache"] = None, key_of: Optional[Callable[[str], Optional[array]]] = None):
        self.capacity_tokens = capacity_tokens
        self.cost = cost
        self.clock = clock
        self.links = links or HostLinks.of(cost)
        # On HiCache (ours): an offload holds the session's path in HiCache's host tree, as the
        # server's offload demotes the path and holds its host copy (key_of: the session's last
        # key); the tree's pool is the one budget. Otherwise copies of our own, `capacity_tokens`.
        self.host_tree = host_tree
        self.key_of = key_of
        # KVFlow's prefetch: loader(session, GPU headroom) brings the session's host-only prefix
        # back (the engine's tree and HiCache model); the sessions wanted, in the order asked.
        self.loader = loader
        self.prefix_wanted: dict[str, None] = {}
        self.workflow_prefetched_tokens = 0
        self.copies: dict[str, HostCopy] = {}
        self.reloaded_tokens = 0
        self.prefetch_hits = 0  # reload finished before the turn was admitted
        self.prefetch_misses = 0

    def used_tokens(self) -> int:
        """Host tokens our copies take (on HiCache: the tokens the tree keeps for them)."""
        if self.host_tree is not None:
            return self.host_tree.locked_tokens()
        return sum(c.tokens for c in self.copies.values())

    def reload_s(self, tokens: int) -> float:
        return self.cost.reload_s(tokens)

    def room_tokens(self) -> int:
        return self.capacity_tokens - self.used_tokens()

    def offload(self, session_id: str, tokens: int, prefetch_at: float, keep_until: float) -> None:
        key = self.key_of(session_id) if self.host_tree is not None and self.key_of is not None else None
        if key is None:
            self.copies[session_id] = HostCopy(tokens, keep_until, prefetch_at, self.links.d2h.submit(self.clock(), tokens))
            return
        # Write-through has (nearly always) copied the path already: only what it has not moves.
        lock, held, written = self.host_tree.hold(key[:tokens])
        offload = self.links.d2h.submit(self.clock(), written) if written else None
        self.copies[session_id] = HostCopy(held, keep_until, prefetch_at, offload, hold=lock)

    def _drop(self, session_id: str) -> Optional[HostCopy]:
        copy = self.copies.pop(session_id, None)
        if copy is not None and copy.hold is not None:
            self.host_tree.release(copy.hold)
        return copy

    def prefetch_prefix(self, session_id: str) -> int:
        """KVFlow's next-agent prefetch, as the server's tier does it: a session in a tool call
        comes back with its own offload job; any other is loaded at the next poll, in order, as
        GPU headroom allows. Returns 0: the tokens are known when the poll loads them."""
        if session_id not in self.copies and self.loader is not None:
            self.prefix_wanted[session_id] = None
        return 0

    def forget(self, session_id: str) -> None:
        self._drop(session_id)
        self.prefix_wanted.pop(session_id, None)

    def has_job(self, session_id: str) -> bool:
        return session_id in self.copies

    def prefetch_now(self, session_id: str) -> None:
        copy = self.copies.get(session_id)
        if copy is not None:
            copy.prefetch_at = min(copy.prefetch_at, self.clock())
            self._issue(copy, copy.tokens)

    def _issue(self, copy: HostCopy, tokens: int) -> Transfer:
        """Queue the reload on the host->GPU link (once), not before the offload has landed."""
        if copy.reload is None:
            landed_s = copy.offload.end_s if copy.offload is not None else 0.0
            copy.reload = self.links.h2d.submit(max(copy.prefetch_at, landed_s), tokens)
        return copy.reload

    def turn_arrived(self, session_id: str) -> None:
        """The turn came before the planned reload: the reload starts now (as the server's admission
        loads it at once); the copy stays until the admission takes it (`take`)."""
        self.prefetch_now(session_id)

    def poll(self, now: float, headroom_tokens: int) -> HostEvents:
        lapsed = [s for s, c in self.copies.items() if c.expires_at <= now]
        for session_id in lapsed:
            self._drop(session_id)
        for copy in self.copies.values():
            if copy.reload is None and copy.prefetch_at <= now:
                self._issue(copy, copy.tokens)  # due: issued at its planned time (polls run once per step)
        for session_id in list(self.prefix_wanted):
            loaded = self.loader(session_id, headroom_tokens)
            if loaded is None:
                break  # in order: the agent due first waits for room first
            del self.prefix_wanted[session_id]
            headroom_tokens -= loaded
            self.workflow_prefetched_tokens += loaded
        return HostEvents(lapsed=lapsed)

    def peek(self, session_id: str) -> Optional[HostCopy]:
        copy = self.copies.get(session_id)
        return copy if copy is not None and copy.expires_at > self.clock() else None

    def take(self, session_id: str, tokens: int) -> Transfer:
        """Reload `tokens` of the session's copy for an admitted turn (issued now if the prefetch
        was not); returns the copy on the link, which the turn's prefill overlaps layer by layer."""
        copy = self._drop(session_id)
        copy.prefetch_at = min(copy.prefetch_at, self.clock())
        reload = self._issue(copy, tokens)
        self.reloaded_tokens += tokens
        if reload.end_s > self.clock():
            self.prefetch_misses += 1
        else:
            self.prefetch_hits += 1
        return reload

    def snapshot(self) -> dict:
        return {"host_tier": "simulated", "host_pool_tokens": self.capacity_tokens, "sessions_offloaded": len(self.copies),
                "reloaded_tokens": self.reloaded_tokens, "workflow_prefetched_tokens": self.workflow_prefetched_tokens}
