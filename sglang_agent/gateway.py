"""SGLang's model gateway (`smg`, PyPI) in front of sglang-agent workers, started from Python on
127.0.0.1: what the many-worker tests and `python -m sglang_agent.stats` use.

Agent sessions behind the gateway need session affinity: every turn of a session must reach the
worker that holds its KV, its pin and its tool statistics. The gateway's `consistent_hashing`
policy routes on the `X-SMG-Routing-Key` header (ROUTING_KEY_HEADER): send the session id there.
Clients with no key rely on `cache_aware` (prefix locality). The gateway forwards the inline
`agent` object of /generate and /v1/* bodies (unknown top-level fields are kept) but no route
under /agent/ and only a few headers, so hints go inline on the model request (README: "Many
workers")."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Optional

import requests

from sglang_agent.local_server import ServerStartError, free_port, log_tail, stop_process_group

ROUTING_KEY_HEADER = "X-SMG-Routing-Key"
ROUTED_WORKER_HEADER = "x-smg-routed-worker-id"
GATEWAY_VERSION = "1.13.0"  # scripts/setup.sh installs this one into .gateway-venv


def gateway_binary() -> str:
    """The `smg` console script: $SGLANG_AGENT_SMG, the project's .gateway-venv, or PATH."""
    named = os.environ.get("SGLANG_AGENT_SMG")
    if named:
        return named
    local = Path(__file__).resolve().parent.parent / ".gateway-venv" / "bin" / "smg"
    if local.exists():
        return str(local)
    found = shutil.which("smg")
    if found:
        return found
    raise FileNotFoundError("no `smg` binary: run scripts/setup.sh (it installs smg==%s into .gateway-venv) "
                            "or set SGLANG_AGENT_SMG" % GATEWAY_VERSION)


def worker_urls(url: str, timeout_s: float = 10.0) -> list[str]:
    """The workers behind a gateway (its GET /workers), or [url] for a worker itself."""
    try:
        r = requests.get(url.rstrip("/") + "/workers", timeout=timeout_s)
    except requests.RequestException:
        return [url]
    if r.status_code != 200:
        return [url]
    body = r.json()
    workers = body.get("workers", body) if isinstance(body, dict) else body
    urls = [w.get("url") for w in workers if isinstance(w, dict) and w.get("url")] if isinstance(workers, list) else []
    return urls or [url]


class LocalGateway:
    """One `smg launch` process over static worker URLs, in its own process group."""

    def __init__(self, workers: list[str], log_path: Path, policy: str = "consistent_hashing",
                 extra_args: Optional[list[str]] = None, port: Optional[int] = None):
        self.port = port or free_port()
        self.metrics_port = free_port()  # its Prometheus port: two gateways on one machine would collide
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_path)
        cmd = [gateway_binary(), "launch", "--host", "127.0.0.1", "--port", str(self.port),
               "--worker-urls", *workers, "--policy", policy,
               "--prometheus-host", "127.0.0.1", "--prometheus-port", str(self.metrics_port), *(extra_args or [])]
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def workers(self) -> list[dict]:
        body = requests.get(self.url + "/workers", timeout=10).json()
        return body.get("workers", []) if isinstance(body, dict) else body

    def wait_ready(self, count: int, timeout_s: float = 120.0) -> None:
        """Until `count` workers are healthy in the gateway's own listing."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(f"smg exited with {self.proc.returncode}; log {self.log_path}:\n{self.tail()}")
            try:
                ready = [w for w in self.workers() if w.get("is_healthy", True) and w.get("status", "ready") == "ready"]
                if len(ready) >= count:
                    return
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.5)
        raise ServerStartError(f"smg: {count} workers not ready after {timeout_s:.0f} s; log:\n{self.tail()}")

    def tail(self, n: int = 40) -> str:
        return log_tail(self.log, self.log_path, n)

    def stop(self) -> None:
        stop_process_group(self.proc, grace_s=10)  # it drains first; the tests do not need the grace period
        if not self.log.closed:
            self.log.close()
