"""Hook: DataParallelController.init_dispatcher (AFTER) — with --dp-size > 1 a session belongs to
one DP rank: its hints go only there (the rank its requests are routed to by `routed_dp_rank`);
hints about no session (stats, workflows) go to every rank."""

from sglang.srt.plugins.hook_registry import HookType

from sglang_agent.patches.contained import register_hook
from sglang_agent.patches._version import check_sglang_version

TARGET = "sglang.srt.managers.data_parallel_controller.DataParallelController.init_dispatcher"


def _after_init_dispatcher(result, controller, *args, **kwargs):
    from sglang.srt.managers.io_struct import sock_send

    from sglang_agent import upstream
    from sglang_agent.server.messages import AgentHintReqInput

    def route(hint):
        workers = upstream.dp_workers(controller)
        if 0 <= hint.dp_rank < len(workers) and workers[hint.dp_rank] is not None:
            sock_send(workers[hint.dp_rank], hint)
        else:
            upstream.dp_broadcast(controller, hint)

    upstream.add_dp_controller_handler(controller, AgentHintReqInput, route)
    return result


def register() -> None:
    check_sglang_version()
    register_hook(TARGET, _after_init_dispatcher, HookType.AFTER)
