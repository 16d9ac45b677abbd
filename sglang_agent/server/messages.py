"""IPC messages between the HTTP process and the scheduler, as SGLang io_struct types (msgspec
structs, registered with SGLang's `hook_custom_types` so they cross its ZMQ channels)."""

from __future__ import annotations

from sglang.srt.managers.io_struct import BaseReq


class AgentHintReqInput(BaseReq, kw_only=True):
    kind: str  # one of HINT_KINDS
    body_json: str
    hint_id: int = 0  # matches the answer to its caller: many hints are in flight at once
    dp_rank: int = -1  # the DP rank of the hint's session; -1: every rank (stats, workflows)


class AgentHintReqOutput(BaseReq, kw_only=True):
    status: int
    body_json: str
    hint_id: int = 0


class AgentStepTick(BaseReq, kw_only=True):
    """The step clock's time, read on TP rank 0 and carried to every rank with that step's inputs."""

    now_s: float


HINT_KINDS = ("bind", "unbind", "gone", "turn_outcome", "tool_start", "tool_end", "close", "workflow",
              "workflow_step", "stats")
# Hints about one session (routed to that session's DP rank when they name it; else every rank).
SESSION_HINT_KINDS = ("bind", "unbind", "gone", "turn_outcome", "tool_start", "tool_end", "close")
