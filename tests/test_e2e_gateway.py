"""Agent sessions across two real CPU workers behind SGLang's own gateway (`smg` from PyPI, installed
by scripts/setup.sh into .gateway-venv), all on 127.0.0.1.

With `--policy consistent_hashing` and the session id in `X-SMG-Routing-Key`, every turn of a
session reaches one worker; its inline hints (the `agent` object, which the gateway forwards) pin
the turn's prefix there, and the resumed turn finds it although other tenants filled both pools.
With round robin the same sessions switch workers and miss. The `/agent/*` routes do not pass the
gateway (404 from the gateway itself), so the hints that matter go inline: `tool_start`, the next
turn (its tool ended), `close_after_turn`. A worker removed from the gateway takes its sessions'
state with it; they continue on the other worker with no error and start anew there.
`python -m sglang_agent.stats --url GATEWAY` sums /agent/stats over the gateway's workers."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time

import openai
import pytest
import requests

from server_fixture import RunningServer, fill_pool
from sglang_agent.gateway import ROUTED_WORKER_HEADER, ROUTING_KEY_HEADER, LocalGateway
from sglang_agent.stats import aggregate, fetch

POOL_TOKENS = 4096
WORDS = "repo file test patch build log trace diff error fix api doc".split()


@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    started = []
    try:
        for i in range(2):
            started.append(RunningServer(tmp_path_factory.mktemp(f"gw-worker{i}"), [
                "--max-total-tokens", str(POOL_TOKENS), "--enable-cache-report",
                "--served-model-name", "tiny",  # one model to the gateway (each worker has its own copy)
                "--agent-max-pinned-fraction", "0.9"]))  # room for pins past the gateway's 0.8 overload gate
        yield started
    finally:
        for w in started:
            w.stop()


@pytest.fixture(scope="module")
def gateway(workers, tmp_path_factory):
    gw = LocalGateway([w.url for w in workers], tmp_path_factory.mktemp("gw") / "smg.log")
    try:
        gw.wait_ready(2)
        yield gw
    finally:
        gw.stop()


def text(seed, words: int) -> str:
    rnd = random.Random(seed)
    return " ".join(f"{rnd.choice(WORDS)}{rnd.randint(0, 999)}" for _ in range(words))


def stats(url: str) -> dict:
    r = requests.get(url + "/agent/stats", timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def fill(workers, seed: int) -> None:
    """Other tenants' one-off prompts, 1.5 pools through each worker (sent to it directly)."""
    for w in workers:
        fill_pool(w.url, seed, 1.5 * POOL_TOKENS, prompt_tokens=1000, max_new_tokens=2)


def run_sessions(gateway_url: str, workers, tag: str, sessions: int = 3, turns: int = 3) -> dict:
    """`sessions` chat agents, turn by turn (round robin over the sessions), each turn but the last
    ending in a tool call announced inline; the pools are filled between rounds. Returns session ->
    [(worker URL, prompt tokens, cached tokens)] per turn."""
    client = openai.OpenAI(base_url=gateway_url + "/v1", api_key="none", max_retries=0, timeout=300)
    model = client.models.list().data[0].id
    history = {s: [{"role": "system", "content": f"You are coding agent {tag}-{s}. " + text(f"{tag}-{s}", 40)},
                   {"role": "user", "content": "Fix the failing test."}] for s in range(sessions)}
    seen: dict = {s: [] for s in range(sessions)}
    for turn in range(turns):
        for s in range(sessions):
            session = f"{tag}-{s}"
            last = turn == turns - 1
            agent = {"session_id": session, **({"close_after_turn": True} if last else
                                              {"tool_start": {"tool_name": "bash", "expected_duration_s": 30}})}
            raw = client.chat.completions.with_raw_response.create(
                model=model, messages=history[s], max_tokens=4, temperature=0,
                extra_headers={ROUTING_KEY_HEADER: session}, extra_body={"agent": agent})
            reply = raw.parse()
            usage = reply.usage
            cached = (usage.prompt_tokens_details.cached_tokens or 0) if usage.prompt_tokens_details else 0
            seen[s].append((raw.headers[ROUTED_WORKER_HEADER], usage.prompt_tokens, cached))
            history[s] += [{"role": "assistant", "content": reply.choices[0].message.content or "ok"},
                           {"role": "user", "content": "Tool output: " + text(f"{tag}-{s}-{turn}", 40)}]
        if turn < turns - 1:
            fill(workers, seed=sum(map(ord, tag)) * 10 + turn)  # while the tools run
    return seen


def resumed_hits(seen: dict) -> list[bool]:
    return [cur[2] >= prev[1] - 1 for turns in seen.values() for prev, cur in zip(turns, turns[1:])]


def test_session_affinity_keeps_each_session_on_its_worker_and_its_pins_hit(gateway, workers):
    before = {w.url: stats(w.url) for w in workers}
    seen = run_sessions(gateway.url, workers, "aff")
    for turns in seen.values():
        assert len({w for w, _, _ in turns}) == 1, turns  # every turn of a session on one worker
    assert resumed_hits(seen) == [True] * 6, seen
    # Each worker counted exactly the tool calls of the sessions it served, and nothing is left held.
    served = {w.url: sum(len(t) - 1 for t in seen.values() if t[0][0] == w.url) for w in workers}
    for w in workers:
        now = stats(w.url)
        assert now["tool_calls"] - before[w.url]["tool_calls"] == served[w.url], (served, now)
        assert now["pins"] == 0 and now["internal_errors"] == 0  # close_after_turn ended every session
    # One view of both workers through the gateway.
    out = subprocess.run([sys.executable, "-m", "sglang_agent.stats", "--url", gateway.url, "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    view = json.loads(out.stdout)
    assert sorted(view["workers"]) == sorted(w.url for w in workers)
    assert view["total"]["tool_calls"] == sum(stats(w.url)["tool_calls"] for w in workers)
    assert aggregate(fetch([w.url for w in workers]))["tool_calls"] == view["total"]["tool_calls"]


def test_round_robin_moves_sessions_between_workers_and_their_turns_miss(gateway, workers, tmp_path):
    rr = LocalGateway([w.url for w in workers], tmp_path / "smg-rr.log", policy="round_robin")
    try:
        rr.wait_ready(2)
        seen = run_sessions(rr.url, workers, "rr")
    finally:
        rr.stop()
    switches = sum(a[0] != b[0] for t in seen.values() for a, b in zip(t, t[1:]))
    assert switches == 6, seen  # 3 sessions: each session's next turn lands on the other worker
    assert not any(resumed_hits(seen)), seen
    for w in workers:  # the tool calls announced on one worker, resumed on the other: nothing stuck
        requests.post(w.url + "/agent/session/close", json={"session_id": "rr-0"}, timeout=30)


def test_agent_routes_do_not_pass_the_gateway_and_inline_hints_do(gateway, workers):
    r = requests.post(gateway.url + "/agent/tool_start", json={"session_id": "x", "tool_name": "bash"}, timeout=30)
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_url"
    body = {"text": text("inline", 60), "sampling_params": {"max_new_tokens": 2},
            "agent": {"session_id": "inline-1", "tool_start": {"tool_name": "grep", "expected_duration_s": 5}}}
    r = requests.post(gateway.url + "/generate", json=body, headers={ROUTING_KEY_HEADER: "inline-1"}, timeout=120)
    assert r.status_code == 200, r.text
    worker = r.headers[ROUTED_WORKER_HEADER]
    assert stats(worker)["sessions_in_tool_call"] >= 1
    # The next turn says the tool ended; close_after_turn ends the session: no route needed.
    body["agent"] = {"session_id": "inline-1", "close_after_turn": True}
    r = requests.post(gateway.url + "/generate", json=body, headers={ROUTING_KEY_HEADER: "inline-1"}, timeout=120)
    assert r.status_code == 200 and r.headers[ROUTED_WORKER_HEADER] == worker
    closed = requests.post(worker + "/agent/session/close", json={"session_id": "inline-1"}, timeout=30)
    assert closed.status_code == 404  # already gone


def test_pins_do_not_trip_the_gateway_s_overload_gate(gateway, workers):
    """smg leaves a worker out of routing while its /v1/loads token_usage is >= 0.8 (polled every
    10 s). Pins are reported as reclaimable there, so a worker holding pins for 0.82+ of its pool
    keeps its sessions: their resumed turns come back to it after a load poll and hit. (Measured
    before, with pins counted as used: 0/3 resumed turns stayed, all missed.)"""
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="none", max_retries=0, timeout=300)
    model = client.models.list().data[0].id
    home = workers[0].url

    def ask(session, messages, agent):
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=messages, max_tokens=2, temperature=0,
            extra_headers={ROUTING_KEY_HEADER: session}, extra_body={"agent": agent})
        return raw.headers[ROUTED_WORKER_HEADER], raw.parse()

    kept, i = [], 0
    while stats(home)["pinned_tokens"] < 0.82 * POOL_TOKENS and i < 30:
        session = f"gate-{i}"
        i += 1
        messages = [{"role": "user", "content": f"{session}: " + text(session, 220)}]
        worker, reply = ask(session, messages, {"session_id": session,
                                                "tool_start": {"tool_name": "bash", "expected_duration_s": 30}})
        if worker == home:
            kept.append((session, messages, reply))
        else:
            requests.post(worker + "/agent/session/close", json={"session_id": session}, timeout=30)
    pinned = stats(home)["pinned_tokens"]
    assert pinned >= 0.82 * POOL_TOKENS, (pinned, len(kept))
    load = requests.get(home + "/v1/loads", timeout=30).json()["loads"][0]
    time.sleep(12)  # at least one of the gateway's load polls
    try:
        for session, messages, reply in kept:
            messages = messages + [{"role": "assistant", "content": reply.choices[0].message.content or "ok"},
                                   {"role": "user", "content": "Tool output: done"}]
            worker, again = ask(session, messages, {"session_id": session, "close_after_turn": True})
            details = again.usage.prompt_tokens_details
            cached = (details.cached_tokens or 0) if details else 0
            assert worker == home, (session, worker, load["token_usage"])
            assert cached >= reply.usage.prompt_tokens - 1, (session, cached, reply.usage.prompt_tokens)
        assert load["token_usage"] < 0.8, load
    finally:
        for session, _, _ in kept:
            requests.post(home + "/agent/session/close", json={"session_id": session}, timeout=30)


def test_a_removed_worker_s_sessions_continue_on_the_other_and_start_anew(gateway, workers):
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="none", max_retries=0, timeout=300)
    model = client.models.list().data[0].id

    def turn(session):
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": f"{session}: " + text(session, 80)}], max_tokens=2,
            extra_headers={ROUTING_KEY_HEADER: session},
            extra_body={"agent": {"session_id": session, "tool_start": {"tool_name": "bash", "expected_duration_s": 2}}})
        return raw.headers[ROUTED_WORKER_HEADER]

    homes = {f"mv-{i}": turn(f"mv-{i}") for i in range(8)}
    assert len(set(homes.values())) == 2, homes  # 8 keys spread over both workers
    gone_url = workers[0].url
    gone = next(w for w in gateway.workers() if w["url"] == gone_url)
    assert requests.delete(f"{gateway.url}/workers/{gone['id']}", timeout=30).status_code == 202
    deadline = time.monotonic() + 60
    while any(w["url"] == gone_url for w in gateway.workers()) and time.monotonic() < deadline:
        time.sleep(0.5)
    other = stats(workers[1].url)
    moved = [s for s, url in homes.items() if url == gone_url]
    for session in homes:
        assert turn(session) == workers[1].url  # no error; every session on the worker left
    after = stats(workers[1].url)
    # The moved sessions' hints started fresh agent sessions there (a tool call each).
    assert after["tool_calls"] - other["tool_calls"] == len(homes) and after["internal_errors"] == 0
    assert len(moved) >= 1
    requests.post(gateway.url + "/workers", json={"url": gone_url}, timeout=30)
    gateway.wait_ready(2)
    for url in (w.url for w in workers):
        for session in homes:
            requests.post(url + "/agent/session/close", json={"session_id": session}, timeout=30)
