"""Hook: Scheduler.update_running_batch (AROUND) — a pin never makes a running request fail. When
the running batch's next decode step does not fit, pins give way (closest to expiry first, counted
as displaced) before SGLang's own path would retract requests or abort the last one."""

from sglang.srt.plugins.hook_registry import HookType

from sglang_agent.patches.backend_ref import PROCESS, of_scheduler
from sglang_agent.patches.contained import register_hook
from sglang_agent.patches._version import check_sglang_version

TARGET = "sglang.srt.managers.scheduler.Scheduler.update_running_batch"


def _around_update_running_batch(original, scheduler, batch, *args, **kwargs):
    backend = of_scheduler(scheduler)
    if backend is not None and not batch.is_empty() and not batch.check_decode_mem():
        backend.make_room_for_decode(batch.check_decode_mem)
    return original(scheduler, batch, *args, **kwargs)


def register() -> None:
    check_sglang_version()
    register_hook(TARGET, _around_update_running_batch, HookType.AROUND)
