"""Agent sessions across two real CPU workers behind SGLang's own gateway (`smg` from PyPI, installed
by scripts/setup.sh into .gateway-venv), all on 127.0.0.1.

With `--policy consistent_hashing` and the session id in `X-SMG-Routing-Key`, every turn of a
session reaches one worker; its inline hints (the `agent` object, which the gateway forwards) pin
the turn's prefix there, and the resumed turn finds it although other tenants filled both pools.
With round robin the same sessions switch workers and miss. The `/agent/*` routes do not pass the
gateway (404 from the gateway itself), so the hints that matter go inline: `tool_start`, the next
turn (its tool ended), `close_after_turn`. A worker removed from the gateway takes its sessions'
state with it; they continue on the other worker with no error and start anew there, and so do
a killed worker's (the gateway retries them on the survivor). With no key and no hint (an unmodified
OpenAI SDK agent), the gateway's cache-aware policy keeps each conversation on one worker and the
worker's own tool-call detection pins it. A worker with 8+ waiting requests loses its sessions to
the other worker under smg's default gate; a raised `--worker-overload-waiting-requests` keeps them.
`python -m sglang_agent.stats --url GATEWAY` sums /agent/stats over the gateway's workers."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import openai
import pytest
import requests

from server_fixture import RunningServer, fill_pool
from sglang_agent.gateway import ROUTED_WORKER_HEADER, ROUTING_KEY_HEADER, LocalGateway
from sglang_agent.stats import aggregate, fetch

POOL_TOKENS = 4096
WORDS = "repo file test patch build log trace diff error fix api doc".split()
WORKER_ARGS = ["--max-total-tokens", str(POOL_TOKENS), "--enable-cache-report",
               "--served-model-name", "tiny",  # one model to the gateway (each worker has its own copy)
               "--agent-max-pinned-fraction", "0.9",  # room for pins past the gateway's 0.8 overload gate
               "--constrained-json-disable-any-whitespace"]  # a forced tool call is compact JSON (TOOLS)
# An unmodified OpenAI SDK agent's tool (as in test_e2e_zero_hint): the forced choice makes the
# dummy-weight model's answer a call to it.
TOOLS = [{"type": "function", "function": {
    "name": "bash", "description": "run a shell command", "strict": True,
    "parameters": {"type": "object", "properties": {"cmd": {"type": "string", "enum": ["ls"]}},
                   "required": ["cmd"], "additionalProperties": False}}}]


@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    started = []
    try:
        for i in range(2):
            started.append(RunningServer(tmp_path_factory.mktemp(f"gw-worker{i}"), WORKER_ARGS))
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


def cached_tokens(usage) -> int:
    details = usage.prompt_tokens_details
    return (details.cached_tokens or 0) if details else 0


def keyed_turn(gateway_url: str, session: str, expected_duration_s: float = 2.0):
    """One turn of `session` (the same prompt every time), keyed, announcing a tool call inline.
    Returns (the worker that served it, prompt tokens, cached tokens)."""
    client = openai.OpenAI(base_url=gateway_url + "/v1", api_key="none", max_retries=0, timeout=300)
    raw = client.chat.completions.with_raw_response.create(
        model="tiny", messages=[{"role": "user", "content": f"{session}: " + text(session, 80)}], max_tokens=2,
        extra_headers={ROUTING_KEY_HEADER: session},
        extra_body={"agent": {"session_id": session,
                              "tool_start": {"tool_name": "bash", "expected_duration_s": expected_duration_s}}})
    reply = raw.parse()
    return raw.headers[ROUTED_WORKER_HEADER], reply.usage.prompt_tokens, cached_tokens(reply.usage)


def close_everywhere(urls, sessions) -> None:
    for url in urls:
        for session in sessions:
            requests.post(url + "/agent/session/close", json={"session_id": session}, timeout=30)


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
    def turn(session):
        return keyed_turn(gateway.url, session)[0]

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
    close_everywhere([w.url for w in workers], homes)


def test_a_killed_worker_s_sessions_continue_on_the_other_with_no_error(workers, tmp_path):
    """SIGKILL, not a removal: the gateway still lists the dead worker as healthy (its probes fail
    only after 3 x 60 s), so each request tries it first, gets a connection error and is retried on
    the other worker (smg's default retries). The client sees no error; the dead worker's sessions
    start anew on the survivor (their inline hints open fresh agent sessions there, counted once
    each) and miss, while the survivor's own sessions keep their worker and hit."""
    victim = RunningServer(tmp_path / "victim", WORKER_ARGS)
    survivor = workers[1]
    gw = None
    try:
        gw = LocalGateway([survivor.url, victim.url], tmp_path / "smg-kill.log")
        gw.wait_ready(2)
        # Tools announced at 30 s: the survivor's pins outlast the whole test.
        first = {f"kill-{i}": keyed_turn(gw.url, f"kill-{i}", expected_duration_s=30) for i in range(8)}
        homes = {s: t[0] for s, t in first.items()}
        assert set(homes.values()) == {survivor.url, victim.url}, homes
        before = stats(survivor.url)
        os.killpg(victim.pid, signal.SIGKILL)
        victim.proc.wait(timeout=30)
        # The survivor's own sessions first: the moved ones then need room its pool no longer has
        # (8 sessions' prefixes exceed it), and pins give way to them, soonest expiry first.
        order = sorted(homes, key=lambda s: homes[s] == victim.url)
        again = {s: keyed_turn(gw.url, s, expected_duration_s=30) for s in order}  # raises on any non-200
        assert {t[0] for t in again.values()} == {survivor.url}, again
        after = stats(survivor.url)
        moved = [s for s, url in homes.items() if url == victim.url]
        # One tool call per turn, no error; the moved sessions are new there (a fresh session each).
        assert after["tool_calls"] - before["tool_calls"] == len(homes), (before, after)
        assert after["internal_errors"] == 0
        for s, (_, prompt, cached) in again.items():
            if s in moved:
                assert cached < prompt // 2, (s, again[s])  # its KV died with the victim
            else:
                assert cached >= prompt - 1, (s, again[s])  # pinned across its tool call, on its worker
        assert [w["url"] for w in gw.workers()].count(victim.url) == 1  # still listed: no probe failed yet
    finally:
        if gw is not None:
            gw.stop()
        victim.stop()
        close_everywhere([survivor.url], [f"kill-{i}" for i in range(8)])


def test_cache_aware_routing_keeps_zero_hint_sessions_on_one_worker_and_their_pins_hit(workers, tmp_path):
    """No routing key and no hint of ours: unmodified OpenAI SDK agents with `tools` behind smg's
    default policy (cache_aware). The gateway sends each conversation to the worker that holds its
    prefix (its own text-prefix tree), the worker recognises each forced tool call by itself and pins
    the turn, and the resumed turns find their prefix although other tenants filled both pools."""
    ca = LocalGateway([w.url for w in workers], tmp_path / "smg-ca.log", policy="cache_aware")
    try:
        ca.wait_ready(2)
        before = {w.url: stats(w.url) for w in workers}
        client = openai.OpenAI(base_url=ca.url + "/v1", api_key="none", max_retries=0, timeout=300)
        history = {s: [{"role": "system", "content": f"You are coding agent ca-{s}. " + text(f"ca-{s}", 60)},
                       {"role": "user", "content": "List the files."}] for s in range(3)}
        seen: dict = {s: [] for s in range(3)}
        for turn in range(3):
            for s in range(3):
                last = turn == 2
                raw = client.chat.completions.with_raw_response.create(
                    model="tiny", messages=history[s], max_tokens=4 if last else 64, temperature=0, tools=TOOLS,
                    # The tools stay in every request (the chat template renders them at the start
                    # of the prompt); the last turn lets the model answer (auto).
                    **({} if last else {"tool_choice": "required"}))
                reply = raw.parse()
                seen[s].append((raw.headers[ROUTED_WORKER_HEADER], reply.usage.prompt_tokens, cached_tokens(reply.usage)))
                answer = reply.choices[0].message.content or ""
                if not last:
                    assert '"name": "bash"' in answer, answer  # a tool call, as JSON text (no parser)
                history[s] += [{"role": "assistant", "content": answer},
                               {"role": "user", "content": "Tool output: " + text(f"ca-{s}-{turn}", 30)}]
            if turn < 2:
                fill(workers, seed=4200 + turn)  # while the tools run
        for turns in seen.values():
            assert len({w for w, _, _ in turns}) == 1, seen  # each conversation stays on one worker
        assert resumed_hits(seen) == [True] * 6, seen
        served = {w.url: sum(len(t) - 1 for t in seen.values() if t[0][0] == w.url) for w in workers}
        for w in workers:
            now = stats(w.url)
            assert now["tool_calls_detected"] - before[w.url]["tool_calls_detected"] == served[w.url], (served, now)
            assert now["internal_errors"] == 0
    finally:
        ca.stop()


def test_a_worker_with_8_waiting_requests_loses_its_sessions_unless_the_gate_is_raised(gateway, workers, tmp_path):
    """smg also leaves a worker out of routing while it reports >= 8 waiting requests (another being
    under): a pinned session's resumed turn then goes to the other worker and misses. The simulator
    found this gate is what breaks affinity at high load (README, "Many workers"); raising
    `--worker-overload-waiting-requests` keeps the session where its KV is, and the resumed turn,
    older than the queue in program order, is served there from its pin."""
    raised = LocalGateway([w.url for w in workers], tmp_path / "smg-raised.log",
                          extra_args=["--worker-overload-waiting-requests", "1000"])
    # Two sessions whose routing key homes on one worker (the ring is the same in both gateways).
    sessions, home = [], None
    try:
        raised.wait_ready(2)
        for i in range(40):
            worker = keyed_turn(gateway.url, f"wait-{i}", expected_duration_s=30)[0]
            home = home or worker
            if worker == home:
                sessions.append(f"wait-{i}")
            if len(sessions) == 2:
                break
        assert len(sessions) == 2, sessions
        # Other tenants queue on the home worker: 16 requests of 2,200 + 700 tokens. One fits beside
        # the two pins (~1,100 tokens of the 4,096-token pool) at a time, and never two even with the
        # pins gone (two prompts alone exceed the pool), so the rest wait, the pins never stand in a
        # waiting request's way (they would give way after --agent-max-admission-stall-s) and never
        # have to give way to decode.
        rids = [f"flood-{i}-{time.monotonic_ns()}" for i in range(16)]

        def flood(i):
            ids = [3 + (i * 7919 + j * 613) % 1000 for j in range(2200)]
            requests.post(home + "/generate", json={"rid": rids[i], "input_ids": ids, "sampling_params": {
                "max_new_tokens": 700, "ignore_eos": True, "temperature": 0}}, timeout=600)

        threads = [threading.Thread(target=flood, args=(i,), daemon=True) for i in range(len(rids))]
        for t in threads:
            t.start()
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                load = requests.get(home + "/v1/loads", timeout=30).json()["loads"][0]
                if load["num_waiting_reqs"] >= 10:
                    break
                time.sleep(0.5)
            assert load["num_waiting_reqs"] >= 10, load
            time.sleep(12)  # one load poll of each gateway
            waiting = requests.get(home + "/v1/loads", timeout=30).json()["loads"][0]["num_waiting_reqs"]
            assert waiting >= 8, waiting
            default_gate = keyed_turn(gateway.url, sessions[0])
            raised_gate = keyed_turn(raised.url, sessions[1])
        finally:
            for rid in rids:
                requests.post(home + "/abort_request", json={"rid": rid}, timeout=30)
            for t in threads:
                t.join(timeout=120)
        assert default_gate[0] != home and default_gate[2] < default_gate[1] // 2, default_gate  # moved, missed
        assert raised_gate[0] == home and raised_gate[2] >= raised_gate[1] - 1, raised_gate  # stayed, hit
        home_stats = stats(home)
        assert home_stats["internal_errors"] == 0 and home_stats["pins_released_for_stalled_requests"] == 0, home_stats
    finally:
        raised.stop()
        close_everywhere([w.url for w in workers], [f"wait-{i}" for i in range(40)])
