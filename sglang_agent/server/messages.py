"""IPC messages between the HTTP process and the scheduler, as SGLang io_struct types (msgspec
structs, registered with SGLang's `hook_custom_types` so they cross its ZMQ channels)."""

from __future__ import annotations

from sglang.srt.managers.io_struct import BaseReq


class AgentHintReqInput(BaseReq, kw_only=True):
    kind: str  # one of HINT_KINDS
    body_json: str


class AgentHintReqOutput(BaseReq, kw_only=True):
    status: int
    body_json: str


HINT_KINDS = ("bind", "tool_start", "tool_end", "close", "workflow", "workflow_step", "stats")
