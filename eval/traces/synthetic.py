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

Also multi-agent workflows: sequential ones (multi_agent_workflows, KVFlow's setting) and DAG
ones whose agents run in parallel (dag_workflows, fan-out/fan-in; tokencake_dag, the DAG of
TokenCake's experiment), each with its own stated sizes.
"""

from __future__ import annotations

import random
from typing import Optional

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


# ---- DAG workflows ----------------------------------------------------------------------------
NOMINAL_DECODE_S_PER_TOKEN = 0.02  # only to rank chains for the critical path, not a cost model


def heaviest_chain(program: Program, decode_s_per_token: float = NOMINAL_DECODE_S_PER_TOKEN) -> list[str]:
    """The entry-to-sink chain of agents with the largest expected work: the sum over its agents
    of their tool seconds + output tokens x a nominal decode time (ties: the first agent listed)."""
    work = {agent: 0.0 for agent in program.agent_deps}
    for turn in program.turns:
        work[turn.agent_id] += turn.tool_duration_s + len(turn.output_tokens) * decode_s_per_token
    best: dict[str, tuple[float, list[str]]] = {}
    for agent in _topological(program.agent_deps):
        preds = [best[p] for p in program.agent_deps[agent]]
        before = max(preds, key=lambda b: b[0]) if preds else (0.0, [])  # max keeps the first of ties
        best[agent] = (before[0] + work[agent], before[1] + [agent])
    sinks = [a for a in program.agent_deps if not any(a in preds for preds in program.agent_deps.values())]
    return max((best[a] for a in sinks), key=lambda b: b[0])[1]


def _topological(deps: dict[str, list[str]]) -> list[str]:
    order: list[str] = []
    placed: set[str] = set()
    while len(order) < len(deps):
        for agent, preds in deps.items():
            if agent not in placed and all(p in placed for p in preds):
                order.append(agent)
                placed.add(agent)
    return order


def dag_workflows(
    count: int,
    seed: int = 0,
    apps: int = 4,
    max_workers: int = 4,
    role_prompt_median: float = 2500,
    task_median: float = 600,
    output_median: float = 250,
    result_median: float = 300,
    worker_turns_median: float = 3,
    tool_median_s: float = 2.0,
) -> list[Program]:
    """Fan-out/fan-in workflows: planner -> N parallel workers -> reviewer -> writer.

    Every size is an assumption of this generator (log-normal draws clipped as noted):
    - `apps` apps, alternately research apps (workers researcher_1..4, tool "search") and coding
      apps (coder_1..4, tool "bash"); each app has its own role prompts for planner, its
      `max_workers` workers, reviewer and writer, median 2,500 tokens (sigma 0.3, [1,000, 6,000]),
      shared by every instance of that app (4 apps: 28 role prompts, ~70k tokens);
    - an instance picks its app uniformly and N workers uniformly from 2..`max_workers`; its task
      text: median 600 tokens (sigma 0.5, [100, 3,000]);
    - turns per agent: planner 1-2, each worker median 3 (sigma 0.6, [1, 10]), so the parallel
      branches have different lengths, reviewer 1-2, writer 1; a tool call between an agent's
      turns, median 2 s (sigma 1.0, [0.1 s, 60 s]), its result appended to the agent's context:
      median 300 tokens (sigma 1.0, [10, 4,000]); output per turn median 250 tokens (sigma 0.6,
      [20, 1,500]);
    - an agent's first prompt: its role prompt + the task + the last output of each predecessor.
    `critical_path` is the heaviest entry-to-sink chain (heaviest_chain)."""
    rnd = random.Random(f"{seed}/dag-roles")
    kinds = [("research", "researcher", "search"), ("coding", "coder", "bash")]
    role_prompts: dict[str, list[int]] = {}
    app_names = []
    for a in range(apps):
        kind, worker, _ = kinds[a % len(kinds)]
        app = f"{kind}{a // len(kinds)}"
        app_names.append((app, worker, kinds[a % len(kinds)][2]))
        for role in ("planner", *(f"{worker}_{k}" for k in range(1, max_workers + 1)), "reviewer", "writer"):
            role_prompts[f"{app}/{role}"] = _tokens(rnd, lognormal(rnd, role_prompt_median, 0.3, 1000, 6000))
    programs = []
    for i in range(count):
        rnd = random.Random(f"{seed}/dag/{i}")
        app, worker, worker_tool = rnd.choice(app_names)
        workers = [f"{worker}_{k}" for k in range(1, rnd.randint(2, max_workers) + 1)]
        deps = {"planner": [], **{w: ["planner"] for w in workers}, "reviewer": list(workers), "writer": ["reviewer"]}
        lengths = {"planner": rnd.randint(1, 2), "reviewer": rnd.randint(1, 2), "writer": 1,
                   **{w: int(lognormal(rnd, worker_turns_median, 0.6, 1, 10)) for w in workers}}
        tools = {"planner": "lookup", "reviewer": "check", **{w: worker_tool for w in workers}}
        turns = []
        for agent in deps:
            for t in range(lengths[agent]):
                last = t == lengths[agent] - 1
                append = _tokens(rnd, lognormal(rnd, result_median, 1.0, 10, 4000)) if t else []
                turns.append(Turn(append, _tokens(rnd, lognormal(rnd, output_median, 0.6, 20, 1500)),
                                  None if last else tools[agent],
                                  0.0 if last else lognormal(rnd, tool_median_s, 1.0, 0.1, 60.0), agent))
        program = Program(f"dag-{seed}-{i}", 0.0, _tokens(rnd, lognormal(rnd, task_median, 0.5, 100, 3000)), turns,
                          {a: role_prompts[f"{app}/{a}"] for a in deps}, deps,
                          agent_roles={a: f"{app}/{a}" for a in deps})
        program.critical_path = heaviest_chain(program)
        programs.append(program)
    return programs


# TokenCake's experiment DAG (pku-lemonade/TokenCake, tools/tokencake_experiments/datasets/
# conversation-tools.json): its LLM nodes grouped into agents (a branch of consecutive nodes is
# one agent, as its append-only conversation is one context). Per node: (max_tokens, the tool
# that runs after it, its seconds); None: no tool.
_TC_PLANNER = [(200, None, 0.0), (128, "search", 4.0), (128, "conditional_execution", 0.4),  # architect_1, search_1, judger_1
               (200, None, 0.0), (128, "search", 4.0), (128, "conditional_execution", 0.4),  # architect_2, search_2, judger_2
               (128, "file_write", 0.1)]  # file_write_plan
_TC_PROGRAMMER = [(400, "branch_patch_validation", 8.0), (400, None, 0.0), (128, "file_write", 0.1)]
_TC_REVISER = [(400, "branch_patch_validation", 10.0), (400, None, 0.0), (128, "file_write", 0.1)]
_TC_VERIFIER = [(128, "external_tool_eval", 4.5), (128, "user_confirm", 3.5), (128, "test", 5.5)]
TOKENCAKE_AGENTS: dict[str, tuple[list[str], list[tuple[int, Optional[str], float]]]] = {
    "planner": ([], _TC_PLANNER),
    **{f"programmer_{k}": (["planner"], _TC_PROGRAMMER) for k in (1, 2, 3)},
    **{f"reviewer_{k}": (["programmer_1", "programmer_2", "programmer_3"], [(200, None, 0.0)]) for k in (1, 2)},
    **{f"reviser_{k}": (["reviewer_1", "reviewer_2"], _TC_REVISER) for k in (1, 2)},
    "verifier": (["reviewer_2"], _TC_VERIFIER),  # external_eval -> user_confirm -> test_node
}
# TokenCake marks branch 1 of each fan-out critical; as one entry-to-sink chain:
TOKENCAKE_CRITICAL_PATH = ["planner", "programmer_1", "reviewer_1", "reviser_1"]


def tokencake_dag(
    count: int,
    seed: int = 0,
    app_prompt_tokens: int = 480,
    template_tokens: int = 30,
    task_tokens: int = 4600,
    tool_result_tokens: int = 150,
) -> list[Program]:
    """`count` instances of the DAG of TokenCake's own experiment, each with its own task.

    From TokenCake's description (conversation-tools.json): 29 nodes, 27 of them LLM calls, depth
    17: a planning chain architect -> search (4 s) -> judger (0.4 s), twice, -> file_write_plan; a
    fan-out of 3 programmer branches (validate 8 s -> repair -> code_write); 2 reviewers joining
    all three; 2 reviser branches joining both reviewers (validate 10 s -> repair ->
    revised_code_write); an external_eval (4.5 s) -> user_confirm (3.5 s) -> test_node chain after
    reviewer 2; max_tokens 128-400 per node, every node generating its whole budget (6,464
    output tokens per DAG); successors get their predecessors' text in declared order; branch 1
    of each fan-out marked critical; a task's context ~4,600 tokens (context_token_count).

    Ours: the nodes of one branch are one agent's turns (9 agents: planner, programmer_1..3,
    reviewer_1..2, reviser_1..2, verifier); a node without a tool hands over to the next one of
    its branch with a 0 s "continue"; the tool after an agent's last node (file writes 0.1 s,
    test_node 5.5 s) has no LLM call after it in the branch and is left out (TokenCake's end node
    collects it without one); the application prompt (~480 tokens, from its ~2,150 characters) is
    every agent's prefix and each node's role template (~30 tokens) its turn's append, after the
    task, as in TokenCake's conversation layout, so the role name is the template's and the role
    prefix is the shared application prompt; a tool's result: 150 tokens; a successor sees only
    its predecessors' last outputs, not their whole conversations; the critical path is
    TokenCake's branch-1 marking, which is also the heaviest chain (its verification branch is
    marked too, but hangs off reviewer 2 and is not on one chain with the rest)."""
    rnd = random.Random(f"{seed}/tokencake-prompts")
    app_prompt = _tokens(rnd, app_prompt_tokens)
    templates = {(agent, n): _tokens(rnd, template_tokens)
                 for agent, (_, nodes) in TOKENCAKE_AGENTS.items() for n in range(len(nodes))}
    deps = {agent: list(preds) for agent, (preds, _) in TOKENCAKE_AGENTS.items()}
    programs = []
    for i in range(count):
        rnd = random.Random(f"{seed}/tokencake/{i}")
        turns = []
        for agent, (_, nodes) in TOKENCAKE_AGENTS.items():
            result: list[int] = []
            for n, (max_tokens, tool, seconds) in enumerate(nodes):
                last = n == len(nodes) - 1
                turns.append(Turn(result + templates[(agent, n)], _tokens(rnd, max_tokens),
                                  None if last else (tool or "continue"), 0.0 if last else seconds, agent))
                result = _tokens(rnd, tool_result_tokens) if tool else []
        programs.append(Program(f"tokencake-{seed}-{i}", 0.0, _tokens(rnd, task_tokens), turns,
                                {a: app_prompt for a in deps}, {a: list(p) for a, p in deps.items()},
                                list(TOKENCAKE_CRITICAL_PATH), {a: f"tokencake/{a}" for a in deps}))
    return programs


def kvflow_chains(
    count: int,
    seed: int = 0,
    agents: int = 10,
    rounds: int = 4,
    fixed_prompt_tokens: int = 8192,
    dynamic_tokens: int = 32,
    output_tokens: int = 32,
    shared_agents: bool = True,
) -> list[Program]:
    """KVFlow's microbenchmark workflows (arXiv 2507.07400, Sec. 4.1-4.2, as the project's notes
    read them): `agents` agents run one after another, each request its agent's fixed prompt +
    a `dynamic_tokens` dynamic part, generating `output_tokens`, no tool time. Sizes are the
    paper's; the rest are assumptions of this generator:
    - the dynamic part is the previous agent's output (`output_tokens`; the very first step's: a
      fresh `dynamic_tokens`-token task), so with both 32, as in the paper, every prompt is
      exactly fixed + 32;
    - each of the `count` programs runs `rounds` instances of the workflow back to back (the next
      starts when the previous ends: one workflow at a time per program, a closed loop), as one
      DAG chain of agents*rounds steps whose roles repeat: the agent's fixed prompt is its role
      prompt, shared by every instance (and by every program when `shared_agents`; otherwise
      each program has its own `agents` fixed prompts);
    - every step is a fresh agent session (a new request), so what an instance can reuse is its
      agent's fixed prompt, as in KVFlow's setting."""
    rnd = random.Random(f"{seed}/kvflow-prompts")
    shared = {f"agent{k}": _tokens(rnd, fixed_prompt_tokens) for k in range(agents)} if shared_agents else None
    programs = []
    for i in range(count):
        rnd = random.Random(f"{seed}/kvflow/{i}")
        roles = ({f"agent{k}": f"agent{k}" for k in range(agents)} if shared_agents else
                 {f"agent{k}": f"w{i}/agent{k}" for k in range(agents)})
        prompts = shared if shared_agents else {roles[a]: _tokens(rnd, fixed_prompt_tokens) for a in roles}
        steps = [(r, k) for r in range(rounds) for k in range(agents)]
        names = [f"r{r}/agent{k}" for r, k in steps]
        turns = [Turn(_tokens(rnd, dynamic_tokens) if n == 0 else [], _tokens(rnd, output_tokens), None, 0.0, name)
                 for n, name in enumerate(names)]
        deps = {name: ([names[n - 1]] if n else []) for n, name in enumerate(names)}
        agent_roles = {name: roles[f"agent{k}"] for name, (_, k) in zip(names, steps)}
        programs.append(Program(f"kvflow-{seed}-{i}", 0.0, [], turns, {a: prompts[agent_roles[a]] for a in names}, deps,
                                list(names), agent_roles))
    return programs
