"""Discrete-event simulation of one SGLang instance serving agent programs.

The engine owns time, the waiting queue and continuous batching; every cache decision (prefix
match, eviction order, TTL pins) is made by the real AgentRadixCache and AgentController on the
simulated clock, the same objects the server uses.

An iteration admits waiting requests in policy order (up to the prefill token budget and while
KV slots can be found, evicting through the cache), then runs their prefill and one decode step
of every running request; its duration comes from the cost model. A request reserves slots for
its uncached prompt and its whole output at admission, like SGLang's reservation.

DAG workflow programs (`Program.agent_deps`) run their agents truly in parallel: the entry
agents' first turns arrive with the program, an agent's next turn arrives its tool's duration
after its previous turn finished, and an agent whose predecessors have all finished gets its
first turn at once (AND-join). The workflow hints they send follow the policy's
`workflow_hints`: a declared graph, steps the controller learns the graph from, or none.
"""

from __future__ import annotations

import heapq
import itertools
from array import array
from dataclasses import dataclass, field
from typing import Optional, Protocol

import torch
from sglang.srt.mem_cache.base_prefix_cache import EvictParams, InsertParams, MatchPrefixParams
from sglang.srt.mem_cache.radix_cache import RadixKey

from eval.sim.cost_model import CostModel
from eval.sim.hicache import SimHiCache
from eval.sim.hicache_tier import SimHiCacheTier
from eval.sim.host_tier import SimHostTier
from eval.sim.layerwise import prefill_end_s
from eval.sim.link import HostLinks, Transfer
from eval.sim.memory_use import running_kv_tokens
from eval.sim.policies import PolicySpec, infercept_preserve
from eval.traces.format import Program
from sglang_agent import upstream
from sglang_agent.backend import build_backend
from sglang_agent.config import AgentServerArgs
from sglang_agent.controller.workflows import ROLE_PREFIX
from sglang_agent.controller import LoadSnapshot
from sglang_agent.hints import InlineAgentHint, ToolStart, WorkflowAgent, WorkflowDef, WorkflowStep
from sglang_agent.policy.clock import StepClock
from sglang_agent.policy.ttl import DECLARED_DURATION_SLACK


@dataclass
class TurnRecord:
    program_id: str
    turn: int
    arrival_s: float
    admitted_s: float = -1.0
    first_token_s: float = -1.0
    finish_s: float = -1.0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    previous_context_tokens: int = 0  # KV the previous turn left: its prompt + output minus the last token
    gpu_cached_tokens: int = 0  # of cached_tokens, found in the GPU tree (the rest was reloaded from host)
    agent_id: Optional[str] = None  # workflow programs
    # DAG programs, an agent's first turn: its role and its role prompt's length (role-prefix hits).
    role: Optional[str] = None
    role_prefix_tokens: int = 0


@dataclass
class ProgramResult:
    program_id: str
    arrival_s: float
    finish_s: float
    turns: list[TurnRecord]
    critical_path: Optional[list[str]] = None  # DAG programs

    @property
    def jct_s(self) -> float:
        return self.finish_s - self.arrival_s


@dataclass
class _Request:
    rid: str
    program_index: int
    turn: int
    key: array
    output_tokens: array
    record: TurnRecord
    node: int = 0
    gpu_cached: int = 0  # prefix found in the GPU tree (the rest of record.cached_tokens was reloaded)
    loads: list[Transfer] = field(default_factory=list)  # its prefix coming back from host (layer-wise)
    lock: object = None
    slots: Optional[torch.Tensor] = None
    produced: int = 0


@dataclass
class _ProgramState:
    program: Program
    context: array  # the program's tokens so far (prompt and output of its finished turns)
    transcript: array = field(default_factory=lambda: array("q"))  # workflow programs: appends + outputs
    attained_service_s: float = 0.0
    records: list[TurnRecord] = field(default_factory=list)
    dag: Optional["_DagState"] = None


@dataclass
class _DagState:
    """Where each agent of a DAG program is."""

    next_turn: dict[int, int]  # turn index -> the same agent's next turn (absent: its last)
    first_turn: dict[str, int]  # agent -> its first turn's index
    context: dict[str, array] = field(default_factory=dict)  # agent -> its previous turn's prompt + output
    left: dict[str, int] = field(default_factory=dict)  # agent -> the KV its previous turn left (hit metric)
    answer: dict[str, array] = field(default_factory=dict)  # finished agent -> its last turn's output
    started: set = field(default_factory=set)
    declared: bool = False

    @classmethod
    def of(cls, program: Program) -> "_DagState":
        owned = program.agent_turns()
        return cls({i: n for turns in owned.values() for i, n in zip(turns, turns[1:])},
                   {agent: turns[0] for agent, turns in owned.items()})


class ClusterLink(Protocol):
    """What a worker of a cluster (eval/sim/cluster.py) reads and calls: the shared program states
    and the cluster's event queue (a heap of (time, seq, program, turn)), where finished turns
    schedule the next ones."""

    states: list
    events: list

    def schedule(self, time_s: float, program_index: int, turn: int) -> None: ...


@dataclass
class SimResult:
    policy: str
    programs: list[ProgramResult]
    makespan_s: float
    decisions: list[tuple] = field(default_factory=list)  # (time, program, turn, event, value)
    links: dict = field(default_factory=dict)  # host link use (eval/sim/link.py HostLinks.summary)
    running_kv_token_s: float = 0.0  # integral over time of the KV running requests hold (memory_use.py)
    reserved_idle_token_s: float = 0.0  # held for critical agents, unused, while others waited
    pool_tokens: int = 0


class Simulator:
    def __init__(
        self,
        programs: list[Program],
        cost: CostModel,
        policy: PolicySpec,
        pool_tokens: Optional[int] = None,
        agent_args: Optional[AgentServerArgs] = None,
        cluster: Optional["ClusterLink"] = None,
    ):
        self.cost = cost
        self.policy = policy
        self.now = 0.0
        self.pool_tokens = pool_tokens or cost.kv_pool_tokens
        self.clock = StepClock()
        # One of several workers (eval/sim/cluster.py): the program states and the turn arrivals
        # belong to the cluster, which routes each turn to a worker.
        self.cluster = cluster
        self.programs = cluster.states if cluster is not None else [
            _ProgramState(p, array("q", p.system_tokens), dag=_DagState.of(p) if p.is_dag else None) for p in programs]
        self.waiting: list[_Request] = []
        self.running: list[_Request] = []
        self.events: list[tuple[float, int, int, int]] = []  # (time, seq, program index, turn)
        self.seq = itertools.count()
        self.decisions: list[tuple] = []
        self.running_kv_token_s = 0.0
        self.reserved_idle_token_s = 0.0
        self.tool_mean_s: dict[str, tuple[float, int]] = {}  # infercept's profiled durations
        self.infercept_pins: set[str] = set()
        self.host_pool_tokens = policy.host_pool_tokens or int(policy.host_ratio * self.pool_tokens)
        # One PCIe link per GPU and direction, shared by HiCache's copies and our tier's.
        self.links = HostLinks.of(cost) if policy.offload or policy.hicache else None
        # KVFlow's prefetch of the agents due next (the host tier asks, _load_prefix loads): each
        # session's last cached key, and the loads still in flight (key, GPU tokens before, copy).
        self.session_keys: dict[str, array] = {}
        self.prefix_loads: list[tuple[array, int, Transfer]] = []
        # One host budget. On HiCache (ours), an offloaded session's KV is its path in HiCache's
        # host tree, held there and demoted from the GPU, as the server's tier does it
        # (eval/sim/hicache_tier.py): prefixes it shares with other paths (a role prompt) are
        # stored once. Without HiCache the offload tier keeps copies of its own in a pool of the
        # same size (eval/sim/host_tier.py).
        self.hicache = SimHiCache(self.host_pool_tokens) if policy.hicache else None
        self.host = None
        if policy.offload and self.hicache is not None:
            self.host = SimHiCacheTier(self.hicache, self.host_pool_tokens, cost, self.clock, self.links,
                                       key_of=self.session_keys.get, demote=self._demote_session, load=self._load_prefix)
        elif policy.offload:
            self.host = SimHostTier(self.host_pool_tokens, cost, self.clock, self.links)
        # A fixed TTL: no memory price, so the declared duration is always taken as the TTL.
        defaults = AgentServerArgs()
        args = agent_args or AgentServerArgs(
            prefill_tokens_per_s=cost.prefill_tokens_per_s(),
            memory_cost_scale=0.0 if policy.fixed_ttl_s is not None else defaults.memory_cost_scale,
            max_ttl_s=max(defaults.max_ttl_s, policy.fixed_ttl_s or 0.0),
            pin_mode=policy.pin_mode,
            reserve_fraction=policy.reserve_fraction,
        )
        self.backend = build_backend(self.pool_tokens, args, clock=self.clock,
                                     host_tier_factory=(lambda cache: self.host) if self.host else None,
                                     load_probe=self._load)
        self.cache = self.backend.cache
        self.allocator = self.cache.token_to_kv_pool_allocator
        # The policies without agent state run the same cache with no hints (upstream's behaviour).
        self.controller = self.backend.controller if policy.retention == "ttl" or policy.workflow else None
        if cluster is None:
            for index, state in enumerate(self.programs):
                self.start_program(index)

    def start_program(self, index: int) -> None:
        state = self.programs[index]
        if state.dag is None:
            self._schedule(state.program.arrival_s, index, 0)
        else:
            self._start_ready_agents(index, state.program.arrival_s)

    # ---- events ------------------------------------------------------------------------------
    def _schedule(self, time_s: float, program_index: int, turn: int) -> None:
        if self.cluster is not None:
            self.cluster.schedule(time_s, program_index, turn)
            return
        heapq.heappush(self.events, (time_s, next(self.seq), program_index, turn))

    def _next_event_s(self) -> Optional[float]:
        """The next arrival, or sooner the host tier's next due copy (the server's scheduler polls
        it every step, idle or not: time must not jump past a planned prefetch)."""
        events = self.cluster.events if self.cluster is not None else self.events
        next_s = events[0][0] if events else None
        due_s = self.host.next_due_s() if self.host is not None else None
        if due_s is not None and due_s > self.now and (next_s is None or due_s < next_s):
            return due_s
        return next_s

    def _load(self) -> LoadSnapshot:
        return LoadSnapshot(len(self.waiting), sum(len(r.key) for r in self.waiting))

    def _session(self, program: Program, turn: int) -> str:
        """Workflow programs have one session per agent (its prefix is shared through the tree)."""
        agent = program.turns[turn].agent_id
        return program.program_id if agent is None else f"{program.program_id}/{agent}"

    def _prompt(self, state: _ProgramState, turn: int) -> tuple[array, int]:
        """The turn's prompt, and how much of it an earlier turn left in KV (for the hit metric)."""
        program = state.program
        append = array("q", program.turns[turn].append_tokens)
        if state.dag is not None:
            agent = program.turns[turn].agent_id
            if turn == state.dag.first_turn[agent]:
                prefix = array("q", program.agent_prefixes[agent])
                answers = array("q")
                for pred in program.agent_deps[agent]:
                    answers += state.dag.answer[pred]
                return prefix + array("q", program.system_tokens) + answers + append, len(prefix)
            return state.dag.context[agent] + append, state.dag.left[agent]
        if program.agent_prefixes:
            prefix = array("q", program.agent_prefixes[program.turns[turn].agent_id])
            return prefix + array("q", program.system_tokens) + state.transcript + append, len(prefix)
        # What the previous turn left in KV: its prompt and all but the last output token.
        previous = len(state.context) - (1 if program.turns[turn - 1].output_tokens else 0) if turn else 0
        return state.context + append, previous

    def prompt_of(self, program_index: int, turn: int) -> array:
        return self._prompt(self.programs[program_index], turn)[0]

    def _arrive(self, program_index: int, turn: int, at_s: Optional[float] = None) -> None:
        state = self.programs[program_index]
        program = state.program
        prompt, reusable = self._prompt(state, turn)
        agent = program.turns[turn].agent_id
        record = TurnRecord(program.program_id, turn, self.now if at_s is None else at_s, prompt_tokens=len(prompt),
                            previous_context_tokens=reusable, agent_id=agent)
        first_of_agent = state.dag is not None and turn == state.dag.first_turn[agent]
        if first_of_agent:
            record.role, record.role_prefix_tokens = program.role(agent), reusable
        state.records.append(record)
        rid = f"{program.program_id}/{turn}"
        session = self._session(program, turn)
        if self.controller is not None:
            step = None
            hints = self.policy.workflow_hints if self.policy.workflow else "none"
            if state.dag is not None:
                if hints == "declared" and not state.dag.declared:
                    self._declare_dag(program)  # at the program's first arrival
                    state.dag.declared = True
                # Only an agent's first turn is a step; its later turns continue the agent's run.
                if first_of_agent and hints == "declared":
                    step = WorkflowStep(program.program_id, agent)
                elif first_of_agent and hints == "learned":
                    step = WorkflowStep(program.program_id, agent, session_id=session, role=program.role(agent))
            elif hints != "none" and program.agent_prefixes:
                if turn == 0 and hints == "declared":
                    self._declare_workflow(program)
                step = (WorkflowStep(program.program_id, agent) if hints == "declared" else
                        WorkflowStep(program.program_id, agent, session_id=session, role=agent))
            self.controller.bind(rid, InlineAgentHint(session, workflow_step=step))
            self.controller.request_entered(rid)  # the scheduler has it (how long it waits is counted)
        if session in self.infercept_pins:
            self.cache.unpin(session)
            self.infercept_pins.discard(session)
        self.waiting.append(_Request(rid, program_index, turn, prompt, array("q", program.turns[turn].output_tokens), record))

    def _declare_workflow(self, program: Program) -> None:
        agents = list(dict.fromkeys(t.agent_id for t in program.turns))
        self.controller.declare_workflow(WorkflowDef(
            program.program_id, tuple(WorkflowAgent(a, f"{program.program_id}/{a}") for a in agents),
            schedule=tuple(t.agent_id for t in program.turns)))

    def _declare_dag(self, program: Program) -> None:
        agents = tuple(WorkflowAgent(a, f"{program.program_id}/{a}", role=program.role(a)) for a in program.agent_deps)
        edges = tuple((pred, a) for a, preds in program.agent_deps.items() for pred in preds)
        self.controller.declare_workflow(WorkflowDef(program.program_id, agents, edges=edges, dag=True))

    def _start_ready_agents(self, program_index: int, time_s: float) -> None:
        """AND-join: every agent not started whose predecessors have all finished gets its first turn."""
        state = self.programs[program_index]
        for agent, preds in state.program.agent_deps.items():
            if agent not in state.dag.started and all(p in state.dag.answer for p in preds):
                state.dag.started.add(agent)
                self._schedule(time_s, program_index, state.dag.first_turn[agent])

    # ---- scheduling --------------------------------------------------------------------------
    def _order_key(self, req: _Request):
        state = self.programs[req.program_index]
        if self._reserving:  # critical-path agents first (patches/admission_reservation.py)
            return (self.controller.queue_rank(req.rid), *self._base_order_key(req, state))
        return self._base_order_key(req, state)

    @property
    def _reserving(self) -> bool:
        return self.controller is not None and self.controller.reservation.enabled

    def _base_order_key(self, req: _Request, state: _ProgramState):
        if self.policy.order == "program_fcfs":
            return (state.program.arrival_s, req.record.arrival_s)
        if self.policy.order == "plas":
            return (state.attained_service_s, req.record.arrival_s)
        return (req.record.arrival_s,)

    def _admit(self) -> list[_Request]:
        self.waiting.sort(key=self._order_key)
        budget = self.cost.max_prefill_tokens
        admitted = []
        if self._reserving:
            # What the critical requests waiting need: the part of their prompt no earlier turn left.
            self.controller.begin_admission_round(sum(
                len(r.key) - r.record.previous_context_tokens + len(r.output_tokens)
                for r in self.waiting if self.controller.is_critical_request(r.rid)))
        while self.waiting:
            req = self.waiting[0]
            cached, node = 0, self.cache.tree_core.root_node.id
            if self.policy.prefix_reuse:
                match = self.cache.match_prefix(MatchPrefixParams(key=RadixKey(req.key)))
                cached, node = match.device_prefix_len, match.last_device_node
            reload = 0
            session = self._session(self.programs[req.program_index].program, req.turn)
            copy = self.host.peek(session) if self.host is not None else None
            if copy is not None and min(copy.tokens, len(req.key)) > cached:
                reload = min(copy.tokens, len(req.key)) - cached  # comes back from host, not recomputed
            hicache_reload = 0
            if self.hicache is not None and reload == 0:
                # Never the whole prompt: the last token is always computed (as upstream).
                hicache_reload = max(0, min(self.hicache.match(req.key), len(req.key) - 1) - cached)
                reload = hicache_reload
            new_tokens = len(req.key) - cached - reload
            if admitted and new_tokens > budget:
                break  # the prefill budget is spent for this iteration
            need = new_tokens + reload + len(req.output_tokens)
            lock = self.cache.lock(node) if cached else None
            if self._reserving and not self.controller.may_admit(req.rid, need, self.cache.free_tokens()):
                self.cache.unlock(lock)
                break  # off the critical path: the rest of memory is held for critical agents
            short = need - self.allocator.available_size()
            if short > 0 and not admitted and not self.running and short > self.cache.evictable_size():
                # Nothing running will free memory: pins closest to expiry give way (no deadlock).
                released = self.backend.make_room_for_admission(lambda: self.cache.free_tokens() >= need)
                if not released and self.infercept_pins:  # infercept holds until return: same rule
                    released = self._release_infercept(need)
                self.decisions.extend((self.now, s, -1, "pin_released", 0) for s in released)
            if short > 0:
                self.cache.evict(EvictParams(num_tokens=short))
            if self.allocator.available_size() < need:
                self.cache.unlock(lock)
                break  # head of line waits for memory
            self.waiting.pop(0)
            if self.host is not None:
                self.host.admitted(session)
            req.node, req.lock, req.gpu_cached = node, lock, cached
            req.slots = self.allocator.alloc(need)
            if hicache_reload:
                req.loads.append(self.links.h2d.submit(self.now, hicache_reload))  # load_back at admission
                self.hicache.reloaded_tokens += hicache_reload
            elif reload:
                req.loads.append(self.host.take(session, cached + reload))
            if self.prefix_loads and cached:
                req.loads += self._prefix_loads_under(req.key, cached)
            req.record.cached_tokens = cached + reload
            req.record.gpu_cached_tokens = cached
            req.record.admitted_s = self.now
            if self._reserving:
                self.controller.admitted(req.rid, need)
            budget -= new_tokens
            admitted.append(req)
        return admitted

    # ---- finishing ---------------------------------------------------------------------------
    def _finish(self, req: _Request) -> None:
        state = self.programs[req.program_index]
        program = state.program
        req.record.finish_s = self.now
        cached = req.gpu_cached
        full_key = req.key + req.output_tokens
        if state.dag is None:
            state.context = full_key
            state.transcript += array("q", program.turns[req.turn].append_tokens) + req.output_tokens
        else:
            agent = program.turns[req.turn].agent_id
            state.dag.context[agent] = full_key
            state.dag.left[agent] = len(full_key) - (1 if len(req.output_tokens) else 0)
        last_node = None
        if self.policy.prefix_reuse:
            # Like SGLang, the last sampled token was never fed back, so it has no KV to cache.
            kv_key = full_key[:-1] if len(req.output_tokens) else full_key
            used = len(kv_key) - cached
            prefix = self.cache.path_device_indices(req.node)[:cached] if cached else torch.empty(0, dtype=torch.int64)
            value = torch.cat([prefix.to(torch.int64), req.slots[:used].to(torch.int64)])
            if used < len(req.slots):
                self.allocator.free(req.slots[used:])
            result = self.cache.insert(InsertParams(key=RadixKey(kv_key), value=value, prev_prefix_len=cached))
            if self.host is not None:
                self.session_keys[self._session(program, req.turn)] = kv_key
            if self.hicache is not None:
                written = self.hicache.write(kv_key)
                if written:
                    self.links.d2h.submit(self.now, written)  # write-through backup
            self.cache.unlock(req.lock)
            last_node = result.last_device_node
        else:
            self.allocator.free(req.slots)
        turn = program.turns[req.turn]
        session = self._session(program, req.turn)
        if self.controller is not None:
            self.controller.turn_finished(_FinishedReq(req.rid, last_node, req.key, cached))
        if turn.tool_name is None:
            if state.dag is not None:  # the agent is done: its answer feeds its successors
                state.dag.answer[turn.agent_id] = req.output_tokens
                self._start_ready_agents(req.program_index, self.now)
            return
        if self.policy.retention == "ttl":
            declared = turn.tool_duration_s if self.policy.declare_durations else None
            if self.policy.fixed_ttl_s is not None:
                declared = self.policy.fixed_ttl_s / (1.0 + DECLARED_DURATION_SLACK)
            answer = self.controller.tool_start(ToolStart(session, turn.tool_name, declared))
            self.decisions.append((self.now, program.program_id, req.turn, "ttl_s", answer["ttl_s"]))
            self.decisions.append((self.now, program.program_id, req.turn, "pinned_tokens", answer["pinned_tokens"]))
            self.decisions.append((self.now, program.program_id, req.turn, "expected_benefit_s",
                                   answer["expected_benefit_s"]))
        elif self.policy.retention == "infercept" and last_node is not None:
            self._infercept_decide(session, turn.tool_name, last_node, len(full_key))
        next_turn = req.turn + 1 if state.dag is None else state.dag.next_turn[req.turn]
        self._schedule(self.now + turn.tool_duration_s, req.program_index, next_turn)
        self._observe_tool(turn.tool_name, turn.tool_duration_s)

    def _observe_tool(self, tool_name: str, duration_s: float) -> None:
        mean, n = self.tool_mean_s.get(tool_name, (0.0, 0))
        self.tool_mean_s[tool_name] = ((mean * n + duration_s) / (n + 1), n + 1)

    def _infercept_decide(self, session: str, tool_name: str, last_node: int, context_tokens: int) -> None:
        expected = self.tool_mean_s.get(tool_name, (1.0, 0))[0]  # profiled mean; 1 s before any
        others = sum(len(r.key) + r.produced for r in self.running)
        if infercept_preserve(expected, context_tokens, self.cost.prefill_s(context_tokens), others):
            self.cache.record_turn(session, last_node)
            self.cache.pin(session, float("inf"))  # held until the tool returns
            self.infercept_pins.add(session)
            self.decisions.append((self.now, session, -1, "preserve", context_tokens))

    def _release_infercept(self, need: int) -> list[str]:
        released = []
        for session in list(self.infercept_pins):
            if self.cache.free_tokens() >= need:
                break
            self.cache.unpin(session)
            self.infercept_pins.discard(session)
            released.append(session)
        return released

    # ---- KVFlow's prefetch of the next agents' prefixes -----------------------------------------
    def _prefix_key(self, session_id: str) -> Optional[array]:
        """The tokens a prefetch of `session_id` brings back: the session's last cached key, or for
        a role's prefix (the controller's `role:` key) that role's prompt."""
        if session_id.startswith(ROLE_PREFIX):
            role = session_id[len(ROLE_PREFIX):]
            for state in self.programs:
                program = state.program
                for agent, tokens in (program.agent_prefixes or {}).items():
                    if program.role(agent) == role:
                        return array("q", tokens)
            return None
        return self.session_keys.get(session_id)

    def _load_prefix(self, session_id: str, headroom_tokens: int) -> Optional[int]:
        """What the server's host tier does for a workflow agent due next (HiCache load_back of the
        session's host-only path, the copy started at once): the part of its key that host memory
        holds beyond the GPU's is given GPU slots, inserted in the tree, and queued on the link; a
        turn that finds it before it lands waits for it layer by layer. Returns tokens loaded, 0 if
        nothing is host-only, None if it needs more than `headroom_tokens` (it waits a step)."""
        key = self._prefix_key(session_id)
        if key is None or self.hicache is None:
            return 0
        host_tokens = min(self.hicache.match(key), len(key))
        match = self.cache.match_prefix(MatchPrefixParams(key=RadixKey(key)))
        gpu_tokens, node = match.device_prefix_len, match.last_device_node
        tokens = host_tokens - gpu_tokens
        if tokens <= 0:
            return 0
        if tokens > headroom_tokens:
            return None
        lock = self.cache.lock(node) if gpu_tokens else None  # its GPU prefix stays while we evict
        short = tokens - self.allocator.available_size()
        if short > 0:
            self.cache.evict(EvictParams(num_tokens=short))
        if self.allocator.available_size() < tokens:
            self.cache.unlock(lock)
            return None
        prefix = self.cache.path_device_indices(node)[:gpu_tokens] if gpu_tokens else torch.empty(0, dtype=torch.int64)
        value = torch.cat([prefix.to(torch.int64), self.allocator.alloc(tokens).to(torch.int64)])
        self.cache.insert(InsertParams(key=RadixKey(key[:host_tokens]), value=value, prev_prefix_len=gpu_tokens))
        self.cache.unlock(lock)
        self.prefix_loads.append((key[:host_tokens], gpu_tokens, self.links.h2d.submit(self.now, tokens)))
        return tokens

    def _demote_session(self, session_id: str) -> int:
        """The server's offload on the GPU side (AgentRadixCache.offload_session): the session's
        path leaves the GPU now, deepest node first, its host copy held in HiCache's tree; a node
        a running request locks, or with other GPU nodes under it, stays, and so do its ancestors.
        Returns GPU tokens freed. (The simulated GPU tree has no host tier of its own: a demoted
        node is evicted from it, its copy lives in eval/sim/hicache.py.)"""
        tracker = {component: 0 for component in self.cache.tree_components}
        node = self.cache.last_node(session_id)
        root = self.cache.tree_core.root_node
        while node is not None and node is not root:
            parent = node.parent
            if node.lock_ref > 0 or not upstream.is_device_leaf(self.cache.tree_core, node):
                break
            self.cache._evict_device_leaf(node.id, tracker)  # upstream's eviction of one leaf
            node = parent
        return sum(tracker.values())

    def _prefix_loads_under(self, key: array, cached: int) -> list[Transfer]:
        """Prefetches still in flight whose tokens are part of the `cached` prefix of `key`."""
        self.prefix_loads = [entry for entry in self.prefix_loads if entry[2].end_s > self.now]
        return [load for loaded, before, load in self.prefix_loads
                if cached > before and key[:before + 1] == loaded[:before + 1]]

    # ---- main loop ---------------------------------------------------------------------------
    def run(self) -> SimResult:
        while self.events or self.waiting or self.running:
            self.backend.tick(self.now)  # the step clock, as the scheduler ticks it once per step
            while self.events and self.events[0][0] <= self.now:
                _, _, program_index, turn = heapq.heappop(self.events)
                self._arrive(program_index, turn)
            admitted = self._admit() if self.waiting else []
            if not admitted and not self.running:
                if not self.events:
                    if self.waiting:
                        raise RuntimeError(f"deadlock: {len(self.waiting)} requests cannot fit a {self.pool_tokens}-token pool")
                    break
                self.now = max(self.now, self._next_event_s())
                continue
            self._step(admitted)
        return self.result()

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.running)

    def iterate(self) -> bool:
        """One scheduler iteration of a cluster's worker (the cluster delivers arrivals). False when
        nothing could run: the waiting requests wait for time to pass (a pin's expiry, a return)."""
        self.backend.tick(self.now)
        admitted = self._admit() if self.waiting else []
        if not admitted and not self.running:
            return False
        self._step(admitted)
        return True

    def deliver(self, program_index: int, turn: int, at_s: float) -> None:
        """A turn the cluster routed here at `at_s` (this worker may be up to one iteration ahead)."""
        if not self.busy:
            self.now = max(self.now, at_s)
        self.backend.tick(self.now)
        self._arrive(program_index, turn, at_s)

    def result(self) -> SimResult:
        finish = {}
        for state in self.programs:
            # A DAG program ends with its last agent to finish; a sequential one with its last turn.
            end_s = state.records[-1].finish_s if state.dag is None else max(r.finish_s for r in state.records)
            finish[state.program.program_id] = ProgramResult(
                state.program.program_id, state.program.arrival_s, end_s, state.records, state.program.critical_path)
        makespan = max((p.finish_s for p in finish.values()), default=0.0)
        first_arrival = min((p.arrival_s for p in finish.values()), default=0.0)
        links = self.links.summary(makespan - first_arrival) if self.links is not None else {}
        return SimResult(self.policy.name, list(finish.values()), makespan, self.decisions, links,
                         running_kv_token_s=self.running_kv_token_s, pool_tokens=self.pool_tokens,
                         reserved_idle_token_s=self.reserved_idle_token_s)

    def _step(self, admitted: list[_Request]) -> None:
        compute_s = sum(self.cost.prefill_s(len(r.key) - r.record.cached_tokens, r.record.cached_tokens) for r in admitted)
        # A prefix still coming back from host is loaded layer by layer under the prefill
        # (HiCache's load_back with layer-wise sync): the batch waits only for what compute cannot hide.
        prefill_s = prefill_end_s(self.now, compute_s, [load for r in admitted for load in r.loads],
                                  self.cost.num_layers) - self.now
        decoding = self.running
        # Several decode-only steps at once when nothing can change in between: no admission
        # (nothing waits or nothing was admittable), no arrival and no finish before then.
        steps = 1
        if not admitted and decoding:
            steps = min(len(r.output_tokens) - r.produced for r in decoding)
            next_event_s = self._next_event_s()
            if next_event_s is not None:
                step_s = self.cost.decode_step_s(len(decoding), sum(len(r.key) + r.produced for r in decoding))
                steps = max(1, min(steps, int((next_event_s - self.now) / max(step_s + self.cost.iteration_overhead_s, 1e-9))))
            if self.waiting:
                steps = 1
        context = sum(len(r.key) + r.produced for r in decoding)
        decode_s = self.cost.decode_step_s(len(decoding), context + len(decoding) * (steps - 1) / 2) * steps
        elapsed = prefill_s + decode_s + self.cost.iteration_overhead_s * steps
        self.running_kv_token_s += running_kv_tokens(self.cache.tree_core, decoding + admitted) * elapsed
        if self._reserving and self.waiting:
            # Held for critical agents that did not take it while others waited (TokenCake's waste).
            self.reserved_idle_token_s += self.controller.reservation.held * elapsed
        self.now += elapsed
        self.backend.tick(self.now)
        for r in admitted:
            r.record.first_token_s = self.now
            r.produced = 1
            self.programs[r.program_index].attained_service_s += elapsed / max(1, len(admitted) + len(decoding))
        for r in decoding:
            r.produced += steps
            self.programs[r.program_index].attained_service_s += elapsed / max(1, len(admitted) + len(decoding))
        self.running = decoding + admitted
        done = [r for r in self.running if r.produced >= len(r.output_tokens)]
        self.running = [r for r in self.running if r.produced < len(r.output_tokens)]
        for r in done:
            self._finish(r)


@dataclass
class _FinishedReq:
    """What the controller reads from a finished request (the fields of SGLang's Req it uses)."""

    rid: str
    last_node: Optional[int]
    origin_input_ids: array
    cached_tokens: int
    finished_reason: None = None


def simulate(programs: list[Program], cost: CostModel, policy: PolicySpec, **kwargs) -> SimResult:
    if policy.eviction == "belady":  # the same engine, victims chosen from the trace's future
        from eval.sim.belady import BeladySimulator

        return BeladySimulator(programs, cost, policy, **kwargs).run()
    return Simulator(programs, cost, policy, **kwargs).run()
