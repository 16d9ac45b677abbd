"""A modelled host-memory KV tier for the simulator (TokenCake-style offload during tool calls),
the controller's `HostTier` there (the server's is SGLang's HiCache, sglang_agent/cache/host_tier.py).

This is the tier for policies that offload without HiCache (its own copies in its own pool). On
HiCache, as ours runs, the tier is eval/sim/hicache_tier.py, the server's way.

Copies go over the GPU's shared host link (eval/sim/link.py): the offload queues on the
GPU->host direction at tool_start (it costs the GPU no compute: it overlaps the tool call); the
reload queues on the host->GPU direction from the
moment the prefetch is due (predicted return minus reload time, or at once when the tool
returns early or the turn arrives first), and never before the offload has landed. A resumed
turn admitted before its reload has landed gets the copy as a layer-wise load of its prefill
(eval/sim/layerwise.py), as HiCache's load_back does. A copy not used within its keep time is
dropped (both tiers free).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from eval.sim.cost_model import CostModel
from eval.sim.link import HostLinks, Transfer
from sglang_agent.policy.temporal import HostEvents


@dataclass
class HostCopy:
    tokens: int
    expires_at: float
    prefetch_at: float
    offload: Optional[Transfer] = None  # GPU -> host
    reload: Optional[Transfer] = None  # host -> GPU, once issued


class SimHostTier:
    def __init__(self, capacity_tokens: int, cost: CostModel, clock: Callable[[], float],
                 links: Optional[HostLinks] = None):
        self.capacity_tokens = capacity_tokens
        self.cost = cost
        self.clock = clock
        self.links = links or HostLinks.of(cost)
        self.copies: dict[str, HostCopy] = {}
        self.reloaded_tokens = 0
        self.prefetch_hits = 0  # reload finished before the turn was admitted
        self.prefetch_misses = 0

    def used_tokens(self) -> int:
        return sum(c.tokens for c in self.copies.values())

    def reload_s(self, tokens: int) -> float:
        return self.cost.reload_s(tokens)

    def room_tokens(self) -> int:
        return self.capacity_tokens - self.used_tokens()

    def offload(self, session_id: str, tokens: int, prefetch_at: float, keep_until: float) -> None:
        self.copies[session_id] = HostCopy(tokens, keep_until, prefetch_at, self.links.d2h.submit(self.clock(), tokens))

    def prefetch_prefix(self, session_id: str) -> int:
        """KVFlow's next-agent prefetch needs HiCache's copies of the agents' prefixes (this tier
        holds only what it offloaded at tool calls): eval/sim/hicache_tier.py does it."""
        return 0

    def forget(self, session_id: str) -> None:
        self.copies.pop(session_id, None)

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
            del self.copies[session_id]
        for copy in self.copies.values():
            if copy.reload is None and copy.prefetch_at <= now:
                self._issue(copy, copy.tokens)  # due: issued at its planned time (polls run once per step)
        return HostEvents(lapsed=lapsed)

    def peek(self, session_id: str) -> Optional[HostCopy]:
        copy = self.copies.get(session_id)
        return copy if copy is not None and copy.expires_at > self.clock() else None

    def take(self, session_id: str, tokens: int) -> Transfer:
        """Reload `tokens` of the session's copy for an admitted turn (issued now if the prefetch
        was not); returns the copy on the link, which the turn's prefill overlaps layer by layer."""
        copy = self.copies.pop(session_id)
        copy.prefetch_at = min(copy.prefetch_at, self.clock())
        reload = self._issue(copy, tokens)
        self.reloaded_tokens += tokens
        if reload.end_s > self.clock():
            self.prefetch_misses += 1
        else:
            self.prefetch_hits += 1
        return reload

    def next_due_s(self) -> None:
        """Nothing to wake for: a due reload is issued at its planned time at the next poll."""
        return None

    def admitted(self, session_id: str) -> None:
        """The resumed turn was admitted: `take` already ended its copy."""

    def snapshot(self) -> dict:
        return {"host_tier": "simulated", "host_pool_tokens": self.capacity_tokens, "sessions_offloaded": len(self.copies),
                "reloaded_tokens": self.reloaded_tokens}
