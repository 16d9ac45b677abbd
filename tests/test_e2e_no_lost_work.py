"""No lost work, end to end on real CPU servers: pins and reloads never make a running or queued
request fail, a request that leaves without finishing never wedges its session, malformed bodies
get 400 and leave the server unharmed, nothing of ours holds a lock once everything is closed, and
many hints in flight are all answered. check_integrity runs in the server after every hint
(SGLANG_AGENT_CHECK_INTEGRITY=1)."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import aiohttp
import pytest
import requests

from server_fixture import RunningServer

POOL_TOKENS = 4096
CHECKED = {"SGLANG_AGENT_CHECK_INTEGRITY": "1"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # A low initial new-token ratio makes SGLang's admission under-reserve decode memory (as it
    # does under load), so a request can overrun its reservation while a pin is held.
    srv = RunningServer(tmp_path_factory.mktemp("e2e-lost-work"), ["--max-total-tokens", str(POOL_TOKENS),
                                                                  "--enable-metrics"],
                        env={"SGLANG_INIT_NEW_TOKEN_RATIO": "0.5", **CHECKED})
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def hicache_server(tmp_path_factory):
    srv = RunningServer(tmp_path_factory.mktemp("e2e-lost-work-hicache"),
                        ["--max-total-tokens", str(POOL_TOKENS), "--enable-hierarchical-cache", "--hicache-ratio", "2",
                         "--agent-offload-watermark", "0.1"],
                        env={"TRITON_INTERPRET": "1", **CHECKED})
    yield srv
    srv.stop()


def ids(seed: int, n: int) -> list[int]:
    return [3 + (seed * 7919 + i * 104729) % 1000 for i in range(n)]


def stats(server) -> dict:
    r = requests.get(server.url + "/agent/stats", timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def post(server, path, body, status=200) -> dict:
    r = requests.post(server.url + path, json=body, timeout=120)
    assert r.status_code == status, (path, r.status_code, r.text)
    return r.json()


def retractions(server) -> float:
    """SGLang's own count of retracted requests (work redone): a pin must never cause one."""
    text = requests.get(server.url + "/metrics", timeout=30).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("sglang:num_retracted_requests_total{"))


def generate(server, input_ids, max_new_tokens=4, agent=None, **sampling):
    body = {"input_ids": input_ids,
            "sampling_params": {"max_new_tokens": max_new_tokens, "temperature": 0, **sampling}}
    if agent is not None:
        body["agent"] = agent
    r = requests.post(server.url + "/generate", json=body, timeout=600)
    assert r.status_code == 200, r.text
    return r.json()


class Streamed:
    """A streamed /generate in a thread: `first` is set at its first chunk; `final` holds the last
    JSON object (or the error) once it ends."""

    def __init__(self, server, input_ids, max_new_tokens, **sampling):
        self.first = threading.Event()
        self.final = None
        self.error = None
        body = {"input_ids": input_ids, "stream": True,
                "sampling_params": {"max_new_tokens": max_new_tokens, "temperature": 0, **sampling}}
        self.thread = threading.Thread(target=self._run, args=(server.url, body), daemon=True)
        self.thread.start()

    def _run(self, url, body):
        try:
            with requests.post(url + "/generate", json=body, stream=True, timeout=900) as r:
                if r.status_code != 200:
                    self.error = f"HTTP {r.status_code}: {r.text}"
                    return
                for line in r.iter_lines():
                    if not line.startswith(b"data:") or line == b"data: [DONE]":
                        continue
                    self.final = json.loads(line[5:])
                    self.first.set()
        except Exception as e:  # the test reads it
            self.error = repr(e)
        finally:
            self.first.set()

    def result(self, timeout=900) -> dict:
        self.thread.join(timeout)
        assert self.error is None, self.error
        assert self.final is not None and "error" not in self.final, self.final
        return self.final


def assert_finished_whole(final: dict, max_new_tokens: int) -> None:
    meta = final["meta_info"]
    assert meta["finish_reason"]["type"] == "length", meta["finish_reason"]  # not an abort
    assert meta["completion_tokens"] == max_new_tokens


# ---- 1. pins and reloads never fail a running request -------------------------------------------

def test_a_pin_during_decode_never_fails_the_decoding_request(server):
    """Defect (issue "No lost work", 1): while a 2,400-token request decoded 300 tokens, a tool_start
    hard-pinned another session's 1,500-token prefix, which had been evictable; the running request
    then failed with SGLang's "Out of memory even after retracting all other requests in the decode
    batch. Aborting the last request." Failed on main with finish_reason abort (that message)."""
    generate(server, ids(1, 1500), agent={"session_id": "pinned-1"})
    before, retracted = stats(server), retractions(server)
    running = Streamed(server, ids(2, 2400), 300, ignore_eos=True)
    assert running.first.wait(120)
    post(server, "/agent/tool_start", {"session_id": "pinned-1", "tool_name": "bash", "expected_duration_s": 30})
    assert_finished_whole(running.result(), 300)
    after = stats(server)
    gave_way = (after["pins_refused_for_running_requests"] - before["pins_refused_for_running_requests"]
                + after["pins_released_for_decode"] - before["pins_released_for_decode"])
    assert gave_way >= 1, after
    assert retractions(server) == retracted
    post(server, "/agent/session/close", {"session_id": "pinned-1"})


def test_a_pin_made_first_gives_way_when_requests_outgrow_their_reservation(server):
    """The pin is made while the pool has room; SGLang then admits a second request by counting the
    running one's remaining output at its new-token ratio (0.5 here), and both decode to their
    full length: the pool overflows. The pin gives way (counted as displaced) before SGLang would
    retract or abort anything. Failed on main: SGLang retracted one of the two requests (its work
    redone: sglang:num_retracted_requests_total went up)."""
    generate(server, ids(3, 1000), agent={"session_id": "pinned-2"})
    start = post(server, "/agent/tool_start", {"session_id": "pinned-2", "tool_name": "bash", "expected_duration_s": 30})
    assert start["pinned_tokens"] >= 1000, start
    before, retracted = stats(server), retractions(server)
    first = Streamed(server, ids(4, 1200), 600, min_new_tokens=600)  # EOS-free, yet ratio-estimated
    assert first.first.wait(120)
    second = Streamed(server, ids(5, 800), 600, min_new_tokens=600)
    assert_finished_whole(first.result(), 600)
    assert_finished_whole(second.result(), 600)
    assert retractions(server) == retracted, "a request was retracted while a pin held memory"
    after = stats(server)
    assert after["pins_released_for_decode"] == before["pins_released_for_decode"] + 1, after
    assert after["pins_displaced"] == before["pins_displaced"] + 1
    assert after["sessions_by_state"]["in_tool"] >= 1 and after["pinned_tokens"] == 0  # in its tool, nothing held
    post(server, "/agent/session/close", {"session_id": "pinned-2"})


def test_a_queued_request_is_admitted_when_only_pins_hold_the_memory(server):
    generate(server, ids(5, 1800), agent={"session_id": "pinned-3"})
    post(server, "/agent/tool_start", {"session_id": "pinned-3", "tool_name": "bash", "expected_duration_s": 30})
    before = stats(server)
    out = generate(server, ids(6, 2600), 300, ignore_eos=True)  # does not fit beside the pin
    assert_finished_whole(out, 300)
    assert stats(server)["pins_released_for_admission"] == before["pins_released_for_admission"] + 1
    post(server, "/agent/session/close", {"session_id": "pinned-3"})


def test_reloads_wait_for_room_and_bystanders_finish(hicache_server):
    """Defect (issue "No lost work", 1, with HiCache): an offloaded session's 1,500 tokens loaded back
    at its tool_end while a 2,400-token request decoded, and a bystander with no hint at all (3,200
    tokens, 300 new) failed while other sessions' tool calls were offloaded and reloaded. Failed on
    main with the OOM abort of the decoding request."""
    server = hicache_server
    generate(server, ids(11, 1500), agent={"session_id": "off-1"})
    running = Streamed(server, ids(12, 2400), 300, ignore_eos=True)
    assert running.first.wait(120)
    start = post(server, "/agent/tool_start", {"session_id": "off-1", "tool_name": "tests", "expected_duration_s": 30})
    assert start["action"] == "offload" and start["offload_reason"] == "pool_above_watermark", start
    post(server, "/agent/tool_end", {"session_id": "off-1"})  # reload due now, beside the decode
    assert_finished_whole(running.result(), 300)
    assert stats(server)["reloads_waited"] >= 1  # it waited for room instead of taking the decode's
    # A bystander with no hint while other sessions are offloaded and reloaded around it. off-1 is
    # closed first: its reload is protected for its next turn, and the bystander (3,200 tokens and
    # SGLang's decode reservation) must find room without evicting off-2's 600 before they offload.
    post(server, "/agent/session/close", {"session_id": "off-1"})
    generate(server, ids(13, 600), agent={"session_id": "off-2"})
    bystander = Streamed(server, ids(14, 3200), 300, ignore_eos=True)
    assert bystander.first.wait(120)
    start = post(server, "/agent/tool_start", {"session_id": "off-2", "tool_name": "tests", "expected_duration_s": 30})
    assert start["action"] == "offload", json.dumps([start, stats(server)])
    post(server, "/agent/tool_end", {"session_id": "off-2"})
    assert_finished_whole(bystander.result(), 300)
    post(server, "/agent/session/close", {"session_id": "off-2"})
    closed = stats(server)
    assert closed["pinned_tokens"] == 0 and closed["sessions"] == 0 and closed["sessions_offloaded"] == 0
    flushed = requests.post(server.url + "/flush_cache", timeout=60)
    assert flushed.status_code == 200, flushed.text


# ---- 2. every way out of the scheduler ends the request once -------------------------------------

def test_a_request_dropped_while_queued_does_not_wedge_its_session(server):
    """Defect (issue "No lost work", 2): a request aborted while still queued (client disconnect)
    went through the tree cache's finish path without on_release; its rid stayed among the
    session's running requests and every later tool_start was answered {"deferred": true}.
    Failed on main: 'deferred': True."""
    generate(server, ids(20, 200), agent={"session_id": "wedge"})
    blocker = Streamed(server, ids(21, 3600), 400, ignore_eos=True)  # holds the pool: the next one queues
    assert blocker.first.wait(120)
    queued = requests.post(server.url + "/generate", stream=True, timeout=120, json={
        "input_ids": ids(22, 1500), "stream": True, "sampling_params": {"max_new_tokens": 8},
        "agent": {"session_id": "wedge", "tool_start": {"tool_name": "bash"}}})
    assert queued.status_code == 200
    time.sleep(1.0)
    queued.close()  # the client goes away while its request waits
    assert_finished_whole(blocker.result(), 400)
    time.sleep(2.0)  # the abort and the HTTP layer's "gone" have long reached the scheduler
    answer = post(server, "/agent/tool_start", {"session_id": "wedge", "tool_name": "bash", "expected_duration_s": 1})
    assert answer.get("deferred") is None, answer
    assert stats(server)["turns_dropped"] >= 1
    post(server, "/agent/session/close", {"session_id": "wedge"})


def test_batches_with_an_agent_hint_are_refused_and_change_nothing(server):
    """Defect (issue "No lost work", 2): a /v1/completions request with a list of prompts carrying an
    agent object was accepted, ran under derived ids, and its bound id never finished. Failed on
    main: 200, and the session stayed "running" forever."""
    before = stats(server)
    model = requests.get(server.url + "/v1/models", timeout=30).json()["data"][0]["id"]
    for path, body in (
        ("/v1/completions", {"model": model, "prompt": ["one prompt", "another"], "max_tokens": 2}),
        ("/v1/completions", {"model": model, "prompt": [[5, 6, 7], [8, 9]], "max_tokens": 2}),
        ("/v1/completions", {"model": model, "prompt": "x", "n": 2, "max_tokens": 2}),
        ("/generate", {"text": ["a", "b"], "sampling_params": {"max_new_tokens": 2}}),
        ("/generate", {"text": "a", "sampling_params": {"max_new_tokens": 2, "n": 3}}),
    ):
        r = requests.post(server.url + path, json={**body, "agent": {"session_id": "batch"}}, timeout=60)
        assert r.status_code == 400 and "error" in r.json(), (path, body, r.status_code, r.text)
    after = stats(server)
    assert after["sessions"] == before["sessions"] and after["requests_bound"] == before["requests_bound"]
    single = requests.post(server.url + "/v1/completions", timeout=60, json={
        "model": model, "prompt": [5, 6, 7], "max_tokens": 2, "agent": {"session_id": "single"}})
    assert single.status_code == 200, single.text  # a flat token list is one prompt
    post(server, "/agent/session/close", {"session_id": "single"})


# ---- 4. malformed requests ----------------------------------------------------------------------

def _raw(server, path, data: bytes) -> requests.Response:
    return requests.post(server.url + path, data=data, headers={"Content-Type": "application/json"}, timeout=60)


def test_malformed_bodies_get_400_and_leave_the_server_unharmed(server):
    """Defect (issue "No lost work", 4): `n` of the wrong type, a JSON body nested thousands of levels
    deep and a 5,000-digit integer answered 500 Internal Server Error. Failed on main with 500s."""
    model = requests.get(server.url + "/v1/models", timeout=30).json()["data"][0]["id"]
    chat = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    completion = {"model": model, "prompt": "hi", "max_tokens": 2}
    bad_n = [b'"2"', b"[2]", b"NaN", b"2.5", b"true", b"0", b"-1"]
    cases = []
    for path, body in (("/v1/chat/completions", chat), ("/v1/completions", completion)):
        for n in bad_n:
            cases.append((path, json.dumps(body)[:-1].encode() + b', "n": ' + n + b"}"))
        cases.append((path, json.dumps(body)[:-1].encode() + b', "max_tokens": ' + b"9" * 5000 + b"}"))
        cases.append((path, b'{"x": ' + b"[" * 3000 + b"]" * 3000 + b"}"))
    cases.append(("/generate", b'{"text": "hi", "sampling_params": {"max_new_tokens": ' + b"7" * 5000 + b"}}"))
    cases.append(("/generate", b'{"text": "hi", "sampling_params": {"n": "2"}}'))
    for path, data in cases:
        r = _raw(server, path, data)
        assert r.status_code == 400, (path, data[:80], r.status_code, r.text[:300])
        assert "error" in r.json() or "message" in r.json() or "detail" in r.json(), r.text[:300]
    assert requests.get(server.url + "/health", timeout=30).status_code == 200
    ok = requests.post(server.url + "/v1/chat/completions", json={**chat, "n": 1}, timeout=60)
    assert ok.status_code == 200, ok.text


# ---- 3 + 10. idle state, and many hints in flight -----------------------------------------------

def test_many_hints_in_flight_are_all_answered_in_order_per_session(server):
    """Defect (issue "No lost work", 10): one hint at a time crossed to the scheduler. Now 20
    sessions' hints are in flight together, and each session's are applied in the order it sends
    them (one after another, as a client of one session does)."""
    sessions = [f"burst-{i}" for i in range(20)]
    for s in sessions:
        generate(server, ids(hash(s) % 1000, 40), agent={"session_id": s})
    steps = (("/agent/tool_start", {"tool_name": "t", "expected_duration_s": 1}, 200),
             ("/agent/tool_start", {"tool_name": "t"}, 409),
             ("/agent/tool_end", {}, 200),
             ("/agent/tool_end", {}, 409))

    async def burst():
        async with aiohttp.ClientSession() as http:
            async def one_session(s):
                statuses = []
                for _ in range(5):
                    for path, body, _ in steps:
                        async with http.post(server.url + path, json={"session_id": s, **body}) as r:
                            statuses.append(r.status)
                return statuses

            return await asyncio.gather(*(one_session(s) for s in sessions))

    for statuses in asyncio.run(burst()):
        assert statuses == [status for _, _, status in steps] * 5, statuses
    for s in sessions:
        post(server, "/agent/session/close", {"session_id": s})


def test_nothing_of_ours_holds_a_lock_once_every_session_is_closed(server):
    """Defect (issue "No lost work", 3): with every session closed and nothing running, /flush_cache
    answered "Flush cache failed" (HiCache: tests/test_e2e_offload.py checks it there too)."""
    generate(server, ids(30, 300), agent={"session_id": "last"})
    post(server, "/agent/tool_start", {"session_id": "last", "tool_name": "bash", "expected_duration_s": 5})
    post(server, "/agent/session/close", {"session_id": "last"})
    s = stats(server)
    assert s["sessions"] == 0 and s["pinned_tokens"] == 0 and s["requests_bound"] == 0, s
    assert s["internal_errors"] == 0, s
    flushed = requests.post(server.url + "/flush_cache", timeout=60)
    assert flushed.status_code == 200, flushed.text


# ---- 7. what one hint may make the scheduler hold ------------------------------------------------

def test_a_huge_workflow_declaration_is_refused_at_once_and_stalls_no_one(server):
    """Defect (issue "No lost work", 7): declaring a valid 60,000-agent workflow (4 MB) held the
    scheduler for 24 s, so an 8-token request sent 1 s later took 24 s. Now the HTTP layer refuses
    it (413, over the documented limits) before it reaches the scheduler. Failed on main: 200 after
    seconds of scheduler time."""
    agents = [{"agent_id": f"a{i}"} for i in range(60_000)]
    body = {"workflow_id": "huge", "agents": agents, "schedule": [a["agent_id"] for a in agents]}
    r = requests.post(server.url + "/agent/workflow", json=body, timeout=120)
    assert r.status_code == 413 and "limit" in r.json()["error"], r.text[:300]
    small = {"workflow_id": "over-agents", "agents": [{"agent_id": f"a{i}"} for i in range(1025)], "schedule": ["a0"]}
    r = requests.post(server.url + "/agent/workflow", json=small, timeout=60)
    assert r.status_code == 413 and "1024" in r.json()["error"], r.text[:300]
    assert stats(server)["workflows"] == 0
    assert generate(server, ids(40, 8), 2)["meta_info"]["completion_tokens"] == 2
