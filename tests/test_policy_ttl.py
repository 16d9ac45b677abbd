import pytest

from sglang_agent.policy.ttl import (
    DECLARED_DURATION_SLACK,
    EvictionCost,
    ToolDurationModel,
    choose_ttl,
    memory_cost_rate,
)

COST = EvictionCost(recompute_s=1.0, reload_s=None, queue_delay_s=0.5)


def test_idle_server_pins_until_the_slowest_observed_return():
    decision = choose_ttl([0.2, 0.5, 3.0], COST, memory_cost_rate_s_per_s=0.0, max_ttl_s=60)
    assert decision.ttl_s == 3.0
    assert decision.p_return_within_ttl == 1.0
    assert decision.expected_benefit_s == pytest.approx(1.5)


def test_memory_pressure_cuts_off_the_long_tail():
    # Saved 1.5 s per return; holding costs 1 s per second: only the fast returns pay off.
    # tau=0.2: 1/3*1.5 - (0.2) = 0.3; tau=0.5: 2/3*1.5 - (0.2+0.5+0.5)/3 = 0.6; tau=3: 1.5 - 3.7/3 < 0.3
    decision = choose_ttl([0.2, 0.5, 3.0], COST, memory_cost_rate_s_per_s=1.0, max_ttl_s=60)
    assert decision.ttl_s == 0.5
    assert decision.p_return_within_ttl == pytest.approx(2 / 3)


def test_no_pin_when_memory_costs_more_than_any_return_saves():
    decision = choose_ttl([5.0, 10.0], COST, memory_cost_rate_s_per_s=10.0, max_ttl_s=60)
    assert decision.ttl_s == 0.0


def test_ttl_capped_and_ties_take_the_shorter_ttl():
    decision = choose_ttl([0.1, 3.0, 100.0], COST, memory_cost_rate_s_per_s=0.0, max_ttl_s=5.0)
    assert decision.ttl_s == 3.0  # 5 s (the cap) catches no more returns than 3 s
    assert decision.p_return_within_ttl == pytest.approx(2 / 3)
    assert choose_ttl([100.0, 200.0], COST, 0.0, max_ttl_s=5.0).ttl_s == 0.0


def test_reload_from_host_is_used_when_cheaper():
    assert EvictionCost(recompute_s=2.0, reload_s=0.5, queue_delay_s=1.0).saved_s == 1.5
    assert EvictionCost(recompute_s=0.2, reload_s=0.5, queue_delay_s=1.0).saved_s == 1.2


def test_declared_duration_wins_over_history():
    model = ToolDurationModel(prior_s=(1.0,))
    model.observe("bash", 30.0)
    assert model.samples("bash", declared_s=2.0) == [2.0 * (1 + DECLARED_DURATION_SLACK)]
    assert sorted(model.samples("bash")) == [1.0, 30.0]
    assert model.samples("unseen") == [1.0]


def test_history_window_and_bad_duration():
    model = ToolDurationModel(prior_s=(), window=2)
    for d in (1.0, 2.0, 3.0):
        model.observe("t", d)
    assert model.samples("t") == [2.0, 3.0]
    with pytest.raises(ValueError):
        model.observe("t", -1.0)


def test_memory_cost_is_free_without_waiters():
    assert memory_cost_rate(0.5, waiting_requests=0) == 0.0
    assert memory_cost_rate(0.25, waiting_requests=4, scale=2.0) == 2.0
