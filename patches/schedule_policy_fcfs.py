"""Hook: SchedulePolicy.calc_priority (AFTER) — program-level FCFS. Under the fcfs policy a
resumed agent turn is ordered by its program's first arrival (policy/program_fcfs.py)."""

from sglang.srt.plugins.hook_registry import HookType

from sglang_agent.patches.contained import register_hook
from sglang_agent.patches._version import check_sglang_version

TARGET = "sglang.srt.managers.schedule_policy.SchedulePolicy.calc_priority"


def _after_calc_priority(result, policy, waiting_queue, *args, **kwargs):
    from sglang.srt.managers.schedule_policy import CacheAgnosticPolicy

    from sglang_agent.policy.program_fcfs import program_fcfs_key

    backend = getattr(policy.tree_cache, "agent_backend", None)
    if backend is None or not backend.controller.args.program_fcfs or policy.policy != CacheAgnosticPolicy.FCFS:
        return result
    if policy.enable_priority_scheduling:
        return result  # explicit request priorities win; the upstream sort already ran
    arrivals = {req.rid: backend.program_arrival(req.rid) for req in waiting_queue}
    waiting_queue.sort(key=lambda req: program_fcfs_key(req.time_stats.wait_queue_entry_time, arrivals[req.rid]))
    return result


def register() -> None:
    check_sglang_version()
    register_hook(TARGET, _after_calc_priority, HookType.AFTER)
