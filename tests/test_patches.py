"""The seam to upstream: version check, plugin registration, program-level FCFS hook."""

from types import SimpleNamespace

import pytest
import sglang
from sglang.srt.managers.schedule_policy import CacheAgnosticPolicy
from sglang.srt.mem_cache.registry import get_radix_cache_factory

from sglang_agent import SGLANG_VERSION
from sglang_agent.patches import _version, load, schedule_policy_fcfs


def test_pinned_sglang_version_is_installed():
    assert sglang.__version__ == SGLANG_VERSION


def test_other_sglang_version_fails_loudly(monkeypatch):
    monkeypatch.setattr(sglang, "__version__", "0.5.99")
    with pytest.raises(_version.SGLangVersionError, match="0.5.23"):
        _version.check_sglang_version()


def test_plugin_load_registers_backend_and_ipc_types(monkeypatch):
    monkeypatch.delenv("SGLANG_AGENT_ENABLE", raising=False)
    load()
    assert get_radix_cache_factory("agent") is not None
    from sglang.srt.managers import io_struct

    from sglang_agent.server.messages import AgentHintReqInput, AgentHintReqOutput

    msg = AgentHintReqInput(rid="r", kind="tool_end", body_json='{"session_id": "s"}')
    assert io_struct.msgpack_decode(io_struct.msgpack_encode(msg)) == msg
    assert AgentHintReqOutput in io_struct._all_types


def _req(rid, arrival):
    return SimpleNamespace(rid=rid, time_stats=SimpleNamespace(wait_queue_entry_time=arrival))


def test_program_fcfs_hook_orders_resumed_turn_by_program_arrival():
    arrivals = {"resumed-turn": 1.0}
    controller = SimpleNamespace(args=SimpleNamespace(program_fcfs=True), program_arrival=arrivals.get)
    policy = SimpleNamespace(
        tree_cache=SimpleNamespace(agent_controller=controller),
        policy=CacheAgnosticPolicy.FCFS,
        enable_priority_scheduling=False,
    )
    queue = [_req("newcomer-1", 10.0), _req("newcomer-2", 11.0), _req("resumed-turn", 12.0)]
    schedule_policy_fcfs._after_calc_priority(None, policy, queue)
    assert [r.rid for r in queue] == ["resumed-turn", "newcomer-1", "newcomer-2"]
    controller.args.program_fcfs = False
    queue = [_req("newcomer-1", 10.0), _req("resumed-turn", 12.0)]
    schedule_policy_fcfs._after_calc_priority(None, policy, queue)
    assert [r.rid for r in queue] == ["newcomer-1", "resumed-turn"]


def test_hard_pins_give_way_only_when_nothing_runs():
    from sglang_agent.patches import scheduler_pin_release

    released = []
    head = SimpleNamespace(origin_input_ids=[1] * 100, sampling_params=SimpleNamespace(max_new_tokens=28))
    scheduler = SimpleNamespace(tree_cache=SimpleNamespace(release_pins_for_admission=released.append),
                                waiting_queue=[head])
    idle = SimpleNamespace(batch_to_run=None, running_batch=SimpleNamespace(is_empty=lambda: True))
    busy = SimpleNamespace(batch_to_run=None, running_batch=SimpleNamespace(is_empty=lambda: False))
    assert scheduler_pin_release._after_get_new_batch_prefill(busy, scheduler) is busy and released == []
    assert scheduler_pin_release._after_get_new_batch_prefill(idle, scheduler) is idle and released == [128]
