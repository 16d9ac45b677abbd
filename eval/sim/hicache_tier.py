"""Ours' host tier on the simulated HiCache: the controller's `HostTier` as the server's
HiCacheHostTier (sglang_agent/cache/host_tier.py) runs it over SGLang's HiCache, step for step.

- offload (tool_start under memory pressure): the session's path is held in HiCache's host tree
  (host LRU cannot take it; write-through has nearly always copied it already, and only what it
  has not goes over the GPU->host link) and leaves the GPU at once, deepest node first; nodes a
  running request locks, or that other paths' GPU nodes hang under, stay, and so do their
  ancestors. Shared prefixes (a role prompt) are stored once, in HiCache's one pool.
- from the predicted return minus the reload time (or at once on tool_end), the host-only part is
  loaded back into the GPU tree if the GPU has that room beyond what running requests need (else
  it waits a step), its copy queued on the host->GPU link (eval/sim/link.py); the controller then
  protects it until the predicted return. A turn that finds it still in flight waits for it layer
  by layer (eval/sim/layerwise.py).
- a turn that arrives before the prefetch loads what is still on host at its admission
  (HiCache's own load_back, as any HiCache hit); the hold ends at that admission, or at the keep
  time.
- KVFlow's prefetch of the workflow agents due next: the same load, for a session not in a tool
  call, in the order asked.
The engine does the tree work (`demote`, `load`: eval/sim/engine.py); this class keeps the jobs.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Callable, Optional

from eval.sim.hicache import SimHiCache
from eval.sim.link import HostLinks
from sglang_agent.policy.temporal import HostEvents


@dataclass
class OffloadJob:
    tokens: int
    prefetch_at: float
    keep_until: float
    hold: object  # HiCache host-tree lock on the session's path
    prefetched: bool = False  # loaded back (or found on the GPU) ahead of its turn
    arrived: bool = False  # the turn is here: its admission loads what is on host


class SimHiCacheTier:
    def __init__(self, hicache: SimHiCache, capacity_tokens: int, cost, clock: Callable[[], float], links: HostLinks,
                 key_of: Callable[[str], Optional[array]], demote: Callable[[str], int],
                 load: Callable[[str, int], Optional[int]]):
        self.hicache = hicache
        self.capacity_tokens = capacity_tokens
        self.cost = cost
        self.clock = clock
        self.links = links
        self.key_of = key_of  # session -> its last cached key
        self.demote = demote  # session -> GPU tokens freed
        self.load = load  # (session, GPU headroom) -> tokens loaded back, None: no room yet
        self.jobs: dict[str, OffloadJob] = {}
        self.prefix_wanted: dict[str, None] = {}  # workflow agents to bring back (KVFlow), in order
        self.gpu_tokens_freed = 0
        self.prefetched_tokens = 0
        self.workflow_prefetched_tokens = 0
        self.reloads_waited = 0

    # ---- HostTier (sglang_agent/controller/ports.py) ----------------------------------------------
    def reload_s(self, tokens: int) -> float:
        return self.cost.reload_s(tokens)

    def used_tokens(self) -> int:
        return self.hicache.locked_tokens()

    def room_tokens(self) -> int:
        return self.capacity_tokens - self.used_tokens()

    def offload(self, session_id: str, tokens: int, prefetch_at: float, keep_until: float) -> None:
        key = self.key_of(session_id)
        hold, held = None, 0
        if key is not None:
            hold, held, written = self.hicache.hold(key[:tokens])
            if written:
                self.links.d2h.submit(self.clock(), written)
            self.gpu_tokens_freed += self.demote(session_id)
        self.jobs[session_id] = OffloadJob(held, prefetch_at, keep_until, hold)

    def prefetch_now(self, session_id: str) -> None:
        job = self.jobs.get(session_id)
        if job is not None:
            job.prefetch_at = min(job.prefetch_at, self.clock())

    def turn_arrived(self, session_id: str) -> None:
        job = self.jobs.get(session_id)
        if job is not None:
            job.arrived = True

    def prefetch_prefix(self, session_id: str) -> int:
        """Returns 0: the tokens are known when the poll loads them."""
        if session_id not in self.jobs:
            self.prefix_wanted[session_id] = None
        return 0

    def forget(self, session_id: str) -> None:
        self._end(session_id)
        self.prefix_wanted.pop(session_id, None)

    def has_job(self, session_id: str) -> bool:
        return session_id in self.jobs

    def poll(self, now: float, headroom_tokens: int) -> HostEvents:
        events = HostEvents()
        for session_id, job in list(self.jobs.items()):
            if now >= job.keep_until:
                self._end(session_id)
                if not job.arrived:
                    events.lapsed.append(session_id)
                continue
            if job.arrived or job.prefetched or now < job.prefetch_at:
                continue
            loaded = self.load(session_id, headroom_tokens)
            if loaded is None:
                self.reloads_waited += 1
                continue
            job.prefetched = True
            headroom_tokens -= loaded
            self.prefetched_tokens += loaded
            events.reloaded[session_id] = max(now, job.prefetch_at + self.reload_s(job.tokens))  # the predicted return
        for session_id in list(self.prefix_wanted):
            loaded = self.load(session_id, headroom_tokens)
            if loaded is None:
                self.reloads_waited += 1
                break  # in order: the agent due first waits for room first
            del self.prefix_wanted[session_id]
            headroom_tokens -= loaded
            self.workflow_prefetched_tokens += loaded
        return events

    def next_due_s(self) -> Optional[float]:
        """When a job next needs a poll: a planned prefetch, or a keep time running out."""
        times = [t for job in self.jobs.values() if not job.arrived
                 for t in ((job.keep_until,) if job.prefetched else (job.prefetch_at, job.keep_until))]
        return min(times, default=None)

    def snapshot(self) -> dict:
        return {"host_tier": "simulated hicache", "host_pool_tokens": self.capacity_tokens,
                "sessions_offloaded": len(self.jobs), "gpu_tokens_freed": self.gpu_tokens_freed,
                "prefetched_tokens": self.prefetched_tokens, "workflow_prefetched_tokens": self.workflow_prefetched_tokens,
                "reloads_waited": self.reloads_waited}

    # ---- the engine's admission ------------------------------------------------------------------
    def peek(self, session_id: str) -> None:
        """Nothing of its own to reload: a turn's host-only part comes back as any HiCache hit."""
        return None

    def admitted(self, session_id: str) -> None:
        """The resumed turn was admitted (its host part loaded with it): the job ends."""
        self._end(session_id)

    def _end(self, session_id: str) -> None:
        job = self.jobs.pop(session_id, None)
        if job is not None and job.hold is not None:
            self.hicache.release(job.hold)
