"""End to end on a real CPU SGLang server with the host tier (SGLang's HiCache, our Triton kernel
as its copy engine under TRITON_INTERPRET=1): a session offloaded during a long tool call (under
memory pressure: another session holds a pin above the offload watermark) gets its prefix back
from host memory, and generates exactly what a session whose prefix never left the GPU generates."""

from __future__ import annotations

import time

import pytest
import requests

from server_fixture import RunningServer
from test_e2e_server import generate, prompt, stats

POOL_TOKENS = 2048


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = RunningServer(
        tmp_path_factory.mktemp("e2e-offload"),
        ["--max-total-tokens", str(POOL_TOKENS), "--enable-hierarchical-cache", "--hicache-ratio", "4",
         "--enable-metrics", "--agent-offload-watermark", "0.1"],
        env={"TRITON_INTERPRET": "1"},
    )
    yield srv
    srv.stop()


def post(server, path, body) -> dict:
    r = requests.post(server.url + path, json=body, timeout=60)
    assert r.status_code == 200, (path, r.status_code, r.text)
    return r.json()


def two_turns(server, session, between=lambda: None):
    first = generate(server, prompt(1), {"session_id": session})
    assert first.status_code == 200, first.text
    first = first.json()
    between()
    second = generate(server, prompt(1) + first["text"] + " tool returned: ok", {"session_id": session})
    assert second.status_code == 200, second.text
    return first, second.json()


class hold_memory:
    """Memory pressure: a long generation keeps ~20% of the pool protected while it decodes."""

    def __init__(self, server, seed=77):
        from test_e2e_no_lost_work import Streamed, ids

        self.running = Streamed(server, ids(seed, 420), 600, ignore_eos=True)

    def __enter__(self):
        assert self.running.first.wait(120)
        return self

    def __exit__(self, *exc):
        self.running.result()


def test_no_memory_pressure_no_offload(server):
    """Defect (issue "No lost work", 9a): with nothing else on the server a long tool was offloaded.
    Failed on main: action "offload" on an idle server. Now the prefix stays an ordinary cached one
    (HiCache's host copy covers an eviction; no GPU memory is held for it)."""
    generate(server, prompt(5), {"session_id": "calm"})
    start = post(server, "/agent/tool_start", {"session_id": "calm", "tool_name": "calm_tool", "expected_duration_s": 30})
    assert start["action"] == "keep" and start["pinned_tokens"] == 0, start
    post(server, "/agent/session/close", {"session_id": "calm"})


def test_offloaded_session_resumes_from_host_with_identical_output(server):
    assert stats(server)["host_tier"] == "hicache"
    # Control: the prefix never leaves the GPU (no tool call, nothing else runs).
    c1, c2 = two_turns(server, "control")
    assert c2["meta_info"]["cached_tokens"] > 0
    post(server, "/agent/session/close", {"session_id": "control"})
    flushed = requests.post(server.url + "/flush_cache", timeout=60)
    assert flushed.status_code == 200, flushed.text  # nothing of ours holds a lock once all is closed

    def long_tool_under_pressure():
        with hold_memory(server):
            start = post(server, "/agent/tool_start", {"session_id": "off", "tool_name": "test_suite",
                                                       "expected_duration_s": 30})
        assert start["action"] == "offload" and start["offload_reason"] == "pool_above_watermark", start
        during = stats(server)
        assert during["gpu_tokens_freed"] > 0 and during["host_tokens"] > 0, during
        filled = sum(generate(server, prompt(100 + i)).json()["meta_info"]["prompt_tokens"] for i in range(12))
        assert filled > 1.5 * POOL_TOKENS  # the session's GPU slots would be long gone by LRU
        post(server, "/agent/tool_end", {"session_id": "off"})  # early: reloads at once

    o1, o2 = two_turns(server, "off", long_tool_under_pressure)
    assert o1["text"] == c1["text"]
    assert o2["meta_info"]["cached_tokens"] == c2["meta_info"]["cached_tokens"]
    assert o2["text"] == c2["text"]  # the KV came back bit for bit
    after = stats(server)
    assert after["prefetch_hits"] == 1 and after["prefetch_misses"] == 0, after
    assert after["prefetched_tokens"] > 0 and after["copy_engine_bytes_to_gpu"] > 0, after
    assert after["copy_engine"] == "triton", after
    assert after["resumed_turns_with_hit"] == 1 and after["sessions_offloaded"] == 0

    assert after["offloads_for_pool_watermark"] == 1, after
    post(server, "/agent/session/close", {"session_id": "off"})
    closed = stats(server)
    assert closed["host_tokens"] == 0 and closed["pinned_tokens"] == 0 and closed["sessions"] == 0
    flushed = requests.post(server.url + "/flush_cache", timeout=60)
    assert flushed.status_code == 200, flushed.text


def test_turn_arriving_before_the_reload_is_a_miss_and_still_hits_host(server):
    first = generate(server, prompt(2), {"session_id": "early"}).json()
    freed_before = stats(server)["gpu_tokens_freed"]
    with hold_memory(server, seed=78):
        start = post(server, "/agent/tool_start", {"session_id": "early", "tool_name": "slow_tool",
                                                   "expected_duration_s": 30})
    assert start["action"] == "offload", start
    # The path leaves the GPU once HiCache's write-through copy has landed (at tool_start, or a
    # later step on a slow machine): the turn must come after that to be the miss this tests.
    deadline = time.monotonic() + 60
    while stats(server)["gpu_tokens_freed"] == freed_before and time.monotonic() < deadline:
        time.sleep(0.2)
    before = stats(server)
    assert before["gpu_tokens_freed"] > freed_before, before
    # No tool_end: the next turn itself says the tool returned, well before the prediction.
    resumed = generate(server, prompt(2) + first["text"] + " done", {"session_id": "early"}).json()
    after = stats(server)
    assert after["prefetch_misses"] == before["prefetch_misses"] + 1
    assert resumed["meta_info"]["cached_tokens"] >= first["meta_info"]["prompt_tokens"] - 8
    post(server, "/agent/session/close", {"session_id": "early"})


def test_next_workflow_agent_prefix_is_prefetched_from_host(server):
    """KVFlow prefetch: agent A's prefix is pushed to host by a big unrelated request; when the
    step before A's next turn is reported, A's prefix is reloaded before A's request arrives."""
    post(server, "/agent/workflow", {"workflow_id": "wf", "schedule": ["A", "B", "A"],
                                     "agents": [{"agent_id": "A", "session_id": "wf-A"},
                                                {"agent_id": "B", "session_id": "wf-B"}]})
    a_prefix = "A " + prompt(3000, words=290)
    first = generate(server, a_prefix, {"session_id": "wf-A", "workflow_step": {"workflow_id": "wf", "agent_id": "A"}})
    assert first.status_code == 200, first.text
    a_tokens = first.json()["meta_info"]["prompt_tokens"]
    filler = generate(server, "F " + prompt(3001, words=640)).json()["meta_info"]["prompt_tokens"]
    assert filler + a_tokens > POOL_TOKENS  # A's prefix had to leave the GPU
    before = stats(server)["workflow_prefetched_tokens"]
    post(server, "/agent/workflow/step", {"workflow_id": "wf", "agent_id": "B"})  # A runs next
    prefetched = stats(server)["workflow_prefetched_tokens"] - before
    assert prefetched > a_tokens // 2, prefetched
    again = generate(server, a_prefix + " next", {"session_id": "wf-A", "workflow_step": {"workflow_id": "wf", "agent_id": "A"}})
    assert again.status_code == 200, again.text
    assert again.json()["meta_info"]["cached_tokens"] >= a_tokens - 8
    post(server, "/agent/session/close", {"session_id": "wf-A"})


def metric(server, name: str) -> float:
    text = requests.get(server.url + "/metrics", timeout=30).text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{")]
    assert values, f"{name} not in /metrics"
    return sum(values)


def test_agent_metrics_are_exported_with_sglangs(server):
    """Runs after the tests above on the same server: their offloads, reloads and prefetches
    show in SGLang's /metrics under sglang:agent_*, equal to /agent/stats."""
    s = stats(server)
    assert s["offloads"] >= 2
    assert metric(server, "sglang:agent_offloads_total") == s["offloads"]
    assert metric(server, "sglang:agent_host_reloaded_bytes_total") == s["copy_engine_bytes_to_gpu"] > 0
    assert metric(server, "sglang:agent_prefetch_hits_total") == s["prefetch_hits"] >= 1
    assert metric(server, "sglang:agent_prefetch_misses_total") == s["prefetch_misses"] >= 1
    assert metric(server, "sglang:agent_sessions_offloaded") == s["sessions_offloaded"] == 0
    assert metric(server, "sglang:num_running_reqs") == 0  # SGLang's own metrics are still there
