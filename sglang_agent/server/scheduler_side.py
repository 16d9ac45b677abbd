"""Scheduler-process side of the hint API: apply one AgentHintReqInput to the controller."""

from __future__ import annotations

import json
import logging

from sglang_agent.controller import AgentController, LoadSnapshot
from sglang_agent.server import hints
from sglang_agent.server.messages import AgentHintReqInput, AgentHintReqOutput

logger = logging.getLogger(__name__)


def apply_hint(controller: AgentController, kind: str, body: dict, rid: str | None) -> dict:
    """Run one hint; raises hints.HintError for a bad one, leaving all state unchanged."""
    if kind == "bind":
        if not rid:
            raise hints.HintError(400, "bind needs a request id")
        return controller.bind(rid, hints.parse_inline(body))
    if kind == "unbind":
        if not rid:
            raise hints.HintError(400, "unbind needs a request id")
        return controller.unbind(rid)
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
    def probe() -> LoadSnapshot:
        queue = scheduler.waiting_queue
        return LoadSnapshot(len(queue), sum(len(r.origin_input_ids) for r in queue))

    return probe


def handle_hint(scheduler, req: AgentHintReqInput) -> AgentHintReqOutput | None:
    controller = getattr(scheduler.tree_cache, "agent_controller", None)
    if controller is None:
        status, body = 400, {"error": "agent hints need --radix-cache-backend agent", "status": 400}
    else:
        try:
            status, body = 200, apply_hint(controller, req.kind, json.loads(req.body_json), req.rid)
        except hints.HintError as e:
            status, body = e.status, e.to_body()
        except json.JSONDecodeError as e:
            status, body = 400, {"error": f"malformed JSON: {e}", "status": 400}
        except Exception as e:  # an invariant break must not take the scheduler down
            logger.exception("agent hint %s failed", req.kind)
            status, body = 500, {"error": f"internal error: {type(e).__name__}: {e}", "status": 500}
        metrics = getattr(scheduler.tree_cache, "agent_metrics", None)
        if metrics is not None and status == 200:
            metrics.push()
    from sglang.srt.runtime_context import get_parallel

    parallel = get_parallel()
    if parallel.pp_rank != 0 or parallel.tp_rank != 0 or parallel.attn_cp_rank != 0:
        return None  # one answer per DP rank, like open_session
    return AgentHintReqOutput(rid=req.rid, status=status, body_json=json.dumps(body))
