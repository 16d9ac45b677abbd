"""Hooks that tell the agent backend where each request is, so every way a request can leave the
scheduler ends it exactly once in the controller (the other exits are the tree cache's
`on_release` for finished requests and `finish(ABORT)` for those aborted while queued):
- Scheduler.handle_generate_request (AFTER): the scheduler has the request (from now on it is
  ended by the scheduler, not by the HTTP layer's "gone"); an unbound one whose prompt extends an
  implicit session's path is bound to it here (on every TP rank alike: the same tree);
- Scheduler.send_abort_output (AFTER): the scheduler ended a request outside the output stream
  (aborted while queued, rejected by the queue limit, aborted at retraction)."""

from sglang.srt.plugins.hook_registry import HookType

from sglang_agent.patches.backend_ref import PROCESS, of_scheduler
from sglang_agent.patches.contained import register_hook
from sglang_agent.patches._version import check_sglang_version

ENTER = "sglang.srt.managers.scheduler.Scheduler.handle_generate_request"
ABORT = "sglang.srt.managers.scheduler.Scheduler.send_abort_output"


def _after_handle_generate_request(result, scheduler, recv_req, *args, **kwargs):
    backend = of_scheduler(scheduler)
    if backend is not None:
        backend.request_entered(recv_req.rid, recv_req)
    return result


def _after_send_abort_output(result, scheduler, abort_req, req, *args, **kwargs):
    backend = of_scheduler(scheduler)
    if backend is not None:
        backend.request_dropped(req.rid)
    return result


def register() -> None:
    check_sglang_version()
    register_hook(ENTER, _after_handle_generate_request, HookType.AFTER)
    register_hook(ABORT, _after_send_abort_output, HookType.AFTER)
