"""Hint payloads: parsing and validation (pure). A bad hint raises HintError, which the HTTP
layer turns into a 4xx with a JSON reason before anything reaches the scheduler.

Also the checks our server makes on inference bodies before SGLang sees them
(`check_inference_body`): malformed `n`, batches carrying an `agent` object, and the limits
on what one hint may make the scheduler hold (`MAX_WORKFLOW_*`: 413 above them)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Optional

MAX_ID_CHARS = 256
# A declared tool duration beyond a day is a client bug, not a plan.
MAX_DECLARED_DURATION_S = 86_400.0
# What one workflow declaration may hold in the scheduler (documented in the README; 413 above).
# The steps computation is O(agents + edges) per step, on the scheduler thread.
MAX_WORKFLOW_AGENTS = 1024
MAX_WORKFLOW_EDGES = 16_384
MAX_WORKFLOW_SCHEDULE = 16_384
# Bodies of /agent/* routes and JSON nesting of inference bodies our middleware parses.
MAX_HINT_BODY_BYTES = 1 << 20
MAX_JSON_DEPTH = 64


class HintError(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason

    def to_body(self) -> dict:
        return {"error": self.reason, "status": self.status}


@dataclass(frozen=True)
class ToolStart:
    session_id: str
    tool_name: str
    expected_duration_s: Optional[float] = None
    ttl_s: Optional[float] = None  # pin exactly this long (cache_control): no TTL policy
    detected: bool = False  # the server recognised the call in the turn's output (no client hint)


@dataclass(frozen=True)
class SessionRef:
    session_id: str


@dataclass(frozen=True)
class WorkflowStep:
    workflow_id: str
    agent_id: str
    # An undeclared workflow's steps teach the server its graph: the agent's session (inline hints:
    # the request's) and its role (the fixed prompt instances share; default the agent id).
    session_id: Optional[str] = None
    role: Optional[str] = None


@dataclass(frozen=True)
class WorkflowAgent:
    agent_id: str
    session_id: str  # the session whose cached turns are this agent's prefix
    role: Optional[str] = None  # the agent's fixed prompt, shared by workflow instances (default: agent_id)


@dataclass(frozen=True)
class WorkflowDef:
    workflow_id: str
    agents: tuple[WorkflowAgent, ...]
    edges: Optional[tuple[tuple[str, str], ...]] = None
    schedule: Optional[tuple[str, ...]] = None
    dag: bool = False


@dataclass(frozen=True)
class InlineAgentHint:
    """The `agent` object of a /generate or /v1/chat/completions body."""

    session_id: str
    tool_start: Optional[ToolStart] = None  # this turn ends in a tool call
    workflow_step: Optional[WorkflowStep] = None  # this request is that agent's step
    close_after_turn: bool = False  # the session ends with this turn (Continuum's is_last_step)


def _require_object(body: Any, where: str) -> dict:
    if not isinstance(body, dict):
        raise HintError(400, f"{where} must be a JSON object")
    return body


def _check_keys(body: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise HintError(400, f"{where}: unknown field(s) {unknown}; allowed {sorted(allowed)}")


def _identifier(body: dict, key: str, where: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        raise HintError(400, f"{where}: '{key}' must be a non-empty string")
    if len(value) > MAX_ID_CHARS:
        raise HintError(400, f"{where}: '{key}' is longer than {MAX_ID_CHARS} characters")
    return value


def _duration(body: dict, key: str, where: str) -> Optional[float]:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise HintError(400, f"{where}: '{key}' must be a number of seconds")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise HintError(400, f"{where}: '{key}' must be finite and >= 0, got {value}")
    if value > MAX_DECLARED_DURATION_S:
        raise HintError(400, f"{where}: '{key}' = {value} s is beyond {MAX_DECLARED_DURATION_S:.0f} s")
    return value


MAX_FIXED_TTL_S = 3600.0


def parse_tool_start(body: Any, where: str = "tool_start") -> ToolStart:
    body = _require_object(body, where)
    _check_keys(body, {"session_id", "tool_name", "expected_duration_s", "ttl_s"}, where)
    ttl = _duration(body, "ttl_s", where)
    if ttl is not None and not 0 < ttl <= MAX_FIXED_TTL_S:
        raise HintError(400, f"{where}: 'ttl_s' must be in (0, {MAX_FIXED_TTL_S:.0f}] seconds, got {ttl}")
    return ToolStart(
        session_id=_identifier(body, "session_id", where),
        tool_name=_identifier(body, "tool_name", where),
        expected_duration_s=_duration(body, "expected_duration_s", where),
        ttl_s=ttl,
    )


def parse_turn_outcome(body: Any) -> tuple[list[str], Optional[float], bool]:
    """What the HTTP layer saw in a finished turn's answer (server-internal; tools called, a
    cache_control TTL to pin for, close the session)."""
    where = "turn_outcome"
    body = _require_object(body, where)
    _check_keys(body, {"tools", "cache_ttl_s", "close", "session_id"}, where)
    tools = body.get("tools") or []
    if not isinstance(tools, list) or not all(isinstance(t, str) and len(t) <= MAX_ID_CHARS for t in tools):
        raise HintError(400, f"{where}: 'tools' must be a list of tool names")
    ttl = _duration(body, "cache_ttl_s", where)
    close = body.get("close", False)
    if not isinstance(close, bool):
        raise HintError(400, f"{where}: 'close' must be true or false")
    return tools, ttl, close


def parse_session_ref(body: Any, where: str) -> SessionRef:
    body = _require_object(body, where)
    _check_keys(body, {"session_id"}, where)
    return SessionRef(_identifier(body, "session_id", where))


def parse_inline(body: Any) -> InlineAgentHint:
    where = "agent"
    body = _require_object(body, where)
    _check_keys(body, {"session_id", "tool_start", "workflow_step", "close_after_turn"}, where)
    session_id = _identifier(body, "session_id", where)
    tool_start = step = None
    if body.get("tool_start") is not None:
        raw = _require_object(body["tool_start"], "agent.tool_start")
        tool_start = parse_tool_start({**raw, "session_id": session_id}, "agent.tool_start")
    if body.get("workflow_step") is not None:
        step = parse_workflow_step(body["workflow_step"], "agent.workflow_step")
        if step.session_id not in (None, session_id):
            raise HintError(400, "agent.workflow_step: 'session_id' is the request's session; leave it out")
        step = dataclasses.replace(step, session_id=session_id)
    close = body.get("close_after_turn", False)
    if not isinstance(close, bool):
        raise HintError(400, f"{where}: 'close_after_turn' must be true or false")
    return InlineAgentHint(session_id, tool_start, step, close)


def parse_workflow_step(body: Any, where: str = "workflow/step") -> WorkflowStep:
    body = _require_object(body, where)
    _check_keys(body, {"workflow_id", "agent_id", "session_id", "role"}, where)
    optional = {k: _identifier(body, k, where) if body.get(k) is not None else None for k in ("session_id", "role")}
    return WorkflowStep(_identifier(body, "workflow_id", where), _identifier(body, "agent_id", where), **optional)


def _id_list(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise HintError(400, f"{where} must be a list of non-empty strings")
    return value


def parse_workflow(body: Any) -> WorkflowDef:
    where = "workflow"
    body = _require_object(body, where)
    _check_keys(body, {"workflow_id", "agents", "edges", "schedule", "dag"}, where)
    workflow_id = _identifier(body, "workflow_id", where)
    raw_agents = body.get("agents")
    if not isinstance(raw_agents, list) or not raw_agents:
        raise HintError(400, "workflow: 'agents' must be a non-empty list")
    if len(raw_agents) > MAX_WORKFLOW_AGENTS:
        raise HintError(413, f"workflow: {len(raw_agents)} agents is more than the limit of {MAX_WORKFLOW_AGENTS}")
    agents = []
    for i, raw in enumerate(raw_agents):
        raw = _require_object(raw, f"workflow.agents[{i}]")
        _check_keys(raw, {"agent_id", "session_id", "role"}, f"workflow.agents[{i}]")
        agent_id = _identifier(raw, "agent_id", f"workflow.agents[{i}]")
        session_id = _identifier(raw, "session_id", f"workflow.agents[{i}]") if "session_id" in raw else (
            f"{workflow_id}/{agent_id}")
        role = _identifier(raw, "role", f"workflow.agents[{i}]") if "role" in raw else None
        agents.append(WorkflowAgent(agent_id, session_id, role))
    if ("edges" in body) == ("schedule" in body):
        raise HintError(400, "workflow: give exactly one of 'edges' or 'schedule'")
    dag = body.get("dag", False)
    if not isinstance(dag, bool):
        raise HintError(400, "workflow: 'dag' must be true or false")
    edges = schedule = None
    if "edges" in body:
        raw_edges = body["edges"]
        if not isinstance(raw_edges, list) or not all(
            isinstance(e, list) and len(e) == 2 and all(isinstance(x, str) for x in e) for e in raw_edges
        ):
            raise HintError(400, "workflow: 'edges' must be a list of [from_agent, to_agent] pairs")
        if len(raw_edges) > MAX_WORKFLOW_EDGES:
            raise HintError(413, f"workflow: {len(raw_edges)} edges is more than the limit of {MAX_WORKFLOW_EDGES}")
        edges = tuple((a, b) for a, b in raw_edges)
    else:
        schedule = tuple(_id_list(body["schedule"], "workflow: 'schedule'"))
        if len(schedule) > MAX_WORKFLOW_SCHEDULE:
            raise HintError(413, f"workflow: a schedule of {len(schedule)} steps is more than the limit of "
                                 f"{MAX_WORKFLOW_SCHEDULE}")
    return WorkflowDef(workflow_id, tuple(agents), edges, schedule, dag)


# ---- inference bodies ---------------------------------------------------------------------------
def json_depth_exceeds(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether `value` nests deeper than `limit` (iterative: no recursion to blow)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


def _count(value: Any, where: str) -> int:
    """`n` (and sampling_params.n): a positive integer or absent, nothing else."""
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int):
        raise HintError(400, f"'{where}' must be a positive integer, got {type(value).__name__}")
    if not 1 <= value <= 128:
        raise HintError(400, f"'{where}' must be between 1 and 128, got {value}")
    return value


def _is_batch_prompt(value: Any) -> bool:
    """A list of prompts (strings or token lists); a flat list of token ids is one prompt."""
    return isinstance(value, list) and bool(value) and not all(isinstance(v, int) and not isinstance(v, bool) for v in value)


def check_inference_body(path: str, payload: dict, with_agent: bool) -> bool:
    """What our server refuses in a /generate, /v1/chat/completions or /v1/completions body
    before SGLang sees it (400): `n` that is not a positive integer; with an `agent` object,
    anything that makes more than one request (batches, n > 1), since a hint describes one.
    Returns whether the body is one request (what a hint, or a turn the server reads, describes)."""
    sampling = payload.get("sampling_params")
    n = _count(payload.get("n"), "n")
    if isinstance(sampling, dict):
        n = max(n, _count(sampling.get("n"), "sampling_params.n"))
    if path == "/generate":
        batch = _is_batch_prompt(payload.get("text")) or _is_batch_prompt(payload.get("input_ids")) or isinstance(
            sampling, list)
    elif path == "/v1/completions":
        batch = _is_batch_prompt(payload.get("prompt"))
    else:
        batch = False
    if with_agent and batch:
        raise HintError(400, "agent hints apply to a single request, not a batch")
    if with_agent and n != 1:
        raise HintError(400, "agent hints apply to a single completion (n=1)")
    return not batch and n == 1
