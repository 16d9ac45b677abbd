"""Hooks that move the step clock (sglang_agent/policy/clock.py) once per scheduler step, by the
same value on every TP rank:
- Scheduler._poll_timeout_aborts (AFTER), which runs on TP rank 0 once per step and whose aborts
  ride the inputs' broadcast to every rank (SGLang's own way to make a rank-0 decision happen on
  all ranks in the same step): rank 0 adds an AgentStepTick with its time;
- SchedulerRequestReceiver.recv_requests (AFTER), on every rank: takes the ticks out of the
  received inputs (so SGLang never counts them as work) and ticks the backend before the step's
  inputs are processed."""

import time

from sglang.srt.plugins.hook_registry import HookType

from sglang_agent.patches.backend_ref import PROCESS, of_scheduler
from sglang_agent.patches.contained import register_hook
from sglang_agent.patches._version import check_sglang_version

POLL = "sglang.srt.managers.scheduler.Scheduler._poll_timeout_aborts"
RECV = "sglang.srt.managers.scheduler_components.request_receiver.SchedulerRequestReceiver.recv_requests"


def _after_poll_timeout_aborts(result, scheduler, *args, **kwargs):
    from sglang_agent.server.messages import AgentStepTick

    if of_scheduler(scheduler) is None:
        return result
    return [*(result or []), AgentStepTick(now_s=time.perf_counter())]


def _after_recv_requests(result, receiver, *args, **kwargs):
    from sglang_agent.server.messages import AgentStepTick

    if not result:
        return result
    ticks = [r for r in result if isinstance(r, AgentStepTick)]
    if not ticks:
        return result
    backend = PROCESS["backend"]
    if backend is not None:
        backend.tick(max(t.now_s for t in ticks))
    return [r for r in result if not isinstance(r, AgentStepTick)]


def register() -> None:
    check_sglang_version()
    register_hook(POLL, _after_poll_timeout_aborts, HookType.AFTER)
    register_hook(RECV, _after_recv_requests, HookType.AFTER)
