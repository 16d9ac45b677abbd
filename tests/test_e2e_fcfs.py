"""Program-level FCFS end to end: with one request running at a time, a resumed agent turn that
arrives behind newcomers is served before them, because its program arrived first; upstream FCFS
(--agent-disable-program-fcfs) serves it last. Each request is sent only once the previous one is
running or queued (SGLang's /v1/loads says so): the order does not depend on timing."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from server_fixture import RunningServer
from test_e2e_server import generate, prompt


def wait_until_in_scheduler(server, requests_in: int, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        load = requests.get(server.url + "/v1/loads", timeout=30).json()["loads"][0]
        if load["num_running_reqs"] + load["num_waiting_reqs"] >= requests_in:
            return
        time.sleep(0.05)
    raise AssertionError(f"{requests_in} requests never reached the scheduler")


def serve_order(server) -> list[str]:
    first = generate(server, prompt(41), {"session_id": "old-program"})  # the program arrives first
    assert first.status_code == 200, first.text
    done: list[str] = []

    def send(name, text, agent=None, max_new_tokens=4):
        reply = generate(server, text, agent, max_new_tokens=max_new_tokens)
        assert reply.status_code == 200, reply.text
        done.append(name)

    # A long request holds the only running slot while the others queue up, in this order.
    jobs = [("blocker", prompt(40), None, 1500)]  # seconds of decoding on the CPU
    jobs += [(f"new{i}", prompt(50 + i), None, 4) for i in range(3)]
    jobs += [("resumed", prompt(41) + first.json()["text"] + " tool returned: ok", {"session_id": "old-program"}, 4)]
    threads = []
    for index, job in enumerate(jobs):
        threads.append(threading.Thread(target=send, args=job))
        threads[-1].start()
        wait_until_in_scheduler(server, index + 1)
    for t in threads:
        t.join(timeout=300)
    requests.post(server.url + "/agent/session/close", json={"session_id": "old-program"}, timeout=30)
    return done


@pytest.mark.parametrize("program_fcfs", [True, False], ids=["program-fcfs", "upstream-fcfs"])
def test_resumed_turn_keeps_its_programs_place(tmp_path, program_fcfs):
    extra = ["--max-running-requests", "1", "--schedule-policy", "fcfs"]
    if not program_fcfs:
        extra.append("--agent-disable-program-fcfs")
    server = RunningServer(tmp_path, extra)
    try:
        order = serve_order(server)
    finally:
        server.stop()
    assert order[0] == "blocker", order
    if program_fcfs:
        assert order[1] == "resumed", order
    else:
        assert order[-1] == "resumed", order
