"""Hint throughput and latency of a real server, next to an upstream control request measured in the
same run: many clients at once send tool_start / tool_end hints (and GET /agent/stats), then the
same clients send SGLang's own GET /v1/loads (a round trip to the scheduler too). Hints travel on
the requests' socket, many per scheduler step, each answered by id; before, one hint at a time
crossed to the scheduler, so the rate was one IPC round trip per hint.

    python -m eval.bench_hints [--url URL] [--clients 32] [--hints 4000]

Without --url it starts a CPU server (tiny model, dummy weights) and stops it at the end. Numbers
from a 2-core CPU machine are no GPU claim: the point is the ratio to the control request.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Optional

import aiohttp


async def _drive(url: str, clients: int, total: int, make) -> tuple[float, list[float], dict]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counter = iter(range(total))

    async def client(http: aiohttp.ClientSession, index: int) -> None:
        for n in counter:
            method, path, body = make(index, n)
            started = time.perf_counter()
            async with http.request(method, url + path, json=body) as r:
                await r.read()
                statuses[r.status] = statuses.get(r.status, 0) + 1
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http, i) for i in range(clients)))
        elapsed = time.perf_counter() - start
    return elapsed, latencies, statuses


def _summary(name: str, total: int, elapsed: float, latencies: list[float], statuses: dict) -> dict:
    lat = sorted(latencies)
    return {"name": name, "requests": total, "per_s": total / elapsed,
            "p50_ms": 1e3 * lat[len(lat) // 2], "p99_ms": 1e3 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
            "statuses": dict(sorted(statuses.items()))}


async def _setup_sessions(url: str, sessions: int) -> None:
    async with aiohttp.ClientSession() as http:
        for i in range(sessions):
            body = {"input_ids": [5 + i % 900, 6, 7, 8], "sampling_params": {"max_new_tokens": 1},
                    "agent": {"session_id": f"bench-{i}"}}
            async with http.post(url + "/generate", json=body) as r:
                assert r.status == 200, await r.text()


class BackgroundDecode:
    """`streams` long generations keep the scheduler busy (each step then takes a forward pass),
    which is when a one-hint-at-a-time channel falls to one hint per scheduler step."""

    def __init__(self, url: str, streams: int):
        import threading

        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._loop, args=(url, i), daemon=True) for i in range(streams)]
        for t in self.threads:
            t.start()

    def _loop(self, url: str, i: int) -> None:
        import requests

        while not self.stop.is_set():
            requests.post(url + "/generate", timeout=600, json={
                "input_ids": [7 + (i * 31 + k) % 900 for k in range(256)],
                "sampling_params": {"max_new_tokens": 400, "ignore_eos": True}})

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=120)


def run(url: str, clients: int, total: int, background: int = 0) -> list[dict]:
    asyncio.run(_setup_sessions(url, clients))
    busy = BackgroundDecode(url, background) if background else None

    in_tool = [False] * clients

    def hint(index: int, n: int):
        # Each client owns a session: start, end, start, end, ... and now and then the stats.
        session = f"bench-{index}"
        if n % 16 == 15:
            return "GET", "/agent/stats", None
        in_tool[index] = not in_tool[index]
        if in_tool[index]:
            return "POST", "/agent/tool_start", {"session_id": session, "tool_name": "t", "expected_duration_s": 1}
        return "POST", "/agent/tool_end", {"session_id": session}

    def control(index: int, n: int):
        return "GET", "/v1/loads", None

    rows = []
    try:
        for name, make in (("hints", hint), ("control: GET /v1/loads", control)):
            elapsed, latencies, statuses = asyncio.run(_drive(url, clients, total, make))
            rows.append(_summary(name, total, elapsed, latencies, statuses))
    finally:
        if busy is not None:
            busy.close()
    return rows


def main(argv: Optional[list[str]] = None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m eval.bench_hints", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("--url", default=None, help="a running sglang_agent server (default: start a CPU one)")
    p.add_argument("--clients", type=int, default=32, help="concurrent clients")
    p.add_argument("--hints", type=int, default=4000, help="requests per measurement")
    p.add_argument("--background-decode", type=int, default=0,
                   help="long generations running meanwhile (a busy scheduler; default none)")
    args = p.parse_args(argv)
    server = None
    try:
        url = args.url
        if url is None:
            from sglang_agent.local_server import CPU_SERVER_ARGS, LocalServer
            from sglang_agent.tiny_model import write_tiny_llama

            tmp = Path(tempfile.mkdtemp(prefix="bench-hints-"))
            server = LocalServer(write_tiny_llama(tmp / "tiny-llama"), [*CPU_SERVER_ARGS, "--max-total-tokens", "8192"],
                                 tmp / "server.log")
            server.wait_healthy()
            url = server.url
        rows = run(url, args.clients, args.hints, args.background_decode)
    finally:
        if server is not None:
            server.stop()
    print(f"{args.clients} clients, {args.hints} requests each measurement, "
          f"{args.background_decode} long generations running meanwhile")
    print(f"{'':26s} {'per s':>9s} {'p50 ms':>8s} {'p99 ms':>8s}  statuses")
    for r in rows:
        print(f"{r['name']:26s} {r['per_s']:9.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f}  {r['statuses']}")
    hints, control = rows
    print(f"hints / control: throughput {hints['per_s'] / control['per_s']:.2f}x, p99 "
          f"{hints['p99_ms'] / control['p99_ms']:.2f}x")
    return rows


if __name__ == "__main__":
    main()
