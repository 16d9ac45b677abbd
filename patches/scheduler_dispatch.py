"""Hook: Scheduler.init_request_dispatcher (AFTER) — route AgentHintReqInput to the agent
controller that lives beside the scheduler's tree cache."""

from sglang.srt.plugins.hook_registry import HookRegistry, HookType

from sglang_agent.patches._version import check_sglang_version

TARGET = "sglang.srt.managers.scheduler.Scheduler.init_request_dispatcher"


def _after_init_request_dispatcher(result, scheduler, *args, **kwargs):
    from sglang.utils import TypeBasedDispatcher

    from sglang_agent.server.messages import AgentHintReqInput
    from sglang_agent.server.scheduler_side import handle_hint, scheduler_load_probe

    controller = getattr(scheduler.tree_cache, "agent_controller", None)
    if controller is not None:
        controller.load_probe = scheduler_load_probe(scheduler)

    scheduler._request_dispatcher += TypeBasedDispatcher(
        [(AgentHintReqInput, lambda req: handle_hint(scheduler, req))]
    )
    return result


def register() -> None:
    check_sglang_version()
    HookRegistry.register(TARGET, _after_init_request_dispatcher, HookType.AFTER)
