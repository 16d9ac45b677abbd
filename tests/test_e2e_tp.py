"""Tensor parallelism on the CPU (--tp-size 2: two scheduler processes, gloo): agent sessions with
short pins that lapse, tool calls, aborts and memory pressure; after every scheduler step both
ranks' trees, pins and sessions are compared (SGLANG_AGENT_CHECK_INTEGRITY=1 gathers a digest of
each over the tree cache's TP group) and never differ."""

from __future__ import annotations

import time

import pytest
import requests

from server_fixture import RunningServer
from test_e2e_no_lost_work import generate, ids, post, stats


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = RunningServer(tmp_path_factory.mktemp("e2e-tp"), ["--max-total-tokens", "2048", "--tp-size", "2"],
                        startup_timeout_s=300,
                        env={"SGLANG_CPU_OMP_THREADS_BIND": "0|1", "SGLANG_AGENT_CHECK_INTEGRITY": "1"})
    yield srv
    srv.stop()


def test_tp_ranks_take_the_same_decisions_every_step(server):
    """Defect (issue "No lost work", 5): the pin sweep, host-tier timers and is_pin_live read each
    rank's own clock, so a pin could expire on rank 0 a step before rank 1 and the ranks' trees
    diverge. The step clock carries rank 0's time to every rank; here the ranks are compared after
    every step of a workload whose pins lapse under pressure (tests/test_tp_agreement.py shows the
    divergence with per-rank clocks)."""
    sessions = [f"tp-{i}" for i in range(6)]
    for rnd in range(3):
        for i, s in enumerate(sessions):
            generate(server, ids(i, 120 + 20 * rnd), 4, agent={"session_id": s})
            post(server, "/agent/tool_start", {"session_id": s, "tool_name": "t", "expected_duration_s": 0.2 + 0.1 * i})
        for k in range(4):  # other tenants: memory pressure while some pins lapse
            generate(server, ids(100 + 10 * rnd + k, 500), 2)
        time.sleep(0.5)
        for s in sessions[::2]:
            post(server, "/agent/tool_end", {"session_id": s})
    queued = requests.post(server.url + "/generate", stream=True, timeout=60, json={
        "input_ids": ids(999, 300), "stream": True, "sampling_params": {"max_new_tokens": 200},
        "agent": {"session_id": "tp-abort"}})
    queued.close()  # an abort in the middle of it all
    time.sleep(1.0)
    s = stats(server)
    assert s["pins_created"] >= 10 and s["pins_expired_before_tool_end"] >= 1, s
    assert s["tp_agreement_checks"] > 50, s
    assert s["internal_errors"] == 0, s  # a divergence (or any integrity break) would count here
    for x in sessions:
        post(server, "/agent/session/close", {"session_id": x})
