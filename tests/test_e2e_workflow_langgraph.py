"""A multi-agent LangGraph app on a real CPU server, through langchain-openai (the OpenAI SDK):
planner -> 3 parallel workers (LangGraph `Send` fan-out, each with a tool call inside) -> reviewer
-> writer, fixed role prompts reused by every instance, other tenants filling the pool while the
workers' tools run, a bystander decoding at the pool's edge. Two ways to use it:

- declared: each instance is declared (`/agent/workflow`, a DAG) and every agent's first call
  carries its step;
- undeclared: the calls only say which workflow instance and agent they are (`workflow_step` with
  no declaration); the server learns the graph from the order the agents run in.

Every step is accepted, the workers' resumed turns find their prompts cached (their tool calls are
recognised in the answers), and the role prompts of the agents that come next (reviewer, writer)
are cached when they run: from the second declared instance on (the first puts them in the cache),
from the third undeclared one on (two teach the graph). In the second undeclared instance the
edge to the writer is not trusted yet, and its miss shows upstream's LRU order."""

from __future__ import annotations

import operator
import random
from typing import Annotated, Literal, TypedDict

import pytest
import requests

from server_fixture import RunningServer, fill_pool
from test_e2e_no_lost_work import Streamed, assert_finished_whole

POOL_TOKENS = 6144
WORKERS = ("worker_1", "worker_2", "worker_3")
AGENTS = ("planner", *WORKERS, "reviewer", "writer")
EDGES = [("planner", w) for w in WORKERS] + [(w, "reviewer") for w in WORKERS] + [("reviewer", "writer")]
WORDS = "plan code test review write fix build patch search doc api diff".split()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = RunningServer(tmp_path_factory.mktemp("e2e-workflow"), [
        "--max-total-tokens", str(POOL_TOKENS), "--enable-cache-report", "--tool-call-parser", "pythonic",
        "--constrained-json-disable-any-whitespace"], env={"SGLANG_AGENT_CHECK_INTEGRITY": "1"})
    yield srv
    srv.stop()


def text(seed, words: int) -> str:
    rnd = random.Random(seed)
    return " ".join(f"{rnd.choice(WORDS)}{rnd.randint(0, 999)}" for _ in range(words))


ROLE_PROMPTS = {role: f"You are the {role} of a software team. " + text(f"role-{role}", 40)
                for role in ("planner", "worker", "reviewer", "writer")}


def role_of(agent: str) -> str:
    return "worker" if agent.startswith("worker") else agent


def stats(server) -> dict:
    r = requests.get(server.url + "/agent/stats", timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def other_tenants(server, seed: int, tokens: int) -> None:
    """One-off prompts of other users (no session, no tools), `tokens` through the pool."""
    fill_pool(server.url, seed, tokens, prompt_tokens=700, max_new_tokens=2)


def build_app(server, wf_id: str, declared: bool, calls: list):
    """The LangGraph app for one workflow instance; `calls` collects (agent, cached, prompt tokens,
    role prompt tokens, whether the call was the agent's first)."""
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Send

    model = requests.get(server.url + "/v1/models", timeout=30).json()["data"][0]["id"]

    @tool
    def bash(cmd: Literal["ls"]) -> str:
        """run a shell command"""
        other_tenants(server, seed=random.randint(10, 10**6), tokens=POOL_TOKENS // 2)  # the pool churns
        return "README.md setup.py src tests"

    role_tokens = {}

    def llm(agent: str, first: bool, tools: bool):
        step = {"workflow_id": wf_id, "agent_id": agent, **({} if declared else {"role": role_of(agent)})}
        agent_hint = {"session_id": f"{wf_id}/{agent}", **({"workflow_step": step} if first else {})}
        chat = ChatOpenAI(base_url=server.url + "/v1", api_key="none", model=model, temperature=0, max_tokens=64 if tools else 8,
                          max_retries=0, timeout=300, extra_body={"agent": agent_hint})
        # A worker's calls all carry the tool (the same prompt head); its first must call it.
        return chat.bind_tools([bash], tool_choice="required" if first else None, strict=True) if tools else chat

    def call(agent: str, messages, first: bool, tools: bool = False):
        answer = llm(agent, first, tools).invoke(messages)
        usage = answer.usage_metadata
        if agent not in role_tokens:
            role_tokens[agent] = requests.post(server.url + "/tokenize", json={
                "prompt": ROLE_PROMPTS[role_of(agent)]}, timeout=30).json()["count"]
        calls.append((agent, usage["input_token_details"].get("cache_read", 0), usage["input_tokens"],
                      role_tokens[agent], first))
        return answer

    class State(TypedDict):
        task: str
        plan: str
        results: Annotated[list, operator.add]
        review: str
        report: str

    def planner(state):
        answer = call("planner", [SystemMessage(ROLE_PROMPTS["planner"]), HumanMessage(state["task"])], True)
        return {"plan": str(answer.content)}

    def fan_out(state):
        return [Send(w, {"task": state["task"], "plan": state["plan"]}) for w in WORKERS]

    def worker(name):
        def run(state):
            messages = [SystemMessage(ROLE_PROMPTS["worker"]), HumanMessage(f"{name}: {state['task']} {state['plan']}")]
            first = call(name, messages, True, tools=True)
            assert first.tool_calls, first
            messages += [first, *(ToolMessage(bash.invoke(c["args"]), tool_call_id=c["id"]) for c in first.tool_calls)]
            final = call(name, messages, False, tools=True)
            return {"results": [str(final.content)]}
        return run

    def reviewer(state):
        answer = call("reviewer", [SystemMessage(ROLE_PROMPTS["reviewer"]),
                                   HumanMessage(state["task"] + " " + " | ".join(state["results"]))], True)
        return {"review": str(answer.content)}

    def writer(state):
        answer = call("writer", [SystemMessage(ROLE_PROMPTS["writer"]),
                                 HumanMessage(state["task"] + " " + state["review"])], True)
        return {"report": str(answer.content)}

    graph = StateGraph(State)
    graph.add_node("planner", planner)
    for w in WORKERS:
        graph.add_node(w, worker(w))
    graph.add_node("reviewer", reviewer)
    graph.add_node("writer", writer)
    graph.add_edge(START, "planner")
    graph.add_conditional_edges("planner", fan_out, list(WORKERS))
    graph.add_edge(list(WORKERS), "reviewer")  # the join waits for all three
    graph.add_edge("reviewer", "writer")
    graph.add_edge("writer", END)
    return graph.compile(), AIMessage


def run_instance(server, wf_id: str, declared: bool, seed: int) -> list:
    if declared:
        r = requests.post(server.url + "/agent/workflow", timeout=30, json={
            "workflow_id": wf_id, "dag": True, "edges": [list(e) for e in EDGES],
            "agents": [{"agent_id": a, "session_id": f"{wf_id}/{a}", "role": role_of(a)} for a in AGENTS]})
        assert r.status_code == 200, r.text
    calls: list = []
    app, _ = build_app(server, wf_id, declared, calls)
    out = app.invoke({"task": "Task: " + text(f"task-{wf_id}", 20), "results": []})
    assert len(out["results"]) == 3 and out["report"] is not None
    assert sorted(a for a, *_ in calls) == sorted([*AGENTS, *WORKERS])  # every step ran (none refused)
    return calls


def role_hits(calls, agents=("reviewer", "writer")) -> dict:
    """Agent -> its first call found its whole role prompt cached."""
    return {agent: cached >= role for agent, cached, _, role, first in calls if first and agent in agents}


def resumed_worker_hits(calls) -> list:
    """Each worker's resumed turn (after its tool call) found its first prompt cached."""
    firsts = {agent: prompt for agent, _, prompt, _, first in calls if first}
    return [cached >= firsts[agent] - 1 for agent, cached, _, _, first in calls if not first]


def test_declared_fan_out_with_langgraph_send_keeps_role_prompts_and_resumed_turns(server):
    before = stats(server)
    runs = [run_instance(server, f"decl-{n}", declared=True, seed=n) for n in (1, 2)]
    for calls in runs:
        assert resumed_worker_hits(calls) == [True] * 3, calls
    # From the second instance on the next agents' role prompts are kept for them.
    assert role_hits(runs[1]) == {"reviewer": True, "writer": True}, runs[1]
    after = stats(server)
    assert after["tool_calls_detected"] == before["tool_calls_detected"] + 6
    assert after["internal_errors"] == 0 and after["workflows"] == before["workflows"]  # both ended


def test_undeclared_fan_out_is_learned_and_a_bystander_at_the_pools_edge_finishes(server):
    run_instance(server, "learn-1", declared=False, seed=11)
    second = run_instance(server, "learn-2", declared=False, seed=12)
    # After one instance the three workers' runs (3 >= --agent-workflow-min-observations 2) make
    # worker -> reviewer trusted, but one reviewer run does not make reviewer -> writer: the
    # writer's role prompt went, in LRU order, with the traffic of the workers' tools.
    assert role_hits(second) == {"reviewer": True, "writer": False}, second
    assert stats(server)["learned_roles"] >= 3
    bystander = Streamed(server, [5 + (j * 37) % 900 for j in range(2000)], 300, ignore_eos=True)
    assert bystander.first.wait(300)
    third = run_instance(server, "learn-3", declared=False, seed=13)
    assert_finished_whole(bystander.result(), 300)
    assert resumed_worker_hits(third) == [True] * 3, third
    assert role_hits(third) == {"reviewer": True, "writer": True}, third
    assert stats(server)["internal_errors"] == 0
