"""Zero-hint agents, end to end on a real CPU server: unmodified clients (the OpenAI SDK with
`tools`, a LangGraph tool loop over langchain-openai, a ReAct-style text agent on /v1/completions)
send no hint of ours, and the server recognises their tool-call turns and sessions by itself: it
pins the turn's prefix across the tool call, so the resumed turn finds it under pool pressure that
evicts a conversation without tool calls; the tool's duration is learned. The ecosystem's cache
conventions (Anthropic `cache_control`, Dynamo `nvext`, OpenAI `prompt_cache_key`) are hints too,
a bad one is a 400 that changes nothing, explicit hints win, and sessions nobody closes are
forgotten once idle.

The tiny model has dummy weights, so its "decisions" are forced the way real clients force them:
`tool_choice="required"` with a strict enum parameter (SGLang's JSON-schema constraint, parsed by
`--tool-call-parser pythonic` into `tool_calls`), and a `regex`-constrained ReAct line."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Literal

import aiohttp
import openai
import pytest
import requests

from server_fixture import RunningServer, fill_pool

POOL_TOKENS = 4096
IDLE_S = 20.0
PATTERN = r"Action: (?P<tool>[a-z_]+)"
TOOLS = [{"type": "function", "function": {
    "name": "bash", "description": "run a shell command", "strict": True,
    "parameters": {"type": "object", "properties": {"cmd": {"type": "string", "enum": ["ls"]}},
                   "required": ["cmd"], "additionalProperties": False}}}]
WORDS = "agent tool call result file test patch diff build error trace log".split()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = RunningServer(tmp_path_factory.mktemp("e2e-zero-hint"), [
        "--max-total-tokens", str(POOL_TOKENS), "--enable-cache-report", "--tool-call-parser", "pythonic",
        "--constrained-json-disable-any-whitespace", "--agent-tool-call-pattern", PATTERN,
        "--agent-session-idle-s", str(IDLE_S)], env={"SGLANG_AGENT_CHECK_INTEGRITY": "1"})
    yield srv
    srv.stop()


def text(seed: int, words: int) -> str:
    rnd = random.Random(seed)
    return " ".join(f"{rnd.choice(WORDS)}{rnd.randint(0, 999)}" for _ in range(words))


def stats(server) -> dict:
    r = requests.get(server.url + "/agent/stats", timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def model_id(server) -> str:
    return requests.get(server.url + "/v1/models", timeout=30).json()["data"][0]["id"]


def other_tenants(server, seed: int, tokens: int = int(1.5 * POOL_TOKENS)) -> int:
    """One-off prompts of other users (no session, no tools) until `tokens` went through the pool."""
    return fill_pool(server.url, seed, tokens, prompt_tokens=1200, max_new_tokens=4)


def cached(usage) -> int:
    return usage.prompt_tokens_details.cached_tokens or 0


# ---- the OpenAI SDK, no hint at all --------------------------------------------------------------

def test_openai_sdk_tool_call_turn_is_pinned_and_resumed_under_pressure(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=300)
    model = model_id(server)
    before = stats(server)
    agent = [{"role": "system", "content": "You are a coding agent. " + text(1, 150)},
             {"role": "user", "content": "List the files."}]
    control = [{"role": "system", "content": "You are a helpful assistant. " + text(2, 150)},
               {"role": "user", "content": "List the files."}]
    first = client.chat.completions.create(model=model, messages=agent, tools=TOOLS, tool_choice="required",
                                           max_tokens=64, temperature=0)
    plain = client.chat.completions.create(model=model, messages=control, max_tokens=8, temperature=0)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls[0].function.name == "bash"
    held = stats(server)
    assert held["tool_calls_detected"] == before["tool_calls_detected"] + 1
    assert held["pins_created"] == before["pins_created"] + 1
    # The tool runs; other tenants fill the pool 1.5 times over meanwhile.
    t0 = time.monotonic()
    assert other_tenants(server, seed=1) > POOL_TOKENS
    time.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
    call = choice.message.tool_calls[0]
    agent += [{"role": "assistant", "content": choice.message.content or "",
               "tool_calls": [{"id": call.id, "type": "function",
                               "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
              {"role": "tool", "tool_call_id": call.id, "content": "README.md setup.py src tests"}]
    control += [{"role": "assistant", "content": plain.choices[0].message.content},
                {"role": "user", "content": "README.md setup.py src tests"}]
    resumed = client.chat.completions.create(model=model, messages=agent, tools=TOOLS, max_tokens=4, temperature=0)
    again = client.chat.completions.create(model=model, messages=control, max_tokens=4, temperature=0)
    assert cached(resumed.usage) >= first.usage.prompt_tokens - 1, (resumed.usage, first.usage)
    assert cached(again.usage) < 32, again.usage  # LRU evicted the conversation without a tool call
    after = stats(server)
    assert after["resumed_turns_with_hit"] >= before["resumed_turns_with_hit"] + 1
    assert after["tool_durations"]["bash"]["observed"] >= 1
    assert after["tool_durations"]["bash"]["median_s"] >= 1.0  # the tool's time, learned from the gap
    assert after["internal_errors"] == 0


@pytest.fixture(scope="module")
def no_parser_server(tmp_path_factory):
    srv = RunningServer(tmp_path_factory.mktemp("e2e-zero-hint-no-parser"), [
        "--max-total-tokens", str(POOL_TOKENS), "--enable-cache-report", "--constrained-json-disable-any-whitespace"])
    yield srv
    srv.stop()


def test_a_forced_tool_choice_is_a_tool_call_without_a_parser(no_parser_server):
    """Without --tool-call-parser SGLang answers a forced tool_choice with the call as JSON text
    (finish_reason "stop"); the call is one by construction, so the server still starts the tool,
    named from the text."""
    server = no_parser_server
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=300)
    model = model_id(server)
    messages = [{"role": "system", "content": "You are a coding agent. " + text(11, 150)},
                {"role": "user", "content": "List the files."}]
    before = stats(server)
    first = client.chat.completions.create(model=model, messages=messages, tools=TOOLS, tool_choice="required",
                                           max_tokens=64, temperature=0)
    answer = first.choices[0].message.content
    assert first.choices[0].finish_reason == "stop" and '"name": "bash"' in answer, answer
    held = stats(server)
    assert held["tool_calls_detected"] == before["tool_calls_detected"] + 1
    assert held["pins_created"] == before["pins_created"] + 1
    other_tenants(server, seed=5)
    messages += [{"role": "assistant", "content": answer}, {"role": "user", "content": "README.md src tests"}]
    resumed = client.chat.completions.create(model=model, messages=messages, tools=TOOLS, max_tokens=4, temperature=0)
    assert cached(resumed.usage) >= first.usage.prompt_tokens - 1, (resumed.usage, first.usage)
    assert stats(server)["tool_durations"]["bash"]["observed"] == 1


# ---- LangGraph over langchain-openai ------------------------------------------------------------

def test_langgraph_tool_loop_resumes_every_turn_from_cache(server):
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    @tool
    def bash(cmd: Literal["ls"]) -> str:
        """run a shell command"""
        other_tenants(server, seed=random.randint(10, 10**6))  # the pool churns while the tool runs
        return "README.md setup.py src tests"

    llm = ChatOpenAI(base_url=server.url + "/v1", api_key="none", model=model_id(server), temperature=0,
                     max_tokens=64, max_retries=0, timeout=300)
    must_call = llm.bind_tools([bash], tool_choice="required", strict=True)
    may_call = llm.bind_tools([bash], strict=True)  # the same tools in the prompt, the model chooses

    def agent(state: MessagesState):
        calls = sum(isinstance(m, ToolMessage) for m in state["messages"])
        return {"messages": [(must_call if calls < 2 else may_call).invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode([bash]))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    app = graph.compile()

    before = stats(server)
    out = app.invoke({"messages": [SystemMessage("You are a coding agent. " + text(3, 150)),
                                   HumanMessage("Look around the repository.")]}, {"recursion_limit": 12})
    answers = [m for m in out["messages"] if isinstance(m, AIMessage)]
    assert [bool(m.tool_calls) for m in answers] == [True, True, False], [m.tool_calls for m in answers]
    usage = [m.usage_metadata for m in answers]
    for prev, cur in zip(usage, usage[1:]):  # each resumed turn found the previous prompt on the GPU
        assert cur["input_token_details"]["cache_read"] >= prev["input_tokens"] - 1, usage
    after = stats(server)
    assert after["tool_calls_detected"] == before["tool_calls_detected"] + 2
    assert after["resumed_turns_with_hit"] >= before["resumed_turns_with_hit"] + 2
    assert after["internal_errors"] == 0


# ---- the OpenAI Agents SDK ----------------------------------------------------------------------

def test_openai_agents_sdk_run_resumes_after_its_tool_call(server):
    """The Agents SDK's own loop (Runner, a function_tool, chat completions): tool_choice
    "required" on the first call, then the SDK resets it to auto (reset_tool_choice), so the model
    answers in text after the tool result."""
    from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, Runner, function_tool, set_tracing_disabled

    set_tracing_disabled(True)  # no trace export (no network)

    @function_tool
    def bash(cmd: Literal["ls"]) -> str:
        """run a shell command"""
        other_tenants(server, seed=random.randint(10, 10**6))
        return "README.md setup.py src tests"

    client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=300)
    agent = Agent(name="coder", instructions="You are a coding agent. " + text(12, 150), tools=[bash],
                  model=OpenAIChatCompletionsModel(model=model_id(server), openai_client=client),
                  model_settings=ModelSettings(tool_choice="required", temperature=0, max_tokens=64))
    before = stats(server)
    result = asyncio.run(Runner.run(agent, "Look around the repository.", max_turns=4))
    usage = [r.usage for r in result.raw_responses]
    assert len(usage) == 2 and any(getattr(i, "type", "") == "tool_call_output_item" for i in result.new_items)
    cached_read = usage[1].input_tokens_details.cached_tokens
    assert cached_read >= usage[0].input_tokens - 1, usage
    after = stats(server)
    assert after["tool_calls_detected"] == before["tool_calls_detected"] + 1
    assert after["resumed_turns_with_hit"] >= before["resumed_turns_with_hit"] + 1


# ---- a text agent: its tool calls are lines of text ---------------------------------------------

def complete(server, prompt: str, regex: str | None = None, max_tokens: int = 16, **extra) -> dict:
    body = {"model": model_id(server), "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, **extra}
    if regex is not None:
        body["regex"] = regex
    r = requests.post(server.url + "/v1/completions", json=body, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


def test_text_agent_tool_lines_are_recognised_by_the_pattern(server):
    before = stats(server)
    prompt = "You are a ReAct agent. " + text(4, 200) + "\nQuestion: what is in the repository?\nThought:"
    first = complete(server, prompt, regex=r" I look\.\nAction: grep\nAction Input: TODO\n", max_tokens=48)
    assert "Action: grep" in first["choices"][0]["text"]
    held = stats(server)
    assert held["tool_calls_detected"] == before["tool_calls_detected"] + 1
    assert held["pins_created"] == before["pins_created"] + 1
    other_tenants(server, seed=2)
    resumed = complete(server, prompt + first["choices"][0]["text"] + "Observation: a.py:3 TODO\nThought:",
                       max_tokens=4)
    assert resumed["usage"]["prompt_tokens_details"]["cached_tokens"] >= first["usage"]["prompt_tokens"] - 1
    after = stats(server)
    assert after["tool_durations"]["grep"]["observed"] >= 1
    # A text answer without an Action line is no tool call: nothing pinned for it.
    plain = complete(server, "Say hello. " + text(5, 50), regex=r" Hello there\.", max_tokens=8)
    assert "Action" not in plain["choices"][0]["text"]
    assert stats(server)["tool_calls_detected"] == after["tool_calls_detected"]


# ---- ecosystem conventions -----------------------------------------------------------------------

def chat(server, body: dict, headers: dict | None = None) -> requests.Response:
    body = {"model": model_id(server), "max_tokens": 4, "temperature": 0, **body}
    return requests.post(server.url + "/v1/chat/completions", json=body, headers=headers or {}, timeout=300)


@pytest.mark.parametrize("where", ["message", "content_part", "nvext"])
def test_cache_control_pins_the_turn_prefix_for_its_ttl(server, where):
    """A prompt-caching client (Anthropic's `cache_control`, Dynamo's `nvext`) asks for its prefix
    to stay: pinned for that TTL after the turn. It names its conversation (OpenAI's
    `prompt_cache_key`) so that it can let go early; without a key the pin is an implicit
    session's and lapses at its TTL (tests/test_controller.py covers that path)."""
    key = f"cc-{where}"
    system = "You are a careful assistant. " + text(6 + len(where), 150)
    if where == "message":
        messages = [{"role": "system", "content": system, "cache_control": {"type": "ephemeral", "ttl": "5m"}}]
        extra = {}
    elif where == "content_part":
        messages = [{"role": "system", "content": [{"type": "text", "text": system,
                                                    "cache_control": {"type": "ephemeral"}}]}]
        extra = {}
    else:
        messages = [{"role": "system", "content": system}]
        extra = {"nvext": {"cache_control": {"type": "ephemeral", "ttl": 120}, "agent_hints": {"osl": 16}}}
    messages.append({"role": "user", "content": "Summarise the notes."})
    before = stats(server)
    r = chat(server, {"messages": messages, "prompt_cache_key": key, **extra})
    assert r.status_code == 200, r.text
    first_prompt = r.json()["usage"]["prompt_tokens"]
    held = stats(server)
    assert held["pins_created"] == before["pins_created"] + 1 and held["pinned_tokens"] >= first_prompt - 1
    other_tenants(server, seed=3)
    messages += [{"role": "assistant", "content": r.json()["choices"][0]["message"]["content"]},
                 {"role": "user", "content": "And the next one."}]
    again = chat(server, {"messages": messages, "prompt_cache_key": key, **extra})
    assert again.status_code == 200, again.text
    assert again.json()["usage"]["prompt_tokens_details"]["cached_tokens"] >= first_prompt - 1
    held = stats(server)
    assert held["pinned_tokens"] > before["pinned_tokens"]  # the second turn asked for its TTL again
    closed = requests.post(server.url + "/agent/session/close", json={"session_id": "cache-key:" + key}, timeout=60)
    assert closed.status_code == 200, closed.text
    assert stats(server)["pinned_tokens"] == before["pinned_tokens"]


BAD_CONVENTIONS = [
    {"cache_control": {"type": "ephemeral", "ttl": "7 minutes"}},
    {"cache_control": {"type": "persistent"}},
    {"cache_control": {"type": "ephemeral", "ttl": 7200}},
    {"cache_control": "5m"},
    {"nvext": {"agent_hints": {"priority": "high"}}},
    {"nvext": {"agent_hints": {"surprise": 1}}},
    {"nvext": []},
    {"prompt_cache_key": {"a": 1}},
    {"prompt_cache_key": "k" * 300},
    {"is_last_step": "yes", "job_id": "j1"},
]


@pytest.mark.parametrize("bad", BAD_CONVENTIONS, ids=[str(i) for i in range(len(BAD_CONVENTIONS))])
def test_a_bad_convention_is_a_400_that_changes_nothing(server, bad):
    before = stats(server)
    r = chat(server, {"messages": [{"role": "user", "content": "hi " + text(7, 20)}], "tools": TOOLS,
                      "tool_choice": "required", **bad})
    assert r.status_code == 400, r.text
    assert isinstance(r.json()["error"], str) and r.json()["error"], r.json()  # a reason to read
    after = stats(server)
    for key in ("sessions", "pins_created", "tool_calls_detected", "requests_bound", "pinned_tokens"):
        assert after[key] == before[key], key
    assert requests.get(server.url + "/health", timeout=30).status_code == 200


def test_session_keys_of_the_conventions_name_the_session_and_explicit_hints_win(server):
    before = stats(server)
    body = {"messages": [{"role": "user", "content": "hi " + text(8, 40)}], "tools": TOOLS, "tool_choice": "required",
            "max_tokens": 64}
    assert chat(server, {**body, "prompt_cache_key": "conv-1"}).status_code == 200
    assert chat(server, body, headers={"X-Session-Id": "conv-2"}).status_code == 200
    # Our own hint wins over every convention: the turn belongs to session "mine".
    r = chat(server, {**body, "prompt_cache_key": "conv-3", "agent": {"session_id": "mine"}})
    assert r.status_code == 200, r.text
    after = stats(server)
    assert after["tool_calls_detected"] == before["tool_calls_detected"] + 3
    # The detected tool call put "mine" in its tool; an explicit tool_start restarts it with the
    # client's own estimate (explicit hints win), tool_end ends it.
    start = requests.post(server.url + "/agent/tool_start", json={"session_id": "mine", "tool_name": "bash",
                                                                  "expected_duration_s": 5}, timeout=60)
    assert start.status_code == 200, start.text
    end = requests.post(server.url + "/agent/tool_end", json={"session_id": "mine"}, timeout=60)
    assert end.status_code == 200, end.text
    for key in ("cache-key:conv-1", "conv-2", "mine"):
        closed = requests.post(server.url + "/agent/session/close", json={"session_id": key}, timeout=60)
        assert closed.status_code == 200, (key, closed.text)


# ---- many clients that never say goodbye ---------------------------------------------------------

def test_hundreds_of_never_closed_implicit_sessions_are_forgotten_when_idle(server):
    """Clients that never close (every zero-hint client) leave nothing behind: each tool-call turn
    is an implicit session, pinned or not, and after --agent-session-idle-s it is gone, with its
    resume marks, and the server's indexes are back to their floor."""
    n = 400

    async def run():
        async with aiohttp.ClientSession() as http:
            model = model_id(server)
            sem = asyncio.Semaphore(32)

            async def one(i):
                async with sem:
                    async with http.post(server.url + "/v1/completions", json={
                            "model": model, "prompt": f"agent {i} " + text(100 + i, 12), "max_tokens": 8,
                            "temperature": 0, "regex": r" Action: ls\n"}) as r:
                        assert r.status == 200, await r.text()

            await asyncio.gather(*(one(i) for i in range(n)))

    before = stats(server)
    asyncio.run(run())
    busy = stats(server)
    assert busy["tool_calls_detected"] == before["tool_calls_detected"] + n
    # Every turn made a session; the first ones may already be forgotten while the last arrive.
    assert busy["sessions"] + busy["sessions_forgotten"] - before["sessions_forgotten"] >= n
    assert busy["index_sizes"]["implicit_anchors"] >= 1
    deadline = time.monotonic() + IDLE_S + 120
    while time.monotonic() < deadline:
        idle = stats(server)
        if idle["sessions"] == 0:
            break
        time.sleep(2)
    assert idle["sessions"] == 0, idle["index_sizes"]
    assert idle["sessions_forgotten"] >= before["sessions_forgotten"] + n
    assert idle["index_sizes"]["implicit_anchors"] == 0 and idle["pinned_tokens"] == 0
    assert idle["index_sizes"]["recent_turns"] <= 1024  # bounded, whatever came and went
    assert requests.post(server.url + "/flush_cache", timeout=60).status_code == 200
