"""Hook: TokenizerManager.init_communicators (AFTER) — add `agent_hint_communicator`, SGLang's
own FanOutCommunicator, so the HTTP process can await the scheduler's answer to a hint."""

from sglang.srt.plugins.hook_registry import HookRegistry, HookType

from sglang_agent.patches._version import check_sglang_version

TARGET = "sglang.srt.managers.tokenizer_manager.TokenizerManager.init_communicators"


def _after_init_communicators(result, tokenizer_manager, *args, **kwargs):
    from sglang.srt.managers.communicator import FanOutCommunicator
    from sglang.srt.runtime_context import get_parallel
    from sglang.utils import TypeBasedDispatcher

    from sglang_agent.server.messages import AgentHintReqOutput

    communicator = FanOutCommunicator(tokenizer_manager._dispatch_to_scheduler, get_parallel().num_dp_ranks)
    tokenizer_manager.agent_hint_communicator = communicator
    tokenizer_manager._result_dispatcher += TypeBasedDispatcher([(AgentHintReqOutput, communicator.handle_recv)])
    return result


def register() -> None:
    check_sglang_version()
    HookRegistry.register(TARGET, _after_init_communicators, HookType.AFTER)
