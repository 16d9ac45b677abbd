"""Agent metrics in SGLang's Prometheus registry, named like SGLang's own (`sglang:agent_*`,
counters get `_total`), with the labels SGLang gives its radix-cache metrics. They are exported
by SGLang's /metrics when the server runs with --enable-metrics. The values are the ones
/agent/stats shows (the controller's snapshot), pushed after every hint and at most once a second
from the scheduler's step clock. Only TP rank 0 of each DP rank reports (the TP ranks hold the
same state; reporting from each would multiply every counter by the TP size)."""

from __future__ import annotations

from typing import Callable

from sglang_agent.policy import Clock

# snapshot key -> (metric name, help)
COUNTERS = {
    "tool_calls": ("sglang:agent_tool_calls", "Tool calls announced by agent sessions."),
    "pins_created": ("sglang:agent_pins_created", "KV pins created at tool calls (Continuum TTL)."),
    "pins_refused": ("sglang:agent_pins_refused", "Tool calls where the TTL policy or the pin cap refused a pin."),
    "offloads": ("sglang:agent_offloads", "Sessions moved to the host tier at a tool call."),
    "copy_engine_bytes_to_host": ("sglang:agent_host_offloaded_bytes",
                                  "Bytes our copy engine moved GPU -> host (HiCache backups included)."),
    "copy_engine_bytes_to_gpu": ("sglang:agent_host_reloaded_bytes", "Bytes our copy engine moved host -> GPU."),
    "prefetch_hits": ("sglang:agent_prefetch_hits", "Offloaded sessions whose KV was reloaded before the next turn."),
    "prefetch_misses": ("sglang:agent_prefetch_misses", "Offloaded sessions whose next turn came before the reload."),
    "pins_refused_for_waiting_requests": ("sglang:agent_pins_refused_for_waiting_requests",
                                          "Pins refused with a host tier because the waiting requests' prompts need that memory."),
    "pins_displaced": ("sglang:agent_pins_displaced", "Pins released early: for a new pin, the running batch's decode, or admission."),
    "pins_released_for_decode": ("sglang:agent_pins_released_for_decode",
                                 "Pins released so the running batch could decode without a retraction."),
    "pins_expired_before_tool_end": ("sglang:agent_pins_expired_before_tool_end", "Pins whose TTL ran out before the tool returned."),
    "offloads_for_waiting_requests": ("sglang:agent_offloads_for_waiting_requests", "Offloads made because requests waited for memory."),
    "offloads_for_pool_watermark": ("sglang:agent_offloads_for_pool_watermark", "Offloads made because the pool was above its watermark."),
    "turns_dropped": ("sglang:agent_turns_dropped", "Bound requests that left without finishing (aborted, refused)."),
    "sessions_forgotten": ("sglang:agent_sessions_forgotten", "Sessions forgotten after --agent-session-idle-s without activity."),
    "pins_released_for_stalled_requests": ("sglang:agent_pins_released_for_stalled_requests",
                                           "Pins released for a request that waited --agent-max-admission-stall-s for them."),
    "requests_held_by_reservation": ("sglang:agent_requests_held_by_reservation",
                                     "Requests held back at least once by the critical-path reservation."),
    "internal_errors": ("sglang:agent_internal_errors", "Exceptions in sglang-agent's callbacks (the session's state was dropped)."),
    "workflow_prefetched_tokens": ("sglang:agent_workflow_prefetched_tokens",
                                   "Tokens of next workflow agents' prefixes reloaded from host ahead of time."),
    "resumed_turns": ("sglang:agent_resumed_turns", "Agent turns that followed a tool call."),
    "resumed_turns_with_hit": ("sglang:agent_resumed_turns_with_hit", "Resumed turns that found the previous turn's prompt cached."),
    "resumed_cached_tokens": ("sglang:agent_resumed_cached_tokens", "Cached prompt tokens of resumed turns."),
}
GAUGES = {
    "sessions": ("sglang:agent_sessions", "Open agent sessions."),
    "sessions_in_tool_call": ("sglang:agent_sessions_in_tool_call", "Agent sessions waiting on a tool."),
    "pinned_tokens": ("sglang:agent_pinned_tokens", "KV tokens under a live TTL pin."),
    "sessions_offloaded": ("sglang:agent_sessions_offloaded", "Sessions whose KV waits in the host tier."),
    "host_tokens": ("sglang:agent_host_tokens", "KV tokens offloaded sessions hold in host memory."),
    "workflows": ("sglang:agent_workflows", "Live workflow instances, declared or learned."),
    "learned_workflows": ("sglang:agent_learned_workflows", "Live workflow instances nobody declared (graph learned)."),
    "learned_roles": ("sglang:agent_learned_roles", "Agent roles in the learned workflow graph."),
    "reserved_tokens": ("sglang:agent_reserved_tokens",
                        "KV tokens of the critical-path reservation (its current share of the pool)."),
    "reserved_tokens_used": ("sglang:agent_reserved_tokens_used",
                             "Reserved tokens held for critical-path agents now (the rest is lent out)."),
}


class AgentMetrics:
    def __init__(self, labels: dict[str, str], snapshot: Callable[[], dict], clock: Clock, min_interval_s: float = 1.0):
        from prometheus_client import Counter, Gauge

        self.snapshot = snapshot
        self.clock = clock
        self.min_interval_s = min_interval_s
        names = list(labels)
        self.counters = {k: Counter(name, doc, labelnames=names).labels(**labels) for k, (name, doc) in COUNTERS.items()}
        self.gauges = {k: Gauge(name, doc, labelnames=names, multiprocess_mode="mostrecent").labels(**labels)
                       for k, (name, doc) in GAUGES.items()}
        self.last: dict[str, float] = {k: 0 for k in COUNTERS}
        self.last_push = float("-inf")

    def push(self) -> None:
        snap = self.snapshot()
        self.last_push = self.clock()
        for key, counter in self.counters.items():
            value = snap.get(key) or 0
            if value > self.last[key]:
                counter.inc(value - self.last[key])
                self.last[key] = value
        for key, gauge in self.gauges.items():
            gauge.set(snap.get(key) or 0)

    def maybe_push(self) -> None:
        if self.clock() - self.last_push >= self.min_interval_s:
            self.push()


def attach(cache, backend) -> AgentMetrics:
    """Create the metrics for a server cache; backend.py pushes them (after hints, and from the
    step clock at most once a second)."""
    from sglang.srt.layers.dp_attention import is_dp_attention_enabled
    from sglang.srt.observability.metrics_collector import radix_cache_metric_labels
    from sglang.srt.runtime_context import get_parallel

    labels = radix_cache_metric_labels(type(cache).__name__, get_parallel(), is_dp_attention_enabled())
    return AgentMetrics({k: str(v) for k, v in labels.items()}, backend.snapshot, backend.clock)
