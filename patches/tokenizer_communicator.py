"""Hook: TokenizerManager.init_communicators (AFTER) — add `agent_hint_channel`, the HTTP process's
end of the hint channel (many hints in flight, answers matched by id; server/http_api.py)."""

from sglang.srt.plugins.hook_registry import HookType

from sglang_agent.patches.contained import register_hook
from sglang_agent.patches._version import check_sglang_version

TARGET = "sglang.srt.managers.tokenizer_manager.TokenizerManager.init_communicators"


def _after_init_communicators(result, tokenizer_manager, *args, **kwargs):
    from sglang.srt.runtime_context import get_parallel

    from sglang_agent.server.http_api import HintChannel

    tokenizer_manager.agent_hint_channel = HintChannel(tokenizer_manager, get_parallel().num_dp_ranks)
    return result


def register() -> None:
    check_sglang_version()
    register_hook(TARGET, _after_init_communicators, HookType.AFTER)
