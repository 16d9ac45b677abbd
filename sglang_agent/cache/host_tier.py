"""The server's host KV tier for agent sessions (TokenCake-style offload during tool calls), over
SGLang's HiCache as the AgentRadixCache runs it.

At a tool call the controller's temporal policy may choose to offload: the session's path is
demoted to host memory (its GPU slots are freed for other requests; the radix tree keeps the
node with its host copy). At the predicted return minus the reload time, or at once when
tool_end comes earlier, the path is queued for reload (HiCache load_back), so the resumed turn
finds it on the GPU. Timers run from the scheduler's per-step HiCache poll; nothing here waits
for a copy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sglang_agent.cache.host_copy import COUNTERS
from sglang_agent.policy import Clock

if TYPE_CHECKING:
    from sglang_agent.cache.agent_radix_cache import AgentRadixCache


@dataclass
class OffloadJob:
    tokens: int
    prefetch_at: float
    expires_at: float
    offload_done: bool
    prefetched: bool = False


@dataclass
class HostTierStats:
    gpu_tokens_freed: int = 0  # GPU tokens agent offloads freed
    prefetched_tokens: int = 0  # tokens queued for reload ahead of a resumed turn
    prefetch_hits: int = 0  # the reload was queued before the next turn arrived
    prefetch_misses: int = 0  # the turn arrived first (reloaded then, or at its admission)
    offloads_expired: int = 0  # the tool never returned within the keep time
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
        self.stats = HostTierStats()
        cache.step_listeners.append(self.poll)

    # ---- HostTier (controller.py) ----------------------------------------------------------
    def reload_s(self, tokens: int) -> float:
        return tokens * self.host_pool.size_per_token / self.bandwidth_bytes_per_s

    def has_room(self, tokens: int) -> bool:
        held = sum(job.tokens for job in self.jobs.values())
        return held + tokens <= self.host_pool.size

    def offload(self, session_id: str, tokens: int, keep_s: float, prefetch_after_s: float) -> None:
        now = self.clock()
        freed, done = self.cache.offload_session(session_id)
        self.stats.gpu_tokens_freed += freed
        if done:
            self.cache.hold_host(session_id)
        self.jobs[session_id] = OffloadJob(tokens, now + prefetch_after_s, now + keep_s, done)

    def prefetch_now(self, session_id: str, turn_arrived: bool = False) -> None:
        job = self.jobs.get(session_id)
        if job is None:
            return
        if turn_arrived:
            # The turn is here: its KV is on the GPU already (a hit) or is reloaded now, before
            # the request reaches admission (a miss: the tool came back before the prediction).
            del self.jobs[session_id]
            if job.prefetched and self.cache.session_host_tokens(session_id) == 0:
                self.stats.prefetch_hits += 1
            else:
                self.stats.prefetch_misses += 1
                self.stats.prefetched_tokens += self.cache.prefetch_session(session_id)
            return
        job.prefetch_at = min(job.prefetch_at, self.clock())
        self._run(session_id, job, self.clock())

    def prefetch_prefix(self, session_id: str) -> int:
        if session_id in self.jobs:
            return 0  # in a tool call: its own offload job decides when it comes back
        tokens = self.cache.prefetch_session(session_id)
        self.stats.workflow_prefetched_tokens += tokens
        return tokens

    def forget(self, session_id: str) -> None:
        self.jobs.pop(session_id, None)
        self.cache.release_host(session_id)

    # ---- timers ----------------------------------------------------------------------------
    def poll(self) -> None:
        """Once per scheduler step: finish offloads whose host copy has landed, start due
        prefetches, drop offloads whose tool outlived the keep time."""
        now = self.clock()
        for session_id, job in list(self.jobs.items()):
            self._run(session_id, job, now)

    def _run(self, session_id: str, job: OffloadJob, now: float) -> None:
        if now >= job.expires_at:
            # The session lets go of its host copy (an ordinary HiCache entry again, freed by
            # host LRU when host memory is needed); the GPU was freed at offload.
            del self.jobs[session_id]
            self.cache.release_host(session_id)
            self.stats.offloads_expired += 1
            return
        if not job.offload_done and not job.prefetched:
            freed, job.offload_done = self.cache.offload_session(session_id)
            self.stats.gpu_tokens_freed += freed
            if job.offload_done:
                self.cache.hold_host(session_id)
        if not job.prefetched and now >= job.prefetch_at:
            job.prefetched = True
            self.stats.prefetched_tokens += self.cache.prefetch_session(session_id)

    def snapshot(self) -> dict:
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
