"""Hook: sglang.srt.entrypoints.http_server.launch_server (BEFORE) — add the /agent/* routes and
the inline-hint middleware to SGLang's FastAPI app before it starts serving."""

import multiprocessing

from sglang.srt.plugins.hook_registry import HookType

from sglang_agent.patches.contained import register_hook
from sglang_agent.patches._version import check_sglang_version

TARGET = "sglang.srt.entrypoints.http_server.launch_server"


def _before_launch_server(*args, **kwargs):
    from sglang.srt.entrypoints import http_server

    from sglang_agent.server.http_api import add_routes

    if not getattr(http_server.app.state, "sglang_agent_routes", False):
        add_routes(http_server.app)
        http_server.app.state.sglang_agent_routes = True
    return None


def register() -> None:
    check_sglang_version()
    # Only the process that serves HTTP imports the server module for this hook.
    if multiprocessing.current_process().name == "MainProcess":
        register_hook(TARGET, _before_launch_server, HookType.BEFORE)
