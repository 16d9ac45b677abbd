"""`--agent-*` server arguments, in SGLang's ServerArgs style.

They travel from the launcher to the scheduler process in the environment variable
SGLANG_AGENT_ARGS (JSON), because SGLang's ServerArgs does not know them and the scheduler is
a spawned process."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from dataclasses import dataclass

from sglang_agent.policy.ttl import DEFAULT_PRIOR_DURATIONS_S

ENV_VAR = "SGLANG_AGENT_ARGS"


@dataclass(frozen=True)
class AgentServerArgs:
    max_pinned_fraction: float = 0.5
    max_ttl_s: float = 60.0
    prefill_tokens_per_s: float = 10000.0
    resume_grace_s: float = 5.0
    # Calibrated with the simulator's TTL sweep (eval/reproduce.py --figure ttl): at 1.0 the policy
    # refused pins under load and lost to fixed long TTLs; at 0.1 it matches the best fixed TTL.
    memory_cost_scale: float = 0.1
    tool_prior_s: tuple[float, ...] = DEFAULT_PRIOR_DURATIONS_S
    program_fcfs: bool = True
    pin_mode: str = "hard"
    # Host<->GPU copy bandwidth that prices a reload from the host tier. 25 GB/s is a
    # conservative PCIe 5.0 x16 figure; measure yours with `python -m eval.bench_kv_transfer`.
    host_bandwidth_gbps: float = 25.0
    # Offload a session in a tool call only under memory pressure: requests waiting, or this
    # share of the KV pool neither free nor evictable (TokenCake: offload what the GPU needs).
    offload_watermark: float = 0.8
    # How long an offloaded session's host copy is kept past the tool's start at most.
    max_host_keep_s: float = 600.0
    # A session with no request and nothing held for this long is forgotten (bounded state).
    session_idle_s: float = 300.0
    # HiCache's host<->GPU copy engine: upstream's kernels, or our Triton kernel (cache/host_copy.py).
    # "auto": upstream's where they run (CUDA), ours without CUDA (upstream's have no CPU build).
    copy_engine: str = "auto"
    # Zero-hint agents: recognise tool-call turns in the server's own answers, and sessions from the
    # prompts that extend a session's cached path. Off: only explicit hints count.
    detect_tool_calls: bool = True
    # Text agents: a regex over the answer's text that marks a tool call (group `tool`: its name).
    tool_call_pattern: str = ""
    # Longest pin a client's own TTL (cache_control, tool_start.ttl_s) may ask for.
    max_cache_ttl_s: float = 3600.0
    # Undeclared workflows (steps of a workflow nobody declared): learn the agent graph online
    # (policy/learned_graph.py). An edge is trusted once its role completed this many times and
    # followed with at least this frequency; below that the policy keeps LRU order.
    learn_workflows: bool = True
    workflow_min_observations: int = 2
    workflow_min_probability: float = 0.5
    # Critical-path reservation (TokenCake): at most this share of the pool is held for the agents
    # on a live workflow's critical path (0: off).
    reserve_fraction: float = 0.0
    # Longest another tenant's request (no agent session) waits for pins once only they stand in
    # its way (upstream would have evicted that memory for it at once), and longest the
    # reservation holds back or overtakes any request.
    max_admission_stall_s: float = 1.0

    def __post_init__(self):
        if not 0.0 <= self.max_pinned_fraction <= 1.0:
            raise ValueError(f"--agent-max-pinned-fraction must be in [0, 1], got {self.max_pinned_fraction}")
        for name in ("max_ttl_s", "resume_grace_s", "memory_cost_scale", "max_host_keep_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"--agent-{name.replace('_', '-')} must be >= 0")
        if self.prefill_tokens_per_s <= 0:
            raise ValueError("--agent-prefill-tokens-per-s must be > 0")
        if self.host_bandwidth_gbps <= 0:
            raise ValueError("--agent-host-bandwidth-gbps must be > 0")
        if not 0.0 < self.offload_watermark <= 1.0:
            raise ValueError(f"--agent-offload-watermark must be in (0, 1], got {self.offload_watermark}")
        if self.session_idle_s <= 0:
            raise ValueError("--agent-session-idle-s must be > 0")
        if self.workflow_min_observations < 1:
            raise ValueError("--agent-workflow-min-observations must be >= 1")
        if not 0.0 < self.workflow_min_probability <= 1.0:
            raise ValueError(f"--agent-workflow-min-probability must be in (0, 1], got {self.workflow_min_probability}")
        if not 0.0 <= self.reserve_fraction <= 0.9:
            raise ValueError(f"--agent-reserve-fraction must be in [0, 0.9], got {self.reserve_fraction}")
        if self.max_admission_stall_s < 0:
            raise ValueError("--agent-max-admission-stall-s must be >= 0")
        if self.copy_engine not in ("auto", "upstream", "triton"):
            raise ValueError(f"--agent-copy-engine must be auto, upstream or triton, got {self.copy_engine!r}")
        if self.tool_call_pattern:
            import re

            try:
                re.compile(self.tool_call_pattern)
            except re.error as e:
                raise ValueError(f"--agent-tool-call-pattern is not a regular expression: {e}") from None
        if self.pin_mode not in ("soft", "hard"):
            raise ValueError(f"--agent-pin-mode must be soft or hard, got {self.pin_mode!r}")
        if not self.tool_prior_s or any(d < 0 for d in self.tool_prior_s):
            raise ValueError("--agent-tool-prior-s needs one or more durations >= 0")

    @staticmethod
    def add_cli_args(parser: argparse.ArgumentParser) -> None:
        d = AgentServerArgs()
        group = parser.add_argument_group("sglang-agent (KV pins and host offload for agent tool calls)")
        group.add_argument("--agent-max-pinned-fraction", type=float, default=d.max_pinned_fraction,
                           help="Cap on TTL-pinned tokens as a fraction of the KV pool (default %(default)s).")
        group.add_argument("--agent-max-ttl-s", type=float, default=d.max_ttl_s,
                           help="Longest TTL a pin may get, seconds (default %(default)s).")
        group.add_argument("--agent-prefill-tokens-per-s", type=float, default=d.prefill_tokens_per_s,
                           help="Prefill throughput used to price a re-prefill (default %(default)s).")
        group.add_argument("--agent-resume-grace-s", type=float, default=d.resume_grace_s,
                           help="After tool_end, keep the pin this long for the next turn to arrive.")
        group.add_argument("--agent-memory-cost-scale", type=float, default=d.memory_cost_scale,
                           help="Weight of the memory a pin holds against the delay it saves.")
        group.add_argument("--agent-tool-prior-s", type=str, default=",".join(map(str, d.tool_prior_s)),
                           help="Comma-separated prior tool durations (s) used before a tool has history.")
        group.add_argument("--agent-pin-mode", choices=["soft", "hard"], default=d.pin_mode,
                           help="hard (default, Continuum): a pin holds the KV until its TTL and newer agent "
                                "programs wait for it (other tenants at most --agent-max-admission-stall-s; released "
                                "early too when the running batch's decode needs the memory); soft: pins only "
                                "reorder eviction and never delay admission.")
        group.add_argument("--agent-host-bandwidth-gbps", type=float, default=d.host_bandwidth_gbps,
                           help="Host<->GPU copy bandwidth (GB/s) used to price a reload from the host tier "
                                "when deciding to offload a session during a tool call (needs "
                                "--enable-hierarchical-cache; default %(default)s).")
        group.add_argument("--agent-offload-watermark", type=float, default=d.offload_watermark,
                           help="With a host tier, a session in a tool call is offloaded only under memory "
                                "pressure: requests waiting, or this share of the KV pool neither free nor "
                                "evictable (default %(default)s).")
        group.add_argument("--agent-max-host-keep-s", type=float, default=d.max_host_keep_s,
                           help="Longest an offloaded session's host copy is kept for its tool call, seconds "
                                "(default %(default)s; the reload is timed from the predicted return).")
        group.add_argument("--agent-session-idle-s", type=float, default=d.session_idle_s,
                           help="Forget a session (explicit or implicit) with no request and nothing held for "
                                "this long; it starts anew if it comes back (default %(default)s s).")
        group.add_argument("--agent-copy-engine", choices=["auto", "upstream", "triton"], default=d.copy_engine,
                           help="HiCache's host<->GPU copy engine: upstream's kernels, or our batched Triton "
                                "kernel (one launch for all layers; adds --hicache-io-backend kernel "
                                "--hicache-mem-layout layer_first unless named). auto (default): upstream's on "
                                "a GPU, ours without CUDA, where upstream's have no build.")
        group.add_argument("--agent-tool-call-pattern", default=d.tool_call_pattern, metavar="REGEX",
                           help="Text agents: a turn whose answer matches REGEX ends in a tool call (a group "
                                "named 'tool' gives the tool's name), e.g. mini-swe-agent's "
                                "'```bash\\n(?P<tool>\\S+)' or ReAct's 'Action: (?P<tool>\\w+)'. Chat answers "
                                "with tool_calls (--tool-call-parser) or a forced tool_choice are recognised "
                                "without it.")
        group.add_argument("--agent-disable-tool-call-detection", action="store_true",
                           help="Only explicit hints count: no tool calls recognised in answers, no sessions "
                                "found from prompts (zero-hint agents then get upstream behaviour).")
        group.add_argument("--agent-disable-workflow-learning", action="store_true",
                           help="A step of a workflow nobody declared gets 404 instead of teaching the server "
                                "the workflow's agent graph (learned online from the order agents run in).")
        group.add_argument("--agent-workflow-min-observations", type=int, default=d.workflow_min_observations,
                           help="Learned workflow graphs: runs of a role before its edges are trusted "
                                "(default %(default)s).")
        group.add_argument("--agent-workflow-min-probability", type=float, default=d.workflow_min_probability,
                           help="Learned workflow graphs: how often a role must follow another for the edge to "
                                "count; below it the cache keeps LRU order (default %(default)s).")
        group.add_argument("--agent-reserve-fraction", type=float, default=d.reserve_fraction,
                           help="Critical-path reservation (TokenCake): hold up to this share of the KV pool "
                                "for the agents on a declared or learned workflow's critical path (sized "
                                "from 5%% up with KV usage; lent out whenever they do not need it; their "
                                "prefixes are evicted last). 0 (default) = off.")
        group.add_argument("--agent-max-admission-stall-s", type=float, default=d.max_admission_stall_s,
                           help="Longest a request of no agent session waits for pins once only they stand in "
                                "its way (then pins give way, closest to expiry first), and longest the "
                                "critical-path reservation holds back or overtakes any request "
                                "(default %(default)s s).")
        group.add_argument("--agent-disable-program-fcfs", action="store_true",
                           help="Order resumed turns by their own arrival (upstream FCFS).")

    @classmethod
    def from_cli_args(cls, args: argparse.Namespace) -> "AgentServerArgs":
        try:
            prior = tuple(float(x) for x in args.agent_tool_prior_s.split(",") if x.strip())
        except ValueError as e:
            raise ValueError(f"--agent-tool-prior-s: {e}") from None
        return cls(
            max_pinned_fraction=args.agent_max_pinned_fraction,
            max_ttl_s=args.agent_max_ttl_s,
            prefill_tokens_per_s=args.agent_prefill_tokens_per_s,
            resume_grace_s=args.agent_resume_grace_s,
            memory_cost_scale=args.agent_memory_cost_scale,
            tool_prior_s=prior,
            program_fcfs=not args.agent_disable_program_fcfs,
            pin_mode=args.agent_pin_mode,
            host_bandwidth_gbps=args.agent_host_bandwidth_gbps,
            offload_watermark=args.agent_offload_watermark,
            max_host_keep_s=args.agent_max_host_keep_s,
            session_idle_s=args.agent_session_idle_s,
            copy_engine=args.agent_copy_engine,
            detect_tool_calls=not args.agent_disable_tool_call_detection,
            tool_call_pattern=args.agent_tool_call_pattern,
            learn_workflows=not args.agent_disable_workflow_learning,
            workflow_min_observations=args.agent_workflow_min_observations,
            workflow_min_probability=args.agent_workflow_min_probability,
            reserve_fraction=args.agent_reserve_fraction,
            max_admission_stall_s=args.agent_max_admission_stall_s,
        )

    def resolved_copy_engine(self) -> str:
        if self.copy_engine != "auto":
            return self.copy_engine
        import torch

        return "upstream" if torch.cuda.is_available() else "triton"

    def to_env(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_env(cls) -> "AgentServerArgs":
        raw = os.environ.get(ENV_VAR)
        if not raw:
            return cls()
        data = json.loads(raw)
        data["tool_prior_s"] = tuple(data.get("tool_prior_s", DEFAULT_PRIOR_DURATIONS_S))
        return cls(**data)
