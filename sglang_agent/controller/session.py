"""The controller's per-session records and counters (plain dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from sglang_agent.hints import ToolStart
from sglang_agent.policy.session_machine import State

# How the KV of a session in a tool call is held (a sub-state of IN_TOOL).
HOLD_PIN, HOLD_OFFLOAD, HOLD_NONE = "pin", "offload", "none"


@dataclass
class ToolCall:
    tool_name: str
    started_at: float
    expected_duration_s: Optional[float]
    hold: str = HOLD_NONE
    ttl_s: float = 0.0  # the pin's TTL (hold "pin")
    detected: bool = False  # recognised by the server in the turn's answer (no client hint)


@dataclass
class AgentSession:
    session_id: str
    program_arrival: float  # first arrival of the program (program-level FCFS key)
    state: State = State.IDLE
    running_rids: set[str] = field(default_factory=set)
    pending_tool: Optional[ToolStart] = None  # TOOL_PENDING: announced while the turn runs
    tool: Optional[ToolCall] = None  # IN_TOOL / LAPSED
    resuming: bool = False  # the running turn follows a tool call
    resumed_from: str = HOLD_NONE  # how the KV was held during that tool call
    turns: int = 0
    last_prompt_tokens: int = 0  # prompt length of the latest finished turn
    last_active: float = 0.0  # step-clock time of the latest hint or request event
    implicit: bool = False  # found by the server (no client key): resumed by a prompt extending its path
    anchor_tokens: int = 0  # implicit: how much of its path a resuming prompt matches
    close_after_turn: bool = False  # the client said this is its last turn


@dataclass
class AgentStats:
    tool_calls: int = 0
    tool_calls_detected: int = 0  # of which the server recognised in the turn's answer
    pins_created: int = 0
    pins_refused: int = 0
    pins_refused_for_running_requests: int = 0  # the running batch's decode needs that memory
    pins_refused_for_waiting_requests: int = 0  # with a host tier: the waiting prompts need that memory
    pins_displaced: int = 0  # released early: by a new pin, for decode, or for admission
    pins_released_for_decode: int = 0
    pins_released_for_admission: int = 0  # nothing ran and the head of the queue did not fit
    pins_released_for_stalled_requests: int = 0  # the head waited --agent-max-admission-stall-s for them
    pins_expired_before_tool_end: int = 0
    offloads: int = 0
    offloaded_tokens: int = 0
    offloads_for_waiting_requests: int = 0
    offloads_for_pool_watermark: int = 0
    offloads_expired: int = 0  # the host copy's keep time ran out before the tool returned
    kept_with_host_copy: int = 0  # no pressure: left as ordinary cache, HiCache's host copy covers it
    prefetch_hits: int = 0  # offloaded sessions whose resumed turn found its prompt back on the GPU
    prefetch_misses: int = 0  # ... that found it on host only (loaded at admission) or recomputed
    prefetches_protected: int = 0  # reloaded paths pinned until their turn's predicted arrival
    resumed_turns: int = 0
    resumed_turns_with_hit: int = 0
    resumed_cached_tokens: int = 0
    resumed_prompt_tokens: int = 0
    turns_dropped: int = 0  # requests that left without finishing (aborted, refused)
    sessions_forgotten: int = 0  # idle past --agent-session-idle-s
    internal_errors: int = 0  # our callbacks that raised (the session's state was dropped)
