"""Hook: SchedulerLoadInquirer.get_loads (AFTER) — `/v1/loads` counts hard-pinned KV as reclaimable,
as upstream counts its evictable cache, not as used. A gateway reads `token_usage` there: SGLang's
`smg` leaves a worker at >= 0.8 out of routing, so pins counted as used sent a pinned worker's
sessions, their resumed turns included, to another worker, where they missed their prefix
(measured; see the README's "Many workers"). Pins give way to a running request's decode and to
admission when nothing else can free memory; what `/agent/stats` reports (pinned_tokens) is
unchanged, and so are the scheduler's own decisions (this changes only the snapshot)."""

from sglang.srt.plugins.hook_registry import HookType

from sglang_agent.patches.contained import register_hook
from sglang_agent.patches._version import check_sglang_version

TARGET = "sglang.srt.managers.scheduler_components.load_inquirer.SchedulerLoadInquirer.get_loads"


def _after_get_loads(snapshot, inquirer, *args, **kwargs):
    cache = inquirer.pool_stats_observer.tree_cache
    backend = getattr(cache, "agent_backend", None)
    if backend is None or getattr(cache, "pin_mode", None) != "hard" or not snapshot.max_total_num_tokens:
        return snapshot  # soft pins are evictable already
    pinned = min(cache.pinned_tokens(), snapshot.num_used_tokens)
    if pinned <= 0:
        return snapshot
    snapshot.num_used_tokens -= pinned
    snapshot.num_total_tokens = max(0, snapshot.num_total_tokens - pinned)
    snapshot.num_active_tokens = max(0, snapshot.num_active_tokens - pinned)
    snapshot.token_usage = round(snapshot.num_used_tokens / snapshot.max_total_num_tokens, 4)
    return snapshot


def register() -> None:
    check_sglang_version()
    register_hook(TARGET, _after_get_loads, HookType.AFTER)
