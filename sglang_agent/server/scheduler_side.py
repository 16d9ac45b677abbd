"""Scheduler-process side of the hint API: one hint applied to the controller, and what the
controller reads of the scheduler (its load)."""

from __future__ import annotations

from sglang_agent import hints
from sglang_agent.controller import AgentController, LoadSnapshot


def apply_hint(controller: AgentController, kind: str, body: dict, rid: str | None) -> dict:
    """Run one hint; raises hints.HintError for a bad one, leaving all state unchanged."""
    if kind in ("bind", "unbind", "gone", "turn_outcome") and not rid:
        raise hints.HintError(400, f"{kind} needs a request id")
    if kind == "bind":
        return controller.bind(rid, hints.parse_inline(body))
    if kind == "unbind":
        return controller.unbind(rid)
    if kind == "gone":
        return controller.request_gone(rid)
    if kind == "turn_outcome":
        if not rid:
            raise hints.HintError(400, "turn_outcome needs a request id")
        return controller.turn_outcome(rid, *hints.parse_turn_outcome(body))
    if kind == "tool_start":
        return controller.tool_start(hints.parse_tool_start(body))
    if kind == "tool_end":
        return controller.tool_end(hints.parse_session_ref(body, "tool_end").session_id)
    if kind == "close":
        return controller.close(hints.parse_session_ref(body, "session/close").session_id)
    if kind == "workflow":
        return controller.declare_workflow(hints.parse_workflow(body))
    if kind == "workflow_step":
        return controller.workflow_step(hints.parse_workflow_step(body))
    if kind == "stats":
        return controller.snapshot()
    raise hints.HintError(400, f"unknown hint kind {kind!r}")


def scheduler_load_probe(scheduler):
    """The waiting queue, and the KV the running requests may still need: each one's remaining
    output as SGLang's admission clips it (at ratio 1: what finishing it without a retraction
    takes), plus a chunked prefill's remaining prompt."""
    from sglang.srt.managers.schedule_policy import CLIP_MAX_NEW_TOKENS

    def probe() -> LoadSnapshot:
        queue = scheduler.waiting_queue
        reserve = 0
        for req in scheduler.running_batch.reqs:
            reserve += min(max(req.sampling_params.max_new_tokens - len(req.output_ids), 0), CLIP_MAX_NEW_TOKENS)
        chunked = scheduler.chunked_req
        if chunked is not None:
            reserve += max(len(chunked.origin_input_ids) - chunked.kv.kv_committed_len, 0) + min(
                chunked.sampling_params.max_new_tokens, CLIP_MAX_NEW_TOKENS)
        return LoadSnapshot(len(queue), sum(len(r.origin_input_ids) for r in queue), reserve)

    return probe
