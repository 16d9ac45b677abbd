"""The server's host KV tier for agent sessions (TokenCake-style offload during tool calls), over
SGLang's HiCache as the AgentRadixCache runs it; the controller's `HostTier`.

At a tool call under memory pressure the controller may offload: the session's path is demoted to
host memory (its GPU slots are freed for other requests; the radix node keeps its host copy, and a
host lock keeps host LRU off it). From the predicted return minus the reload time, or at once when
tool_end comes earlier, the path is reloaded (HiCache load_back, its copy started immediately)
provided the GPU has that much room beyond what running requests may still need; else it waits a
step. Once back, the controller protects it until the predicted return. Everything runs from
`poll`, once per scheduler step; nothing here waits for a copy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sglang_agent.policy.temporal import HostEvents
from sglang_agent.policy import Clock

if TYPE_CHECKING:
    from sglang_agent.cache.agent_radix_cache import AgentRadixCache


@dataclass
class OffloadJob:
    tokens: int
    prefetch_at: float
    keep_until: float
    offload_done: bool
    prefetched: bool = False  # the reload was started
    arrived: bool = False  # the resumed turn is here; the job only waits to let go of the host copy
    reported: bool = False  # the reloaded path was reported back (for protection)


@dataclass
class HostTierStats:
    gpu_tokens_freed: int = 0  # GPU tokens agent offloads freed
    prefetched_tokens: int = 0  # tokens reloaded ahead of a resumed turn
    reloads_waited: int = 0  # steps a due reload waited for GPU room
    workflow_prefetched_tokens: int = 0  # next workflow agents' prefixes reloaded ahead (KVFlow)
    host_tokens: int = 0  # tokens the live offloads hold in host memory (gauge)


class HiCacheHostTier:
    def __init__(self, cache: "AgentRadixCache", clock: Clock, bandwidth_gbps: float):
        if not cache.has_host_tier():
            raise ValueError("the host tier needs SGLang's HiCache: start with --enable-hierarchical-cache")
        self.cache = cache
        self.clock = clock
        self.bandwidth_bytes_per_s = bandwidth_gbps * 1e9
        self.host_pool = cache.cache_controller.mem_pool_host
        self.jobs: dict[str, OffloadJob] = {}
        self.prefix_wanted: dict[str, None] = {}  # workflow agents to bring back (KVFlow), in order
        self.stats = HostTierStats()

    # ---- HostTier (controller/ports.py) ------------------------------------------------------
    def reload_s(self, tokens: int) -> float:
        return tokens * self.host_pool.size_per_token / self.bandwidth_bytes_per_s

    def room_tokens(self) -> int:
        return self.cache.host_room_tokens()

    def offload(self, session_id: str, tokens: int, prefetch_at: float, keep_until: float) -> None:
        freed, done = self.cache.offload_session(session_id)
        self.stats.gpu_tokens_freed += freed
        if done:
            self.cache.hold_host(session_id)
        self.jobs[session_id] = OffloadJob(tokens, prefetch_at, keep_until, done)

    def prefetch_now(self, session_id: str) -> None:
        job = self.jobs.get(session_id)
        if job is not None:
            job.prefetch_at = min(job.prefetch_at, self.clock())

    def turn_arrived(self, session_id: str) -> None:
        # Not prefetched yet: the request's own admission loads what is on host (upstream's path,
        # inside its memory accounting); the job keeps the host copy held until then.
        job = self.jobs.get(session_id)
        if job is not None:
            job.arrived = True

    def prefetch_prefix(self, session_id: str) -> int:
        if session_id in self.jobs:
            return 0  # in a tool call: its own offload job decides when it comes back
        self.prefix_wanted[session_id] = None
        return self.cache.session_host_tokens(session_id)

    def forget(self, session_id: str) -> None:
        self.jobs.pop(session_id, None)
        self.prefix_wanted.pop(session_id, None)
        self.cache.release_host(session_id)

    def has_job(self, session_id: str) -> bool:
        return session_id in self.jobs

    # ---- once per step -------------------------------------------------------------------------
    def poll(self, now: float, headroom_tokens: int) -> HostEvents:
        """Finish offloads whose host copy has landed, start due reloads within `headroom_tokens`,
        report reloads that are back, let go of jobs past their keep time."""
        events = HostEvents()
        for session_id, job in list(self.jobs.items()):
            if now >= job.keep_until or (job.arrived and self.cache.session_host_tokens(session_id) == 0):
                # Lets go of its host copy (an ordinary HiCache entry again); the GPU was freed at offload.
                del self.jobs[session_id]
                self.cache.release_host(session_id)
                if now >= job.keep_until and not job.arrived:
                    events.lapsed.append(session_id)
                continue
            if job.arrived:
                continue
            if not job.offload_done and not job.prefetched:
                freed, job.offload_done = self.cache.offload_session(session_id)
                self.stats.gpu_tokens_freed += freed
                if job.offload_done:
                    self.cache.hold_host(session_id)
            if not job.prefetched and now >= job.prefetch_at:
                loaded = self.cache.prefetch_session(session_id, headroom_tokens)
                if loaded is None:
                    self.stats.reloads_waited += 1
                else:
                    job.prefetched = True
                    headroom_tokens -= loaded
                    self.stats.prefetched_tokens += loaded
            if job.prefetched and not job.reported and self.cache.session_host_tokens(session_id) == 0 \
                    and not self.cache.loads_in_flight():
                job.reported = True
                events.reloaded[session_id] = max(now, job.prefetch_at + self.reload_s(job.tokens))
        for session_id in list(self.prefix_wanted):
            loaded = self.cache.prefetch_session(session_id, headroom_tokens)
            if loaded is None:
                self.stats.reloads_waited += 1
                break  # in order: the next agent first
            del self.prefix_wanted[session_id]
            headroom_tokens -= loaded
            self.stats.workflow_prefetched_tokens += loaded
        return events

    def snapshot(self) -> dict:
        from sglang_agent.cache.host_copy import COUNTERS

        self.stats.host_tokens = sum(self.cache.session_host_tokens(s) for s in self.jobs)
        return {
            "host_tier": "hicache",
            "host_pool_tokens": self.host_pool.size,
            "host_bandwidth_gbps": self.bandwidth_bytes_per_s / 1e9,
            "sessions_offloaded": len(self.jobs),
            **vars(self.stats),
            # Every HiCache copy our kernel made (write-through backups included), in bytes.
            "copy_engine_bytes_to_host": COUNTERS.offloaded_bytes,
            "copy_engine_bytes_to_gpu": COUNTERS.reloaded_bytes,
            "copy_engine": COUNTERS.engine,
        }
