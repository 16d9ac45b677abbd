"""Hook: Scheduler.init_request_dispatcher (AFTER) — route AgentHintReqInput to the agent backend
beside the scheduler's tree cache (answered with AgentHintReqOutput by TP rank 0 of each DP rank)
and give the controller the scheduler's load."""

import json

from sglang.srt.plugins.hook_registry import HookType

from sglang_agent.patches.backend_ref import PROCESS, of_scheduler
from sglang_agent.patches.contained import register_hook
from sglang_agent.patches._version import check_sglang_version

TARGET = "sglang.srt.managers.scheduler.Scheduler.init_request_dispatcher"


def _after_init_request_dispatcher(result, scheduler, *args, **kwargs):
    from sglang_agent import upstream
    from sglang_agent.server.messages import AgentHintReqInput
    from sglang_agent.server.scheduler_side import scheduler_load_probe

    backend = of_scheduler(scheduler)
    if backend is not None:
        backend.controller.load_probe = scheduler_load_probe(scheduler)
        PROCESS["backend"] = backend
    upstream.add_scheduler_handler(scheduler, AgentHintReqInput, lambda req: _handle_hint(backend, req))
    return result


def _handle_hint(backend, req):
    from sglang.srt.runtime_context import get_parallel

    from sglang_agent.server.messages import AgentHintReqOutput

    if backend is None:
        status, body = 400, {"error": "agent hints need --radix-cache-backend agent", "status": 400}
    else:
        try:
            body = json.loads(req.body_json)
        except json.JSONDecodeError as e:
            status, body = 400, {"error": f"malformed JSON: {e}", "status": 400}
        else:
            status, body = backend.handle_hint(req.kind, body, req.rid)
    parallel = get_parallel()
    if parallel.pp_rank != 0 or parallel.tp_rank != 0 or parallel.attn_cp_rank != 0:
        return None  # one answer per DP rank: the TP ranks applied the same hint identically
    if req.kind == "stats" and status == 200:
        body["dp_rank"] = parallel.dp_rank if parallel.dp_rank is not None else 0
    return AgentHintReqOutput(rid=req.rid, status=status, body_json=json.dumps(body), hint_id=req.hint_id)


def register() -> None:
    check_sglang_version()
    register_hook(TARGET, _after_init_request_dispatcher, HookType.AFTER)
