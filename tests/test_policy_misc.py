from sglang_agent.policy.eviction import PINNED_TIER, UNPINNED_TIER, eviction_key
from sglang_agent.policy.pins import PinHolding, plan_pin
from sglang_agent.policy.program_fcfs import program_fcfs_key


def test_eviction_key_order():
    now, lru_now, pace = 10.0, 100.0, 5.0
    keys = {
        "pinned_late": eviction_key(50.0, None, 1.0, now, lru_now, pace),
        "pinned_soon": eviction_key(20.0, None, 9.0, now, lru_now, pace),
        "expired_pin": eviction_key(5.0, None, 30.0, now, lru_now, pace),
        "far_step": eviction_key(None, 12, 99.0, now, lru_now, pace),  # ranks like last used at 40
        "unknown_old": eviction_key(None, None, 20.0, now, lru_now, pace),
        "unknown_recent": eviction_key(None, None, 97.0, now, lru_now, pace),
        "next_step": eviction_key(None, 0, 10.0, now, lru_now, pace),  # needed now: like "used now"
    }
    order = sorted(keys, key=keys.get)
    assert order == ["unknown_old", "expired_pin", "far_step", "unknown_recent", "next_step", "pinned_soon",
                     "pinned_late"]
    assert keys["pinned_late"][0] == PINNED_TIER and keys["expired_pin"][0] == UNPINNED_TIER


def test_unknown_steps_rank_with_lru_not_before_every_workflow_node():
    """Defect (issue "No lost work", 11): with any workflow declared, nodes no workflow knows got
    steps = infinity and were evicted before every workflow node, whatever their recency. Failed
    on main with: 'recent_tenant' sorted before 'far_workflow'."""
    now, lru_now, pace = 0.0, 1000.0, 2.0
    far_workflow = eviction_key(None, 300, 999.0, now, lru_now, pace)  # needed 300 steps from now
    recent_tenant = eviction_key(None, None, 998.0, now, lru_now, pace)  # used 2 accesses ago
    assert far_workflow < recent_tenant
    # Until the pace is known the workflow node ranks by its own LRU key, like everyone else.
    assert eviction_key(None, 300, 999.0, now, lru_now, None) > recent_tenant


def test_non_lru_base_ignores_steps():
    lfu = (3, 7.0)
    assert eviction_key(None, 2, lfu, 0.0, 100.0, 1.0) == (UNPINNED_TIER, lfu)


def test_no_hints_means_base_order():
    assert sorted([3, 1, 2], key=lambda b: eviction_key(None, None, b, 0.0)) == [1, 2, 3]


def test_plan_pin_within_cap():
    d = plan_pin(10, 50, 100, [], new_deadline=5.0)
    assert d.admit and d.release == ()


def test_plan_pin_displaces_pins_closest_to_expiry():
    holdings = [PinHolding("a", 30.0, 40), PinHolding("b", 10.0, 30), PinHolding("c", 20.0, 30)]
    d = plan_pin(50, 100, 100, holdings, new_deadline=25.0)
    assert d.admit and d.release == ("b", "c")


def test_plan_pin_never_displaces_pins_that_outlive_it():
    holdings = [PinHolding("a", 30.0, 60)]
    d = plan_pin(50, 60, 100, holdings, new_deadline=25.0)
    assert not d.admit and d.release == ()


def test_plan_pin_larger_than_cap():
    assert not plan_pin(101, 0, 100, [], 1.0).admit


def test_program_fcfs_key():
    assert program_fcfs_key(5.0, None) == 5.0
    assert program_fcfs_key(50.0, 1.0) == 1.0
    queue = sorted([("newcomer", 10.0, None), ("resumed", 40.0, 2.0)], key=lambda r: program_fcfs_key(r[1], r[2]))
    assert [r[0] for r in queue] == ["resumed", "newcomer"]
