"""Hooks of the critical-path reservation (policy/reservation.py, TokenCake's spatial scheduler):
- SchedulePolicy.calc_priority (AFTER, after program-level FCFS): requests of agents on a live
  workflow's critical path go ahead of the others that have waited less than
  --agent-max-admission-stall-s (a stable sort keeps every other order), and the admission round
  learns what the critical requests waiting need;
- PrefillAdder.add_one_req (AROUND): a request off the critical path may take only memory beyond
  what is held for critical agents (SGLang's own remaining budget, `rem_total_tokens`), unless it
  has waited --agent-max-admission-stall-s; held back, it ends the round like a full budget would
  (OTHER, not NO_TOKEN: the running batch is not marked full, so a critical request arriving next
  step is admitted at once). Off (no hook does anything) with --agent-reserve-fraction 0."""

from sglang.srt.plugins.hook_registry import HookType

from sglang_agent.patches.contained import register_hook
from sglang_agent.patches._version import check_sglang_version

PRIORITY = "sglang.srt.managers.schedule_policy.SchedulePolicy.calc_priority"
ADD = "sglang.srt.managers.schedule_policy.PrefillAdder.add_one_req"


def request_need_tokens(req) -> int:
    """The memory SGLang's admission asks of a request: its uncached prompt and its output as
    admission clips it."""
    from sglang.srt.managers.schedule_policy import CLIP_MAX_NEW_TOKENS

    prompt = len(req.full_untruncated_fill_ids) or len(req.origin_input_ids)
    output = min(max((req.sampling_params.max_new_tokens or 0) - len(req.output_ids), 0), CLIP_MAX_NEW_TOKENS)
    return max(prompt - req.prefix_len, 0) + output


def _after_calc_priority(result, policy, waiting_queue, *args, **kwargs):
    backend = getattr(policy.tree_cache, "agent_backend", None)
    if backend is None or not backend.reservation_active():
        return result
    rank = {req.rid: backend.queue_rank(req.rid) for req in waiting_queue}
    waiting_queue.sort(key=lambda req: rank[req.rid])
    backend.begin_admission_round(sum(request_need_tokens(r) for r in waiting_queue
                                      if backend.is_critical_request(r.rid)))
    return result


def _around_add_one_req(original, adder, req, *args, **kwargs):
    from sglang.srt.managers.schedule_policy import AddReqResult

    backend = getattr(adder.tree_cache, "agent_backend", None)
    if backend is None or not backend.reservation_active():
        return original(adder, req, *args, **kwargs)
    need = request_need_tokens(req)
    if not backend.may_admit(req.rid, need, int(adder.rem_total_tokens)):
        return AddReqResult.OTHER
    result = original(adder, req, *args, **kwargs)
    if adder.can_run_list and adder.can_run_list[-1] is req:
        backend.admitted(req.rid, need)
    return result


def register() -> None:
    check_sglang_version()
    register_hook(PRIORITY, _after_calc_priority, HookType.AFTER)
    register_hook(ADD, _around_add_one_req, HookType.AROUND)
