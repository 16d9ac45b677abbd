"""The trace format: an agent program is an arrival time plus a list of LLM turns.

Each turn appends `append_tokens` to the program's context (the user message or the previous
tool's result), generates `output_tokens`, and then calls `tool_name` for `tool_duration_s`
seconds (no tool after the last turn). A multi-agent workflow program also has
`agent_prefixes` (each agent's fixed prompt, shared by every workflow using that agent) and
names the agent of each turn: that turn's prompt is its agent's prefix + `system_tokens` (the
task) + the transcript so far (every earlier turn's append and output) + its append. Token ids are real ids of the model's tokenizer where
the source has text, so prefixes shared between programs (system prompts, tool schemas) are
shared in the cache exactly as on a server.

A DAG workflow program also has `agent_deps` (agent -> its predecessor agents, acyclic): its
agents run in parallel as their predecessors allow (an agent starts once all its predecessors
finished). Each agent owns a subsequence of `turns` (its turns in order; every one but its last
calls a tool). The prompt of an agent's first turn is its prefix + `system_tokens` + the output
of each predecessor's last turn (in `agent_deps` order) + its append; each later turn extends the
agent's own context (previous prompt + output + append), like a session. `agent_roles` names
each agent's prefix (its role prompt, shared by the instances of one app; default the agent id)
and `critical_path` is an entry-to-sink chain of agents (what the critical-path JCT measures).

On disk: JSON lines, one program per line:
{"program_id": str, "arrival_s": float, "system_tokens": [int], "turns": [{"append_tokens": [int],
 "output_tokens": [int], "tool_name": str | null, "tool_duration_s": float, "agent_id": str | null}],
 "agent_prefixes": {agent: [int]} | null, "agent_deps": {agent: [agent]} | null,
 "critical_path": [agent] | null, "agent_roles": {agent: str} | null}
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterable, Optional


class TraceFormatError(ValueError):
    pass


@dataclass
class Turn:
    append_tokens: list[int]
    output_tokens: list[int]
    tool_name: Optional[str] = None  # None: the program ends after this turn
    tool_duration_s: float = 0.0
    agent_id: Optional[str] = None  # workflow programs: the agent that runs this turn


@dataclass
class Program:
    program_id: str
    arrival_s: float
    system_tokens: list[int]
    turns: list[Turn] = field(default_factory=list)
    agent_prefixes: Optional[dict[str, list[int]]] = None  # workflow programs only
    agent_deps: Optional[dict[str, list[str]]] = None  # DAG workflows: agent -> its predecessors
    critical_path: Optional[list[str]] = None  # DAG workflows: the entry-to-sink chain of most work
    agent_roles: Optional[dict[str, str]] = None  # DAG workflows: agent -> its role prompt's name

    @property
    def is_dag(self) -> bool:
        return self.agent_deps is not None

    def role(self, agent_id: str) -> str:
        return (self.agent_roles or {}).get(agent_id, agent_id)

    def agent_turns(self) -> dict[str, list[int]]:
        """Each agent's turn indices, in order (agents in order of first appearance)."""
        owned: dict[str, list[int]] = {}
        for index, turn in enumerate(self.turns):
            owned.setdefault(turn.agent_id, []).append(index)
        return owned

    def turn_inputs(self) -> list[list[int]]:
        """The full prompt of every turn: the context grows by each output and append."""
        if self.is_dag:
            return self._dag_turn_inputs()
        context = [] if self.agent_prefixes else list(self.system_tokens)
        prompts = []
        for turn in self.turns:
            context = context + turn.append_tokens
            head = self.agent_prefixes[turn.agent_id] + self.system_tokens if self.agent_prefixes else []
            prompts.append(head + context)
            context = context + turn.output_tokens
        return prompts

    def _dag_turn_inputs(self) -> list[list[int]]:
        prompts: list[list[int]] = [[] for _ in self.turns]
        answer: dict[str, list[int]] = {}  # agent -> its last turn's output
        owned = self.agent_turns()
        for agent in self.agent_deps:  # validated acyclic; predecessors are computed on demand
            self._agent_inputs(agent, owned, answer, prompts)
        return prompts

    def _agent_inputs(self, agent: str, owned, answer, prompts) -> None:
        if agent in answer:
            return
        for pred in self.agent_deps[agent]:
            self._agent_inputs(pred, owned, answer, prompts)
        context = self.agent_prefixes[agent] + self.system_tokens + [t for p in self.agent_deps[agent] for t in answer[p]]
        for index in owned[agent]:
            turn = self.turns[index]
            prompts[index] = context + turn.append_tokens
            context = prompts[index] + turn.output_tokens
        answer[agent] = self.turns[owned[agent][-1]].output_tokens

    @property
    def total_tokens(self) -> int:
        return len(self.system_tokens) + sum(len(t.append_tokens) + len(t.output_tokens) for t in self.turns)


def _check_tokens(value, what: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(t, int) and t >= 0 for t in value):
        raise TraceFormatError(f"{what} must be a list of non-negative token ids")
    return value


def program_from_dict(data: dict) -> Program:
    if not isinstance(data, dict):
        raise TraceFormatError("a program must be a JSON object")
    missing = {"program_id", "arrival_s", "system_tokens", "turns"} - set(data)
    if missing:
        raise TraceFormatError(f"missing field(s) {sorted(missing)}")
    arrival = data["arrival_s"]
    if not isinstance(arrival, (int, float)) or arrival < 0:
        raise TraceFormatError("arrival_s must be a number >= 0")
    if not isinstance(data["turns"], list) or not data["turns"]:
        raise TraceFormatError("turns must be a non-empty list")
    turns = []
    for i, raw in enumerate(data["turns"]):
        if not isinstance(raw, dict):
            raise TraceFormatError(f"turn {i} must be an object")
        duration = raw.get("tool_duration_s", 0.0)
        if not isinstance(duration, (int, float)) or duration < 0:
            raise TraceFormatError(f"turn {i}: tool_duration_s must be a number >= 0")
        turns.append(Turn(
            _check_tokens(raw.get("append_tokens"), f"turn {i}: append_tokens"),
            _check_tokens(raw.get("output_tokens"), f"turn {i}: output_tokens"),
            raw.get("tool_name"), float(duration), raw.get("agent_id"),
        ))
    prefixes = data.get("agent_prefixes")
    if prefixes is not None:
        if not isinstance(prefixes, dict):
            raise TraceFormatError("agent_prefixes must map agent ids to token lists")
        prefixes = {a: _check_tokens(t, f"agent_prefixes[{a!r}]") for a, t in prefixes.items()}
        missing = sorted({t.agent_id for t in turns} - set(prefixes), key=str)
        if missing:
            raise TraceFormatError(f"turns name agent(s) {missing} without an agent_prefixes entry")
    program = Program(str(data["program_id"]), float(arrival), _check_tokens(data["system_tokens"], "system_tokens"),
                      turns, prefixes, data.get("agent_deps"), data.get("critical_path"), data.get("agent_roles"))
    if program.agent_deps is not None or program.critical_path is not None or program.agent_roles is not None:
        _check_dag(program)
    return program


def _check_dag(program: Program) -> None:
    """A DAG program's agents, edges, turn subsequences and critical path agree with each other."""
    deps = program.agent_deps
    if deps is None:
        raise TraceFormatError("critical_path and agent_roles need agent_deps")
    if not isinstance(deps, dict) or not all(
            isinstance(a, str) and isinstance(p, list) and all(isinstance(x, str) for x in p) for a, p in deps.items()):
        raise TraceFormatError("agent_deps must map agent ids to lists of agent ids")
    if program.agent_prefixes is None:
        raise TraceFormatError("agent_deps needs agent_prefixes (each agent's role prompt)")
    owned = program.agent_turns()
    if None in owned:
        raise TraceFormatError("every turn of a DAG program needs an agent_id")
    unknown = sorted(set(owned) - set(deps))
    if unknown:
        raise TraceFormatError(f"turns name agent(s) {unknown} without an agent_deps entry")
    idle = sorted(set(deps) - set(owned))
    if idle:
        raise TraceFormatError(f"agent_deps names agent(s) {idle} that run no turn")
    for agent, preds in deps.items():
        bad = sorted(set(preds) - set(deps))
        if bad:
            raise TraceFormatError(f"agent_deps[{agent!r}] names unknown agent(s) {bad}")
        if len(set(preds)) != len(preds):
            raise TraceFormatError(f"agent_deps[{agent!r}] repeats a predecessor")
    _check_acyclic(deps)
    for agent, indices in owned.items():
        # An agent ends at its turn without a tool call: only its last turn may have none.
        if any(program.turns[i].tool_name is None for i in indices[:-1]) or program.turns[indices[-1]].tool_name is not None:
            raise TraceFormatError(f"agent {agent!r}: every turn but its last must call a tool, and its last none")
    path = program.critical_path
    if path is not None:
        if not isinstance(path, list) or not path or not all(isinstance(a, str) and a in deps for a in path):
            raise TraceFormatError("critical_path must be a non-empty list of the program's agents")
        if deps[path[0]] or any(path[i] not in deps[path[i + 1]] for i in range(len(path) - 1)):
            raise TraceFormatError("critical_path must be a chain of agent_deps edges starting at an entry agent")
    roles = program.agent_roles
    if roles is not None:
        if not isinstance(roles, dict) or not all(isinstance(r, str) for r in roles.values()):
            raise TraceFormatError("agent_roles must map agent ids to role names")
        bad = sorted(set(roles) - set(deps))
        if bad:
            raise TraceFormatError(f"agent_roles names unknown agent(s) {bad}")


def _check_acyclic(deps: dict[str, list[str]]) -> None:
    """Kahn's algorithm: agents left over sit on a cycle."""
    waiting = {a: len(p) for a, p in deps.items()}
    successors: dict[str, list[str]] = {a: [] for a in deps}
    for agent, preds in deps.items():
        for pred in preds:
            successors[pred].append(agent)
    ready = [a for a, n in waiting.items() if n == 0]
    while ready:
        for nxt in successors[ready.pop()]:
            waiting[nxt] -= 1
            if waiting[nxt] == 0:
                ready.append(nxt)
    cycle = sorted(a for a, n in waiting.items() if n > 0)
    if cycle:
        raise TraceFormatError(f"agent_deps has a cycle through {cycle}")


def load_programs(path: str | Path) -> list[Program]:
    programs = []
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                programs.append(program_from_dict(json.loads(line)))
            except (json.JSONDecodeError, TraceFormatError) as e:
                raise TraceFormatError(f"{path}:{line_no}: {e}") from None
    return programs


def save_programs(programs: Iterable[Program], path: str | Path) -> None:
    with open(path, "w") as f:
        for program in programs:
            f.write(json.dumps(asdict(program)) + "\n")


def with_poisson_arrivals(programs: list[Program], rate_per_s: float, seed: int) -> list[Program]:
    """Programs arriving as a Poisson process of `rate_per_s` (the papers' load axis)."""
    import random

    rnd = random.Random(seed)
    now = 0.0
    out = []
    for program in programs:
        now += rnd.expovariate(rate_per_s)
        out.append(replace(program, arrival_s=now))  # every other field as it was (DAG fields too)
    return out
