"""Hook: Scheduler.get_new_batch_prefill (AFTER) — hard pins never deadlock admission. When no
prefill batch could be formed, nothing is running (so nothing will free memory) and requests
wait, the pins closest to expiry are released until the head of the queue fits."""

from sglang.srt.plugins.hook_registry import HookRegistry, HookType

from sglang_agent.patches.backend_ref import PROCESS, of_scheduler
from sglang_agent.patches._version import check_sglang_version

TARGET = "sglang.srt.managers.scheduler.Scheduler.get_new_batch_prefill"


def _after_get_new_batch_prefill(plan, scheduler, *args, **kwargs):
    backend = of_scheduler(scheduler)
    if backend is None or plan.batch_to_run is not None or not scheduler.waiting_queue:
        return plan
    if not plan.running_batch.is_empty() or scheduler.chunked_req is not None:
        return plan  # running requests will free memory; pins hold until their TTL
    head = scheduler.waiting_queue[0]
    needed = len(head.origin_input_ids) + (head.sampling_params.max_new_tokens or 0)
    cache = scheduler.tree_cache
    backend.make_room_for_admission(lambda: cache.free_tokens() >= needed)
    return plan


def register() -> None:
    check_sglang_version()
    HookRegistry.register(TARGET, _after_get_new_batch_prefill, HookType.AFTER)
