"""Every hook sglang-agent puts into SGLang internals, one module per upstream hook.

Loaded as an SGLang general plugin (entry point group `sglang.srt.plugins`, see setup.py), so
it runs early in every SGLang process (HTTP server, scheduler, detokenizer). Each hook module
checks the SGLang version it was written for and fails loudly on another.

What always happens on load: `--radix-cache-backend agent` and the tree-core backend become
available, and the hint messages are registered for SGLang's IPC. The hooks that change server
behaviour (hint routes and channel, scheduler dispatch, the step clock, request exits, pins giving
way for decode and admission, program-level FCFS, the critical-path reservation, DP hint routing, the HiCache copy engine and its
CPU host pool, pins as reclaimable in /v1/loads) are applied only when the
server was started through `python -m sglang_agent.launch_server` (env SGLANG_AGENT_ENABLE=1).
"""

from __future__ import annotations

import logging
import os

from sglang_agent.patches._version import check_sglang_version

logger = logging.getLogger(__name__)
ENABLE_ENV = "SGLANG_AGENT_ENABLE"


def enabled() -> bool:
    return os.environ.get(ENABLE_ENV) == "1"


def load() -> None:
    """The SGLang plugin entry point."""
    check_sglang_version()
    from sglang_agent.backend import register_backend
    from sglang_agent.patches import ipc_types

    register_backend()
    ipc_types.apply()
    if not enabled():
        return
    from sglang_agent.patches import (
        admission_reservation,
        dp_hint_routing,
        hicache_copy_engine,
        host_pool_cpu,
        http_server_routes,
        loads_pins_reclaimable,
        schedule_policy_fcfs,
        scheduler_decode_room,
        scheduler_dispatch,
        scheduler_pin_release,
        scheduler_request_exit,
        scheduler_step_tick,
        tokenizer_communicator,
    )

    hooks = (scheduler_dispatch, scheduler_step_tick, scheduler_request_exit, scheduler_decode_room,
             scheduler_pin_release, schedule_policy_fcfs, admission_reservation, tokenizer_communicator,
             dp_hint_routing, http_server_routes, host_pool_cpu, hicache_copy_engine, loads_pins_reclaimable)
    for hook in hooks:
        hook.register()
    logger.info("sglang-agent hooks registered")
