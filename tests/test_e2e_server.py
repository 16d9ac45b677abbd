"""End to end on a real SGLang server on the CPU: a two-turn agent with a tool call between its
turns while other requests fill the KV pool; hint API errors; OpenAI extra_body; session close."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from server_fixture import RunningServer

POOL_TOKENS = 2048
WORDS = "the agent calls a tool and waits for the result before the next turn".split()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = RunningServer(tmp_path_factory.mktemp("e2e"), ["--max-total-tokens", str(POOL_TOKENS)])
    yield srv
    srv.stop()


def prompt(seed: int, words: int = 120) -> str:
    rnd = random.Random(seed)
    return " ".join(f"{rnd.choice(WORDS)}{rnd.randint(0, 99)}" for _ in range(words))


def generate(server, text, agent=None, max_new_tokens=8, **extra):
    body = {"text": text, "sampling_params": {"max_new_tokens": max_new_tokens, "temperature": 0, "ignore_eos": True},
            **extra}
    if agent is not None:
        body["agent"] = agent
    return requests.post(server.url + "/generate", json=body, timeout=120)


def stats(server) -> dict:
    r = requests.get(server.url + "/agent/stats", timeout=30)
    assert r.status_code == 200
    return r.json()


def test_pin_keeps_prefix_across_tool_call_under_pool_pressure(server):
    turn1 = {s: generate(server, prompt(seed), {"session_id": s}).json() for s, seed in (("pinned", 1), ("unpinned", 2))}
    start = requests.post(server.url + "/agent/tool_start",
                          json={"session_id": "pinned", "tool_name": "bash", "expected_duration_s": 40}, timeout=30)  # outlasts a slow CI
    assert start.status_code == 200, start.text
    assert start.json()["ttl_s"] > 0 and start.json()["pinned_tokens"] > 0
    assert stats(server)["pinned_tokens"] == start.json()["pinned_tokens"]

    # Other traffic fills the pool several times over while the tool runs.
    filled = 0
    for i in range(10):
        filled += generate(server, prompt(100 + i)).json()["meta_info"]["prompt_tokens"]
    assert filled > 1.5 * POOL_TOKENS

    end = requests.post(server.url + "/agent/tool_end", json={"session_id": "pinned"}, timeout=30)
    assert end.status_code == 200 and end.json()["pin_expired_before_return"] is False
    cached = {}
    for s, seed in (("pinned", 1), ("unpinned", 2)):
        resumed = prompt(seed) + turn1[s]["text"] + " tool returned: ok"
        cached[s] = generate(server, resumed, {"session_id": s}).json()["meta_info"]["cached_tokens"]
    first_prompt = turn1["pinned"]["meta_info"]["prompt_tokens"]
    assert cached["pinned"] >= first_prompt, cached  # the whole first turn is still on GPU
    assert cached["unpinned"] < 16, cached  # LRU evicted the session without a pin
    after = stats(server)
    assert after["resumed_turns_with_hit"] >= 1 and after["resumed_cached_tokens"] >= first_prompt


BAD_HINTS = [
    ("post", "/agent/tool_end", {"session_id": "never-seen"}, 404),
    ("post", "/agent/tool_start", {"session_id": "never-seen", "tool_name": "bash"}, 404),
    ("post", "/agent/session/close", {"session_id": "never-seen"}, 404),
    ("post", "/agent/tool_end", {"session_id": "idle"}, 409),
    ("post", "/agent/tool_start", {"session_id": "idle", "tool_name": "bash", "expected_duration_s": -3}, 400),
    ("post", "/agent/tool_start", {"session_id": "idle", "tool_name": "bash", "expected_duration_s": 1e12}, 400),
    ("post", "/agent/tool_start", {"session_id": "idle", "tool_name": "", "expected_duration_s": 1}, 400),
    ("post", "/agent/tool_start", {"session_id": "idle", "tool_name": "x", "surprise": 1}, 400),
    ("post", "/agent/tool_start", ["not", "an", "object"], 400),
    ("raw", "/agent/tool_start", b"{this is not json", 400),
    ("raw", "/agent/tool_end", b"", 400),
]


def test_bad_hints_get_4xx_and_change_nothing(server):
    assert generate(server, prompt(7), {"session_id": "idle"}).status_code == 200
    before = stats(server)
    for kind, path, body, status in BAD_HINTS:
        if kind == "raw":
            r = requests.post(server.url + path, data=body, headers={"Content-Type": "application/json"}, timeout=30)
        else:
            r = requests.post(server.url + path, json=body, timeout=30)
        assert r.status_code == status, (path, body, r.status_code, r.text)
        assert "error" in r.json()
    # Inline hints are validated before the request runs.
    bad_inline = [
        generate(server, "hi", {"session_id": ""}),
        generate(server, "hi", {"session_id": "x", "tool_start": {"tool_name": "b", "expected_duration_s": "soon"}}),
        generate(server, "hi", "not-an-object"),
        requests.post(server.url + "/generate", json={"text": ["a", "b"], "agent": {"session_id": "x"}}, timeout=30),
        requests.post(server.url + "/v1/chat/completions", timeout=30, json={
            "model": "m", "messages": [{"role": "user", "content": "hi"}], "n": 2, "agent": {"session_id": "x"}}),
    ]
    assert [r.status_code for r in bad_inline] == [400] * len(bad_inline), [r.text for r in bad_inline]
    assert stats(server) == before


def run_three_agents(server, tag, workflow_id=None):
    """Agents A, B, C with distinct ~800-token prefixes in a 2048-token pool, then A again."""
    cached = []
    for agent in ("A", "B", "C", "A"):
        hint = {"session_id": f"{tag}-{agent}"}
        if workflow_id is not None:
            hint["workflow_step"] = {"workflow_id": workflow_id, "agent_id": agent}
        # Distinct first tokens: a shared first token would split the older prefix, and upstream
        # refreshes the recency of a split node, which hides what LRU does here.
        reply = generate(server, f"{agent} " + prompt(1000 + ord(agent), words=290), hint)
        assert reply.status_code == 200, reply.text
        cached.append(reply.json()["meta_info"]["cached_tokens"])
    return cached


def test_declared_workflow_keeps_the_next_agents_prefix(server):
    assert requests.post(server.url + "/flush_cache", timeout=60).status_code == 200
    lru = run_three_agents(server, "lru")
    assert requests.post(server.url + "/flush_cache", timeout=60).status_code == 200
    declared = requests.post(server.url + "/agent/workflow", timeout=30, json={
        "workflow_id": "abc", "schedule": ["A", "B", "C", "A"],
        "agents": [{"agent_id": a, "session_id": f"kvflow-{a}"} for a in "ABC"]})
    assert declared.status_code == 200, declared.text
    kvflow = run_three_agents(server, "kvflow", workflow_id="abc")
    assert lru[3] < 16, lru  # LRU evicted A, the oldest, to fit C
    assert kvflow[3] > 700, kvflow  # with the graph, B (never needed again) went instead
    # The last step's turn has finished: the workflow has ended, and a further step is refused.
    wrong = requests.post(server.url + "/agent/workflow/step", json={"workflow_id": "abc", "agent_id": "B"}, timeout=30)
    assert wrong.status_code == 409 and "ended" in wrong.json()["error"]


def test_a_declared_fan_out_runs_its_parallel_workers(server):
    """Defect (issue "Multi-agent workflows as real DAGs", 1): planner -> worker_1/2/3 -> reviewer
    was declared truthfully, and the step of worker_2 after worker_1 got 409 "no edge 'worker_1' ->
    'worker_2'": the workflow tracked one current agent. Every step is accepted now, the workers run
    in parallel (concurrent requests), and the join's steps wait for all of them."""
    workers = [f"worker_{i}" for i in (1, 2, 3)]
    agents = ["planner", *workers, "reviewer"]
    edges = [["planner", w] for w in workers] + [[w, "reviewer"] for w in workers]
    declared = requests.post(server.url + "/agent/workflow", timeout=30, json={
        "workflow_id": "fan", "dag": True, "edges": edges,
        "agents": [{"agent_id": a, "session_id": f"fan-{a}"} for a in agents]})
    assert declared.status_code == 200, declared.text
    hint = lambda agent: {"session_id": f"fan-{agent}", "workflow_step": {"workflow_id": "fan", "agent_id": agent}}
    assert generate(server, prompt(2001), hint("planner")).status_code == 200
    with ThreadPoolExecutor(3) as pool:
        replies = list(pool.map(lambda w: generate(server, prompt(2002 + int(w[-1])), hint(w)), workers))
    assert [r.status_code for r in replies] == [200, 200, 200], [r.text for r in replies]
    last = requests.post(server.url + "/agent/workflow/step", json={"workflow_id": "fan", "agent_id": "reviewer"},
                         timeout=30)
    assert last.status_code == 200, last.text
    assert last.json()["steps_to_execution"] == {"planner": None, **{w: None for w in workers}, "reviewer": 0}
    assert generate(server, prompt(2009), {"session_id": "fan-reviewer"}).status_code == 200
    ended = requests.post(server.url + "/agent/workflow/step", json={"workflow_id": "fan", "agent_id": "reviewer"},
                          timeout=30)
    assert ended.status_code == 409 and "ended" in ended.json()["error"]
    for agent in agents:
        assert requests.post(server.url + "/agent/session/close", json={"session_id": f"fan-{agent}"},
                             timeout=30).status_code == 200


def test_openai_client_extra_body_and_session_close(server):
    import openai
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none")
    sessions_before = stats(server)["sessions"]
    reply = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": prompt(11)}], max_tokens=4, temperature=0,
        extra_body={"agent": {"session_id": "oai", "tool_start": {"tool_name": "web_search", "expected_duration_s": 3}}},
    )
    assert reply.usage.prompt_tokens > 0
    now = stats(server)
    assert now["sessions"] == sessions_before + 1 and now["pinned_tokens"] > 0
    closed = requests.post(server.url + "/agent/session/close", json={"session_id": "oai"}, timeout=30)
    assert closed.status_code == 200
    for s in ("pinned", "unpinned", "idle", "lru-A", "lru-B", "lru-C", "kvflow-A", "kvflow-B", "kvflow-C"):
        requests.post(server.url + "/agent/session/close", json={"session_id": s}, timeout=30)
    after = stats(server)
    assert after["pinned_tokens"] == 0 and after["pins"] == 0


def test_frontend_helper_tool_context_and_sgl_program(server):
    import sglang as sgl

    from sglang_agent.frontend import AgentClient, AgentHintError

    client = AgentClient(server.url)
    session = client.session("frontend")

    @sgl.function
    def ask(s, question):
        s += question
        s += sgl.gen("answer", max_tokens=4, temperature=0)

    state = ask.run(question=prompt(21), backend=session.runtime_endpoint())
    assert isinstance(state["answer"], str)
    with session.tool("bash", expected_duration_s=1) as answer:
        assert answer["ttl_s"] > 0 and client.stats()["sessions_in_tool_call"] >= 1
    assert client.stats()["sessions_in_tool_call"] == 0
    try:
        session.tool_end()
        raise AssertionError("tool_end without tool_start was accepted")
    except AgentHintError as e:
        assert e.status == 409
    assert session.close()["closed"] is True


def test_example_program_runs(server):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "examples/multi_agent_workflow.py", "--base-url", server.url,
                          "--rounds", "2", "--tool-seconds", "0.05"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [l for l in out.stdout.splitlines() if l.startswith(("planner", "coder", "tester"))]
    assert len(lines) == 6
    # Second round: every agent finds its own prefix (and last turn) cached.
    assert all(int(l.split("cached=")[1]) > 100 for l in lines[3:]), out.stdout


def test_simulator_and_server_make_the_same_cache_decisions(server):
    """The same small trace through the real server (replay) and the simulator: the same TTL
    choices, the same priced benefit of each pin (the re-prefill price of the path it keeps, at the
    same --agent-prefill-tokens-per-s: a wrong path length or price on either side fails this),
    pinned tokens and prefix hits, because both run the same cache and policy code."""
    import asyncio

    from eval.replay import fold_token_ids, replay
    from eval.sim.cost_model import load_profile
    from eval.sim.engine import simulate
    from eval.sim.policies import PolicySpec
    from eval.traces.synthetic import coding_agent_programs
    from sglang_agent.tiny_model import VOCAB_SIZE

    programs = [fold_token_ids(p, VOCAB_SIZE - 8) for p in coding_agent_programs(
        2, seed=7, system_tokens=200, turns_median=3, output_median=6, observation_median=40, tool_median_s=0.2)]
    for i, p in enumerate(programs):
        # One program at a time (5 s apart at time_scale 0.05, room for a slow CI machine): no
        # load, so the TTL price is deterministic.
        p.arrival_s = 100.0 * i
    requests.post(server.url + "/flush_cache", timeout=60)
    served = asyncio.run(replay(server.url, programs, time_scale=0.05, hints=True))
    spec = PolicySpec("continuum", retention="ttl", order="program_fcfs", declare_durations=True)
    from sglang_agent.config import AgentServerArgs

    server_args = AgentServerArgs()  # what the server runs with (its defaults)
    simulated = simulate(programs, load_profile("llama-3.1-8b-h100"), spec, pool_tokens=POOL_TOKENS,
                         agent_args=server_args)
    sim_benefit = {(d[1], d[2]): d[4] for d in simulated.decisions if d[3] == "expected_benefit_s"}

    sim_ttl = {(d[1], d[2]): d[4] for d in simulated.decisions if d[3] == "ttl_s"}
    sim_pinned = {(d[1], d[2]): d[4] for d in simulated.decisions if d[3] == "pinned_tokens"}
    sim_cached = {(t.program_id, t.turn): t.cached_tokens for p in simulated.programs for t in p.turns}
    with_tool = [t for t in served.turns if t.ttl_s is not None]
    assert with_tool and len(with_tool) == len(sim_ttl)
    for t in with_tool:
        # The server saw durations x0.05 (time scale): its TTL is the simulator's x0.05.
        assert t.ttl_s == pytest.approx(sim_ttl[(t.program_id, t.turn)] * 0.05)
        assert t.pinned_tokens == sim_pinned[(t.program_id, t.turn)]
        # p(return within TTL) x (re-prefill of the pinned path at the server's price): a priced value.
        assert t.expected_benefit_s == pytest.approx(sim_benefit[(t.program_id, t.turn)], rel=1e-6)
        assert t.expected_benefit_s == pytest.approx(t.pinned_tokens / server_args.prefill_tokens_per_s, rel=0.05)
    for t in served.turns:
        if t.turn > 0:
            assert t.cached_tokens == sim_cached[(t.program_id, t.turn)], (t, sim_cached)


def test_profile_costs_script_writes_a_usable_profile(server, tmp_path):
    import subprocess
    import sys

    from eval.sim.cost_model import load_profile
    from sglang_agent.tiny_model import VOCAB_SIZE

    out = tmp_path / "tiny-cpu-measured.json"
    run = subprocess.run([sys.executable, "scripts/profile_costs.py", "--url", server.url, "--base-profile",
                          "llama-3.1-8b-h100", "--out", str(out), "--vocab", str(VOCAB_SIZE),
                          "--prefill-tokens", "128,768,1536", "--batch-sizes", "1,4", "--decode-tokens", "8"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    profile = load_profile(str(out))
    assert profile.prefill_mfu > 0 and profile.decode_bw_efficiency > 0
    assert profile.prefill_s(1000) > 0 and profile.decode_step_s(4, 1000) > 0


def test_refused_request_leaves_no_bound_turn_behind(server):
    """SGLang refuses a request (too long, bad sampling params) after the hint bound it: the
    session must not wait for that turn forever, and a session it created must not linger."""
    before = stats(server)["sessions"]
    too_long = requests.post(server.url + "/generate", timeout=60, json={
        "input_ids": [5] * 5000, "sampling_params": {"max_new_tokens": 4}, "agent": {"session_id": "refused-new"}})
    assert too_long.status_code == 400, too_long.text
    assert stats(server)["sessions"] == before  # the session it created is gone again

    assert generate(server, prompt(21), {"session_id": "refused-old"}).status_code == 200
    bad = generate(server, prompt(21) + " again", {"session_id": "refused-old"}, max_new_tokens=4,
                   sampling_params={"max_new_tokens": 4, "temperature": -3})
    assert bad.status_code == 400, bad.text
    start = requests.post(server.url + "/agent/tool_start", timeout=30,
                          json={"session_id": "refused-old", "tool_name": "bash", "expected_duration_s": 3})
    assert start.status_code == 200 and not start.json().get("deferred"), start.text  # not waiting on the refused turn
    requests.post(server.url + "/agent/session/close", json={"session_id": "refused-old"}, timeout=30)


def test_v1_loads_counts_pins_as_reclaimable_not_as_used(server):
    """A gateway's overload gate reads token_usage in /v1/loads (smg: >= 0.8 leaves the worker out):
    pinned KV is reported as reclaimable, like upstream's evictable cache, and /agent/stats still
    shows the pin."""
    def load():
        return requests.get(server.url + "/v1/loads", timeout=30).json()["loads"][0]

    idle = load()
    assert generate(server, prompt(900, words=300), {"session_id": "loads"}).status_code == 200
    start = requests.post(server.url + "/agent/tool_start",
                          json={"session_id": "loads", "tool_name": "bash", "expected_duration_s": 30}, timeout=30)
    assert start.status_code == 200 and start.json()["pinned_tokens"] > 200, start.text
    pinned = stats(server)["pinned_tokens"]
    loaded = load()
    assert pinned > 200
    assert loaded["num_used_tokens"] <= idle["num_used_tokens"], (idle, loaded, pinned)
    assert loaded["token_usage"] < pinned / loaded["max_total_num_tokens"], (loaded, pinned)
    requests.post(server.url + "/agent/session/close", json={"session_id": "loads"}, timeout=30)
    assert stats(server)["pinned_tokens"] == 0
