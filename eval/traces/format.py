"""The trace format: an agent program is an arrival time plus a list of LLM turns.

Each turn appends `append_tokens` to the program's context (the user message or the previous
tool's result), generates `output_tokens`, and then calls `tool_name` for `tool_duration_s`
seconds (no tool after the last turn). A multi-agent workflow program also has
`agent_prefixes` (each agent's fixed prompt, shared by every workflow using that agent) and
names the agent of each turn: that turn's prompt is its agent's prefix + `system_tokens` (the
task) + the transcript so far (every earlier turn's append and output) + its append. Token ids are real ids of the model's tokenizer where
the source has text, so prefixes shared between programs (system prompts, tool schemas) are
shared in the cache exactly as on a server.

On disk: JSON lines, one program per line:
{"program_id": str, "arrival_s": float, "system_tokens": [int], "turns": [{"append_tokens": [int],
 "output_tokens": [int], "tool_name": str | null, "tool_duration_s": float}]}
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
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

    def turn_inputs(self) -> list[list[int]]:
        """The full prompt of every turn: the context grows by each output and append."""
        context = [] if self.agent_prefixes else list(self.system_tokens)
        prompts = []
        for turn in self.turns:
            context = context + turn.append_tokens
            head = self.agent_prefixes[turn.agent_id] + self.system_tokens if self.agent_prefixes else []
            prompts.append(head + context)
            context = context + turn.output_tokens
        return prompts

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
    return Program(str(data["program_id"]), float(arrival), _check_tokens(data["system_tokens"], "system_tokens"),
                   turns, prefixes)


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
        out.append(Program(program.program_id, now, program.system_tokens, program.turns, program.agent_prefixes))
    return out
