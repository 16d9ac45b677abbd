"""Synthetic coding-agent programs (SWE-agent / OpenHands-like): one long shared system prompt,
dozens of turns, each a thought + command followed by a tool observation, so the context grows
to tens of thousands of tokens.

Numbers (all log-normal unless said; each an assumption of this generator, chosen to match the
shape, not the exact statistics, of the published agents):
- system prompt + demonstration: 3,000 tokens, shared by all programs (SWE-agent ships a long
  system prompt with a demonstration trajectory; assumption on the size);
- turns per program: median 25, clipped to [5, 80] (SWE-agent trajectories run tens of steps;
  assumption on the median);
- output per turn: median 150 tokens (a thought and one command);
- observation per turn: median 400 tokens, clipped to [10, 8,000] (file views and test logs);
- tool duration: median 2 s, sigma 1.2, clipped to [50 ms, 120 s] (bash and test runs; within
  the milliseconds-to-tens-of-seconds range Continuum, arXiv 2511.02230, reports).
Token ids are random and unique per program except the shared system prompt: only prefix
equality matters to the cache.
"""

from __future__ import annotations

import random

from eval.traces.format import Program, Turn
from eval.traces.sampling import lognormal

VOCAB = 128_000



def _tokens(rnd: random.Random, n: int) -> list[int]:
    return [rnd.randrange(VOCAB) for _ in range(int(n))]


def coding_agent_programs(
    count: int,
    seed: int = 0,
    system_tokens: int = 3000,
    turns_median: float = 25,
    output_median: float = 150,
    observation_median: float = 400,
    tool_median_s: float = 2.0,
) -> list[Program]:
    system = _tokens(random.Random(f"{seed}/system"), system_tokens)
    programs = []
    for i in range(count):
        rnd = random.Random(f"{seed}/{i}")
        n_turns = int(lognormal(rnd, turns_median, 0.5, 5, 80))
        turns = []
        append = _tokens(rnd, lognormal(rnd, 300, 0.5, 50, 2000))  # the issue statement
        for t in range(n_turns):
            last = t == n_turns - 1
            turns.append(Turn(append, _tokens(rnd, lognormal(rnd, output_median, 0.6, 10, 2000)),
                              None if last else "bash",
                              0.0 if last else lognormal(rnd, tool_median_s, 1.2, 0.05, 120.0)))
            append = _tokens(rnd, lognormal(rnd, observation_median, 1.0, 10, 8000))
        programs.append(Program(f"coding-{seed}-{i}", 0.0, system, turns))
    return programs


def multi_agent_workflows(
    count: int,
    seed: int = 0,
    agent_types: int = 24,
    agents_per_workflow: int = 4,
    rounds: int = 3,
    prefix_tokens: int = 6000,
    task_tokens: int = 500,
    output_median: float = 200,
    result_median: float = 100,
    tool_median_s: float = 1.0,
) -> list[Program]:
    """Multi-agent workflows (KVFlow's setting): `agent_types` agents, each with a long fixed
    prompt shared by every workflow that uses it; a workflow runs its `agents_per_workflow`
    agents in a loop for `rounds` rounds over a shared transcript, with a tool call between
    steps. All sizes are assumptions of this generator."""
    rnd = random.Random(f"{seed}/agents")
    prefixes = {f"agent{a}": _tokens(rnd, prefix_tokens) for a in range(agent_types)}
    programs = []
    for i in range(count):
        rnd = random.Random(f"{seed}/workflow/{i}")
        agents = rnd.sample(sorted(prefixes), agents_per_workflow)
        schedule = agents * rounds
        turns = []
        for step, agent in enumerate(schedule):
            last = step == len(schedule) - 1
            append = _tokens(rnd, lognormal(rnd, result_median, 0.8, 5, 2000)) if step else []
            turns.append(Turn(append, _tokens(rnd, lognormal(rnd, output_median, 0.6, 10, 2000)),
                              None if last else "tool", 0.0 if last else lognormal(rnd, tool_median_s, 1.0, 0.05, 60.0),
                              agent))
        used = {a: prefixes[a] for a in agents}
        programs.append(Program(f"workflow-{seed}-{i}", 0.0, _tokens(rnd, task_tokens), turns, used))
    return programs
