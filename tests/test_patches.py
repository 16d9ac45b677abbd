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


def test_plugin_load_with_agent_enabled_registers_every_hook_contained(monkeypatch):
    from sglang.srt.plugins.hook_registry import HookRegistry

    seen = []
    monkeypatch.setattr(HookRegistry, "register", lambda target, hook, hook_type: seen.append((target, hook)))
    monkeypatch.setenv("SGLANG_AGENT_ENABLE", "1")
    load()
    targets = [t for t, _ in seen]
    assert "sglang.srt.managers.scheduler.Scheduler.get_new_batch_prefill" in targets and len(targets) >= 15
    assert all(getattr(hook, "__wrapped__", hook) is not hook for _, hook in seen)  # contained wrappers


def _req(rid, arrival):
    return SimpleNamespace(rid=rid, time_stats=SimpleNamespace(wait_queue_entry_time=arrival))


def test_program_fcfs_hook_orders_resumed_turn_by_program_arrival():
    arrivals = {"resumed-turn": 1.0}
    backend = SimpleNamespace(controller=SimpleNamespace(args=SimpleNamespace(program_fcfs=True)),
                              program_arrival=arrivals.get)
    policy = SimpleNamespace(
        tree_cache=SimpleNamespace(agent_backend=backend),
        policy=CacheAgnosticPolicy.FCFS,
        enable_priority_scheduling=False,
    )
    queue = [_req("newcomer-1", 10.0), _req("newcomer-2", 11.0), _req("resumed-turn", 12.0)]
    schedule_policy_fcfs._after_calc_priority(None, policy, queue)
    assert [r.rid for r in queue] == ["resumed-turn", "newcomer-1", "newcomer-2"]
    backend.controller.args.program_fcfs = False
    queue = [_req("newcomer-1", 10.0), _req("resumed-turn", 12.0)]
    schedule_policy_fcfs._after_calc_priority(None, policy, queue)
    assert [r.rid for r in queue] == ["newcomer-1", "resumed-turn"]


def test_hard_pins_give_way_at_once_when_nothing_runs_and_after_the_stall_bound_otherwise():
    from sglang_agent.patches import scheduler_pin_release

    asked, stalled = [], []
    head = SimpleNamespace(rid="head", origin_input_ids=[1] * 100, full_untruncated_fill_ids=[1] * 100,
                           prefix_len=40, output_ids=[], sampling_params=SimpleNamespace(max_new_tokens=28))
    cache = SimpleNamespace(free_tokens=lambda: 100)
    cache.agent_backend = SimpleNamespace(
        make_room_for_admission=lambda fits: asked.append(fits()),
        unblock_stalled_head=lambda rid, need, reserve: stalled.append((rid, need, reserve)) or ["s1"])
    # SGLang's own tracker, so a rename upstream fails here and not in a running scheduler.
    from sglang.srt.managers.scheduler_components.new_token_ratio_tracker import NewTokenRatioTracker

    scheduler = SimpleNamespace(tree_cache=cache, waiting_queue=[head], chunked_req=None,
                                new_token_ratio_tracker=NewTokenRatioTracker(init=0.5, min=0.1, decay=0.01, current=0.5))
    idle = SimpleNamespace(batch_to_run=None, running_batch=SimpleNamespace(is_empty=lambda: True))
    runner = SimpleNamespace(output_ids=[0] * 10, sampling_params=SimpleNamespace(max_new_tokens=50, ignore_eos=False))
    fixed = SimpleNamespace(output_ids=[], sampling_params=SimpleNamespace(max_new_tokens=8, ignore_eos=True))
    busy = SimpleNamespace(batch_to_run=None, running_batch=SimpleNamespace(
        is_empty=lambda: False, reqs=[runner, fixed], batch_is_full=True))
    assert scheduler_pin_release._after_get_new_batch_prefill(busy, scheduler) is busy and asked == []
    # The head's uncached prompt and clipped output; the running requests' remaining output as
    # SGLang's admission counts it (40 x 0.5 + 8 x 1.0).
    assert stalled == [("head", 60 + 28, 28)]
    assert busy.running_batch.batch_is_full is False  # pins gave way: the next step tries again
    assert scheduler_pin_release._after_get_new_batch_prefill(idle, scheduler) is idle
    assert asked == [False]  # 100 free < 128 needed: pins are asked to give way


def test_the_reservation_puts_critical_requests_first_and_holds_back_others():
    from sglang.srt.managers.schedule_policy import AddReqResult

    from sglang_agent.patches import admission_reservation

    def req(rid):
        return SimpleNamespace(rid=rid, origin_input_ids=[1] * 50, full_untruncated_fill_ids=[1] * 50,
                               prefix_len=10, output_ids=[], sampling_params=SimpleNamespace(max_new_tokens=20))

    rounds, admitted = [], []
    backend = SimpleNamespace(
        reservation_active=lambda: True,
        is_critical_request=lambda rid: rid.startswith("crit"),
        queue_rank=lambda rid: 0 if rid.startswith("crit") or rid == "side-old" else 1,
        begin_admission_round=rounds.append,
        may_admit=lambda rid, need, room: rid.startswith("crit") or room - need >= 100,
        admitted=lambda rid, need: admitted.append((rid, need)))
    policy = SimpleNamespace(tree_cache=SimpleNamespace(agent_backend=backend))
    queue = [req("side-1"), req("side-old"), req("crit-1"), req("side-2")]
    admission_reservation._after_calc_priority(None, policy, queue)
    # Critical first, but not ahead of one that waited the stall bound already.
    assert [r.rid for r in queue] == ["side-old", "crit-1", "side-1", "side-2"] and rounds == [60]
    queue.pop(0)
    adder = SimpleNamespace(tree_cache=policy.tree_cache, rem_total_tokens=150, can_run_list=[])

    def original(adder, r, *args, **kwargs):
        adder.can_run_list.append(r)
        return AddReqResult.CONTINUE

    assert admission_reservation._around_add_one_req(original, adder, queue[0], False, None) is AddReqResult.CONTINUE
    assert admitted == [("crit-1", 60)]
    # 150 - 60 < 100 held: the side agent waits, and the round ends without marking the batch full.
    assert admission_reservation._around_add_one_req(original, adder, queue[1], False, None) is AddReqResult.OTHER
    assert [r.rid for r in adder.can_run_list] == ["crit-1"]


def test_pins_give_way_before_decode_would_retract():
    """The decode hook asks the backend for room only when the batch does not fit, then runs
    upstream's own update (which retracts only if pins could not make room)."""
    from sglang_agent.patches import scheduler_decode_room

    room = {"fits": False}
    calls = []
    batch = SimpleNamespace(is_empty=lambda: False, check_decode_mem=lambda: room["fits"])
    backend = SimpleNamespace(make_room_for_decode=lambda fits: (calls.append("room"), room.update(fits=True)))
    scheduler = SimpleNamespace(tree_cache=SimpleNamespace(agent_backend=backend))
    original = lambda sched, b: calls.append("upstream") or b  # noqa: E731
    assert scheduler_decode_room._around_update_running_batch(original, scheduler, batch) is batch
    assert calls == ["room", "upstream"]
    calls.clear()
    scheduler_decode_room._around_update_running_batch(original, scheduler, batch)
    assert calls == ["upstream"]  # fits: nothing released


def test_step_ticks_ride_the_inputs_and_are_taken_out_before_sglang_sees_them():
    from sglang_agent.patches import scheduler_step_tick
    from sglang_agent.patches.backend_ref import PROCESS
    from sglang_agent.server.messages import AgentStepTick

    ticks = []
    scheduler = SimpleNamespace(tree_cache=SimpleNamespace(agent_backend=object()))
    local = scheduler_step_tick._after_poll_timeout_aborts([], scheduler)
    assert len(local) == 1 and isinstance(local[0], AgentStepTick)
    PROCESS["backend"] = SimpleNamespace(tick=ticks.append)
    try:
        received = ["req-1", *local, "req-2"]
        assert scheduler_step_tick._after_recv_requests(received, object()) == ["req-1", "req-2"]
        assert ticks == [local[0].now_s]
    finally:
        PROCESS["backend"] = None


# ---- no exception of ours reaches the scheduler ---------------------------------------------------

def _failing(*args, **kwargs):
    raise AttributeError("'Scheduler' object has no attribute 'renamed_upstream_field'")


def test_a_failing_hook_is_contained_reported_and_sglang_goes_on():
    from sglang.srt.plugins.hook_registry import HookType

    from sglang_agent.backend import MAX_CONSECUTIVE_FAILURES, build_backend
    from sglang_agent.config import AgentServerArgs
    from sglang_agent.patches import contained
    from sglang_agent.patches.backend_ref import PROCESS

    backend = build_backend(160, AgentServerArgs())
    PROCESS["backend"] = backend
    try:
        # AFTER: upstream's result stands.
        after = contained.contain(_failing, HookType.AFTER, "hook:after")
        assert after("upstream result", object()) == "upstream result"
        # BEFORE: the call goes on with its own arguments.
        assert contained.contain(_failing, HookType.BEFORE, "hook:before")(object()) is None
        # AROUND, failing before upstream: upstream runs as is.
        calls = []
        upstream = lambda owner, x: calls.append(x) or x * 2  # noqa: E731
        around = contained.contain(lambda original, owner, x: _failing(), HookType.AROUND, "hook:around")
        assert around(upstream, object(), 21) == 42 and calls == [21]
        # AROUND, failing after upstream ran: its result, upstream not run twice.
        late = contained.contain(lambda original, owner, x: (original(owner, x), _failing()), HookType.AROUND,
                                 "hook:late")
        assert late(upstream, object(), 5) == 10 and calls == [21, 5]
        assert backend.controller.stats.internal_errors == 4 and not backend.disabled

        # Upstream's own exception is SGLang's: it passes through, and is not counted as ours.
        def upstream_fails(owner):
            raise MemoryError("upstream OOM")
        passthrough = contained.contain(lambda original, owner: original(owner), HookType.AROUND, "hook:pass")
        with pytest.raises(MemoryError):
            passthrough(upstream_fails, object())
        assert backend.controller.stats.internal_errors == 4

        # A hook failing at every step stops agent behaviour (served as upstream), never the server.
        for _ in range(MAX_CONSECUTIVE_FAILURES):
            after("result", object())
        assert backend.disabled
    finally:
        PROCESS["backend"] = None


def test_every_hook_is_registered_contained(monkeypatch):
    import pathlib

    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    from sglang_agent.patches import contained

    seen = []
    monkeypatch.setattr(HookRegistry, "register", lambda target, hook, hook_type: seen.append((target, hook)))
    contained.register_hook("pkg.mod.Class.method", _failing, HookType.AFTER)
    assert len(seen) == 1 and seen[0][0] == "pkg.mod.Class.method"
    assert seen[0][1]("upstream", object()) == "upstream"  # what SGLang gets is the contained hook

    import sglang_agent.patches as patches

    root = pathlib.Path(patches.__file__).parent
    raw = [p.name for p in root.glob("*.py") if p.name != "contained.py" and "HookRegistry.register(" in p.read_text()]
    assert raw == [], f"hooks registered without containment: {raw}"
    registered = [p.name for p in root.glob("*.py") if "register_hook(" in p.read_text()]
    assert len(registered) >= 12
