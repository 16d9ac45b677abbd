"""Hook: Scheduler.get_new_batch_prefill (AFTER) — hard pins never deadlock admission and never
stall it longer than --agent-max-admission-stall-s. When no prefill batch could be formed and
requests wait:
- nothing is running (so nothing will free memory): the pins closest to expiry are released until
  the head of the queue fits, at once;
- requests are running: once the head has waited the stall bound and pins are what stands in its
  way (it fits in free + evictable + pinned memory beyond what the running requests may still need,
  counted as SGLang's own admission counts it), pins give way until it fits, and the running batch
  is no longer marked full, so the next step admits it (upstream would have evicted that memory
  for it at once)."""

from sglang.srt.plugins.hook_registry import HookType

from sglang_agent.patches.backend_ref import PROCESS, of_scheduler
from sglang_agent.patches.contained import register_hook
from sglang_agent.patches._version import check_sglang_version

TARGET = "sglang.srt.managers.scheduler.Scheduler.get_new_batch_prefill"


def running_reserve_tokens(scheduler, batch) -> int:
    """What the running requests may still need, as PrefillAdder counts it (remaining output,
    clipped, times the scheduler's new-token ratio; fixed-length requests in full)."""
    from sglang.srt.managers.schedule_policy import CLIP_MAX_NEW_TOKENS

    total = 0.0
    estimate = scheduler.new_token_ratio_tracker.current
    for req in batch.reqs:
        ratio = 1.0 if req.sampling_params.ignore_eos else estimate
        total += min(max(req.sampling_params.max_new_tokens - len(req.output_ids), 0), CLIP_MAX_NEW_TOKENS) * ratio
    return int(total)


def _after_get_new_batch_prefill(plan, scheduler, *args, **kwargs):
    from sglang_agent.patches.admission_reservation import request_need_tokens

    backend = of_scheduler(scheduler)
    if backend is None or plan.batch_to_run is not None or not scheduler.waiting_queue:
        return plan
    if scheduler.chunked_req is not None:
        return plan
    head = scheduler.waiting_queue[0]
    cache = scheduler.tree_cache
    if plan.running_batch.is_empty():
        needed = len(head.origin_input_ids) + (head.sampling_params.max_new_tokens or 0)
        backend.make_room_for_admission(lambda: cache.free_tokens() >= needed)
        return plan
    released = backend.unblock_stalled_head(head.rid, request_need_tokens(head),
                                            running_reserve_tokens(scheduler, plan.running_batch))
    if released:
        plan.running_batch.batch_is_full = False
    return plan


def register() -> None:
    check_sglang_version()
    register_hook(TARGET, _after_get_new_batch_prefill, HookType.AFTER)
