"""`python -m sglang_agent.demo` end to end: two real CPU servers, the OpenAI SDK workload, the
table; its numbers for ours equal our server's /agent/stats over the run, ours caches more of
the resumed turns than upstream, and no server outlives the demo (exit, Ctrl-C, a server that
does not come up)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest

from sglang_agent.demo import DemoConfig, PassResult, TurnRecord, format_table, summary

DEMO = [sys.executable, "-m", "sglang_agent.demo"]
PID = re.compile(r"starting (\w+) \(\S+\) on \S+, pid (\d+)")


def group_alive(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    alive = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            pass
    return alive


def test_demo_table_matches_agent_stats_and_ours_beats_upstream(tmp_path):
    out = tmp_path / "demo.json"
    run = subprocess.run([*DEMO, "--short", "--json", str(out)], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[:2000] + "\n[...]\n" + run.stderr[-3000:]
    pids = [int(p) for _, p in PID.findall(run.stdout)]
    assert len(pids) == 2, run.stdout
    assert "resumed turns with a cache hit" in run.stdout and "upstream" in run.stdout
    passes = {p["name"]: p for p in json.loads(out.read_text())}
    ours, upstream = passes["ours"], passes["upstream"]
    cfg = DemoConfig.short()
    for p in (ours, upstream):
        assert p["summary"]["resumed turns"] == cfg.sessions * (cfg.turns - 1)
    stats = ours["agent_stats"]
    # The table's numbers for ours are the server's own counts over the run.
    assert ours["summary"]["resumed turns"] == stats["resumed_turns"]
    assert ours["summary"]["cached tokens of resumed turns"] == stats["resumed_cached_tokens"]
    assert ours["summary"]["resumed turns with a cache hit"] == stats["resumed_turns_with_hit"]
    assert ours["summary"]["pins"] == stats["pins_created"] > 0
    assert stats["tool_calls"] == cfg.sessions * (cfg.turns - 1)
    # The point: the pinned sessions find their prefixes, LRU loses them to the other tenants.
    assert ours["summary"]["cached tokens of resumed turns"] > 2 * upstream["summary"]["cached tokens of resumed turns"]
    assert ours["summary"]["resumed turns with a cache hit"] > upstream["summary"]["resumed turns with a cache hit"]
    for pid in pids:
        assert group_alive(pid) == [], f"server group {pid} outlived the demo"


def _wait_for(proc, pattern: str, timeout_s: float) -> str:
    seen = ""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        seen += line
        if pattern in seen:
            return seen
    raise AssertionError(f"{pattern!r} not printed within {timeout_s} s:\n{seen}")


def test_ctrl_c_stops_both_servers(tmp_path):
    proc = subprocess.Popen([*DEMO, "--short"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        seen = _wait_for(proc, "[demo] ours is up", 300)
        pids = [int(p) for _, p in PID.findall(seen)]
        assert len(pids) == 2 and all(group_alive(p) for p in pids)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, rest
    assert "interrupted" in rest and "stopped 2 server(s)" in rest
    for pid in pids:
        assert group_alive(pid) == [], f"server group {pid} outlived Ctrl-C"


def test_a_server_that_does_not_come_up_is_named_with_its_log(tmp_path):
    run = subprocess.run([*DEMO, "--short", "--model-path", str(tmp_path / "no-such-model")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 1
    assert "a server did not come up" in run.stderr and "log" in run.stderr
    assert str(tmp_path / "no-such-model") in run.stderr  # the server's own complaint, from its log tail
    for pid in (int(p) for _, p in PID.findall(run.stdout)):
        assert group_alive(pid) == []


def test_table_is_computed_from_the_turns():
    result = PassResult("ours", [
        TurnRecord("a", 0, 100, 0, 0.5),
        TurnRecord("a", 1, 130, 99, 0.2, previous_prompt_tokens=100),  # all but the join token
        TurnRecord("a", 2, 160, 20, 0.4, previous_prompt_tokens=130),  # lost it
    ], tenant_requests=3, agent_stats={"pins_created": 2, "offloads": 0})
    row = summary(result)
    assert row["resumed turns"] == 2 and row["resumed turns with a cache hit"] == 1
    assert row["cached share of resumed prompts"] == (99 + 20) / (130 + 160)
    assert row["TTFT of resumed turns, mean (s)"] == pytest.approx(0.3)
    assert row["TTFT of resumed turns, p90 (s)"] == 0.4
    assert row["pins"] == 2
    assert "resumed turns with a cache hit" in format_table([result])
