"""Data parallelism (--dp-size 2 on the CPU, one scheduler per rank): a session belongs to one DP
rank (a stable hash of its id): every turn of it is routed there (SGLang's routed_dp_rank), its
hints reach only that rank, its pin holds there, and /agent/stats sums the ranks."""

from __future__ import annotations

import zlib

import pytest
import requests

from server_fixture import RunningServer
from test_e2e_no_lost_work import generate, ids, post, stats

SESSIONS = [f"dp-session-{i}" for i in range(6)]


def rank_of(session: str) -> int:
    return zlib.crc32(session.encode()) % 2


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # SGLang binds each CPU rank to its own cores; this 2-core machine gives one core per rank.
    srv = RunningServer(tmp_path_factory.mktemp("e2e-dp"), ["--max-total-tokens", "2048", "--dp-size", "2"],
                        startup_timeout_s=300, env={"SGLANG_CPU_OMP_THREADS_BIND": "0|1"})
    yield srv
    srv.stop()


def test_a_sessions_turns_and_hints_stay_on_its_dp_rank(server):
    """Defect (issue "No lost work", 6): a session bind was fanned out to every DP rank while its
    requests went to one (round robin), so its tool_start was answered 404 by the rank that did not
    hold it (the worst answer wins). Failed on main: tool_start 404 for sessions, turns on both ranks."""
    assert {rank_of(s) for s in SESSIONS} == {0, 1}  # both ranks are exercised
    for turn in range(2):
        for s in SESSIONS:
            out = generate(server, ids(zlib.crc32(s.encode()) % 500, 80 + turn * 10), 4, agent={"session_id": s})
            assert out["meta_info"]["dp_rank"] == rank_of(s), (s, out["meta_info"])
    for s in SESSIONS:
        start = post(server, "/agent/tool_start", {"session_id": s, "tool_name": "bash", "expected_duration_s": 5})
        assert start["pinned_tokens"] > 0, start
    s = stats(server)
    assert s["dp_ranks"] == 2 and s["sessions"] == len(SESSIONS) and s["pins"] == len(SESSIONS), s
    per_rank = {r["dp_rank"]: r for r in s["per_dp_rank"]}
    for rank in (0, 1):
        assert per_rank[rank]["sessions"] == sum(rank_of(x) == rank for x in SESSIONS), per_rank
    assert s["pinned_tokens"] == sum(r["pinned_tokens"] for r in s["per_dp_rank"])
    for x in SESSIONS:
        post(server, "/agent/tool_end", {"session_id": x})
        post(server, "/agent/session/close", {"session_id": x})
    assert stats(server)["sessions"] == 0


def test_a_request_naming_another_dp_rank_than_its_sessions_is_refused(server):
    s = SESSIONS[0]
    r = requests.post(server.url + "/generate", timeout=60, json={
        "input_ids": ids(1, 20), "sampling_params": {"max_new_tokens": 2}, "routed_dp_rank": 1 - rank_of(s),
        "agent": {"session_id": s}})
    assert r.status_code == 400 and "DP rank" in r.json()["error"], r.text
