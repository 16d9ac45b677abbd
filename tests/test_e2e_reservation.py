"""Pins and the critical-path reservation on real CPU servers, with a request decoding at the
pool's edge throughout:
- pins hold other tenants back at most --agent-max-admission-stall-s: with 3 pins live, a tenant
  whose prompt fits only once they give way is served about as soon as on upstream SGLang (before,
  pins gave way only when nothing ran: it waited for their TTL, 24 s where upstream took 1 s);
- a DAG workflow under pool pressure with --agent-reserve-fraction: the critical agent's prefix
  outlives the side agents' turns that fill the pool, and the bystander finishes whole.
check_integrity runs in the servers after every hint and request event."""

from __future__ import annotations

import time

import pytest
import requests

from server_fixture import RunningServer
from test_e2e_no_lost_work import CHECKED, Streamed, assert_finished_whole, generate, ids, post, retractions, stats

POOL_TOKENS = 4096


def timed_tenant(server, seed: int, prompt_tokens: int) -> float:
    """A one-off prompt of another tenant; seconds until it was answered."""
    started = time.monotonic()
    generate(server, ids(seed, prompt_tokens), max_new_tokens=2)
    return time.monotonic() - started


def pinned_sessions_and_bystander(server, hints: bool) -> Streamed:
    """3 agent sessions of 600 tokens, each in a tool call pinned for 60 s (with `hints`), then a
    request decoding 1,500 tokens: ~500 tokens of the pool stay free beside them."""
    for s in range(3):
        # A client TTL (cache_control's way): pinned 60 s whatever the TTL policy would price.
        agent = {"session_id": f"stall-{s}", "tool_start": {"tool_name": "bash", "ttl_s": 60}}
        generate(server, ids(500 + s, 600), agent=agent if hints else None)
    bystander = Streamed(server, ids(900, 300), 1500, ignore_eos=True)
    assert bystander.first.wait(300)
    return bystander


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    srv = RunningServer(tmp_path_factory.mktemp("e2e-stall-upstream"), ["--max-total-tokens", str(POOL_TOKENS)],
                        module="sglang.launch_server")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def ours(tmp_path_factory):
    srv = RunningServer(tmp_path_factory.mktemp("e2e-reserve"), [
        "--max-total-tokens", str(POOL_TOKENS), "--enable-metrics", "--agent-reserve-fraction", "0.3"], env=CHECKED)
    yield srv
    srv.stop()


def test_pins_hold_other_tenants_back_no_longer_than_the_stall_bound(ours, upstream):
    waited = {}
    for name, server in (("upstream", upstream), ("ours", ours)):
        bystander = pinned_sessions_and_bystander(server, hints=name == "ours")
        before = stats(server) if name == "ours" else None
        # 1,500 tokens: beyond the free room beside the bystander, within it once the pins are gone.
        waited[name] = timed_tenant(server, seed=77, prompt_tokens=1500)
        assert_finished_whole(bystander.result(), 1500)
        if name == "ours":
            after = stats(server)
            assert after["pins_released_for_stalled_requests"] > before["pins_released_for_stalled_requests"]
            assert after["internal_errors"] == 0 and retractions(server) == 0
            for s in range(3):
                post(server, "/agent/session/close", {"session_id": f"stall-{s}"})
    # The pins' TTL is 60 s; the bound is 1 s (one more scheduler step or two on this machine).
    assert waited["ours"] <= waited["upstream"] + 4.0, waited


def test_a_critical_agents_prefix_outlives_side_agents_filling_the_pool(ours):
    """planner -> main -> check -> writer and planner -> side{1,2} -> writer: main is on the critical
    path (the longest chain), the side agents are not. While main's tool runs elsewhere (no pin:
    its turn ended without one) the side agents' turns push 1.5 pools of prompts through the pool
    around a bystander decoding at its edge; main's next turn still finds its prefix."""
    agents = [{"agent_id": a, "session_id": f"wf/{a}"} for a in ("planner", "main", "check", "side1", "side2", "writer")]
    edges = [["planner", "main"], ["main", "check"], ["check", "writer"], ["planner", "side1"],
             ["planner", "side2"], ["side1", "writer"], ["side2", "writer"]]
    post(ours, "/agent/workflow", {"workflow_id": "wf", "agents": agents, "edges": edges, "dag": True})

    def turn(agent, input_ids, step=True):
        body = {"session_id": f"wf/{agent}"}
        if step:
            body["workflow_step"] = {"workflow_id": "wf", "agent_id": agent}
        return generate(ours, input_ids, agent=body)

    turn("planner", ids(1, 400))
    main_prompt = ids(2, 600)
    turn("main", main_prompt)
    held = stats(ours)
    assert held["critical_workflows"] == 1 and held["reserved_tokens"] > 0
    bystander = Streamed(ours, ids(3, 300), 1200, ignore_eos=True)
    assert bystander.first.wait(300)
    side_prompts = {(agent, i): ids(100 + 10 * n + i, 1000) for n, agent in enumerate(("side1", "side2")) for i in range(3)}
    for (agent, i), prompt in side_prompts.items():
        turn(agent, prompt, step=i == 0)
    resumed = turn("main", main_prompt + ids(4, 20), step=False)
    assert resumed["meta_info"]["cached_tokens"] >= len(main_prompt) - 1, resumed["meta_info"]
    # The pressure was real: the side agents' first prompts were evicted meanwhile.
    first = generate(ours, side_prompts[("side1", 0)], max_new_tokens=1)
    assert first["meta_info"]["cached_tokens"] < 500, first["meta_info"]
    assert_finished_whole(bystander.result(), 1200)
    after = stats(ours)
    assert after["internal_errors"] == 0 and retractions(ours) == 0
    metrics = requests.get(ours.url + "/metrics", timeout=30).text
    assert "sglang:agent_reserved_tokens{" in metrics and "sglang:agent_requests_held_by_reservation_total{" in metrics
    for agent in ("planner", "main", "side1", "side2"):
        post(ours, "/agent/session/close", {"session_id": f"wf/{agent}"})
