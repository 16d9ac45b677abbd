"""Client helpers: declare sessions and workflows and wrap tool calls, so that agent programs
send hints without hand-written HTTP.

    client = AgentClient("http://127.0.0.1:30000")
    coder = client.session("task-17/coder")
    openai_client.chat.completions.create(..., extra_body=coder.extra_body())
    with coder.tool("bash", expected_duration_s=2):   # tool_start now, tool_end on exit
        run_bash(...)

SGLang frontend programs (`@sgl.function`) run on `coder.runtime_endpoint()`, a RuntimeEndpoint
whose /generate requests carry the session's `agent` object.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Sequence

import requests


class AgentHintError(RuntimeError):
    """The server refused a hint (4xx) and changed nothing."""

    def __init__(self, status: int, reason: str):
        super().__init__(f"HTTP {status}: {reason}")
        self.status = status
        self.reason = reason


class AgentClient:
    def __init__(self, base_url: str, timeout_s: float = 30.0, http: Optional[requests.Session] = None):
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.http = http or requests.Session()

    def _call(self, method: str, path: str, body: Optional[dict] = None) -> dict:
        response = self.http.request(method, self.base_url + path, json=body, timeout=self.timeout_s)
        payload = response.json()
        if response.status_code >= 400:
            raise AgentHintError(response.status_code, payload.get("error", response.text))
        return payload

    def session(self, session_id: str) -> "AgentSession":
        return AgentSession(self, session_id)

    def declare_workflow(
        self,
        workflow_id: str,
        agents: dict[str, str] | Sequence[str],
        schedule: Optional[Sequence[str]] = None,
        edges: Optional[Sequence[tuple[str, str]]] = None,
        dag: bool = False,
    ) -> dict:
        """`agents`: agent ids, or {agent_id: session_id}. Give a schedule or edges."""
        pairs = agents.items() if isinstance(agents, dict) else ((a, None) for a in agents)
        body: dict = {"workflow_id": workflow_id, "dag": dag,
                      "agents": [{"agent_id": a, **({"session_id": s} if s else {})} for a, s in pairs]}
        if schedule is not None:
            body["schedule"] = list(schedule)
        if edges is not None:
            body["edges"] = [list(e) for e in edges]
        return self._call("POST", "/agent/workflow", body)

    def step(self, workflow_id: str, agent_id: str) -> dict:
        return self._call("POST", "/agent/workflow/step", {"workflow_id": workflow_id, "agent_id": agent_id})

    def stats(self) -> dict:
        return self._call("GET", "/agent/stats")


class AgentSession:
    def __init__(self, client: AgentClient, session_id: str):
        self.client = client
        self.session_id = session_id

    def hint(self, tool_start: Optional[dict] = None, workflow_step: Optional[tuple[str, str]] = None) -> dict:
        """The inline `agent` object for a /generate body."""
        hint: dict = {"session_id": self.session_id}
        if tool_start is not None:
            hint["tool_start"] = tool_start
        if workflow_step is not None:
            hint["workflow_step"] = {"workflow_id": workflow_step[0], "agent_id": workflow_step[1]}
        return hint

    def extra_body(self, **kwargs) -> dict:
        """For the OpenAI client: `create(..., extra_body=session.extra_body())`."""
        return {"agent": self.hint(**kwargs)}

    def tool_start(self, tool_name: str, expected_duration_s: Optional[float] = None) -> dict:
        body = {"session_id": self.session_id, "tool_name": tool_name}
        if expected_duration_s is not None:
            body["expected_duration_s"] = expected_duration_s
        return self.client._call("POST", "/agent/tool_start", body)

    def tool_end(self) -> dict:
        return self.client._call("POST", "/agent/tool_end", {"session_id": self.session_id})

    @contextlib.contextmanager
    def tool(self, tool_name: str, expected_duration_s: Optional[float] = None) -> Iterator[dict]:
        """Declare a tool call for its duration; yields the server's answer (the chosen TTL)."""
        answer = self.tool_start(tool_name, expected_duration_s)
        try:
            yield answer
        finally:
            self.tool_end()

    def close(self) -> dict:
        return self.client._call("POST", "/agent/session/close", {"session_id": self.session_id})

    def runtime_endpoint(self, **kwargs):
        """An SGLang frontend backend whose requests belong to this session."""
        return make_runtime_endpoint(self, **kwargs)


def make_runtime_endpoint(session: AgentSession, **kwargs):
    from sglang.lang.backend.runtime_endpoint import RuntimeEndpoint

    class AgentRuntimeEndpoint(RuntimeEndpoint):
        # Every /generate body of RuntimeEndpoint passes through _add_images just before it is
        # sent: the one place to attach the session's hint without copying its request code.
        def _add_images(self, s, data):
            super()._add_images(s, data)
            data["agent"] = session.hint()

    return AgentRuntimeEndpoint(session.client.base_url, **kwargs)
