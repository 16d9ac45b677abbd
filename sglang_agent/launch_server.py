"""Start SGLang's server with the agent cache and hint API.

    python -m sglang_agent.launch_server [--agent-* options] <any sglang.launch_server args>

The --agent-* options are ours (see --help); everything else goes to SGLang unchanged.
`--radix-cache-backend agent` is added unless another backend is named. With
`--enable-hierarchical-cache` (the host tier that offload during tool calls uses) and our copy
engine (`--agent-copy-engine triton`, the automatic choice without CUDA),
`--hicache-io-backend kernel --hicache-mem-layout layer_first` are added unless named, so that
our Triton kernel is HiCache's copy engine (patches/hicache_copy_engine.py)."""

from __future__ import annotations

import argparse
import os
import sys
from importlib.metadata import entry_points

from sglang_agent.config import ENV_VAR, AgentServerArgs


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sglang_agent.launch_server",
        description="SGLang server with agent-aware KV caching (TTL pins across tool calls; with "
        "--enable-hierarchical-cache, offload to host during long tool calls and workflow "
        "prefetch) and the /agent/* hint API. Unknown options are passed to "
        "sglang.launch_server; run `python -m sglang.launch_server --help` for those.",
        add_help=True,
    )
    AgentServerArgs.add_cli_args(parser)
    return parser


def _named(args: list[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in args)


def _defaults(args: list[str], copy_engine: str) -> list[tuple[str, str]]:
    added = [] if _named(args, "--radix-cache-backend") else [("--radix-cache-backend", "agent")]
    if "--enable-hierarchical-cache" in args and copy_engine == "triton":
        added += [(flag, value) for flag, value in (("--hicache-io-backend", "kernel"), ("--hicache-mem-layout", "layer_first"))
                  if not _named(args, flag)]
    return added


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser()
    ours, rest = parser.parse_known_args(argv)
    try:
        agent_args = AgentServerArgs.from_cli_args(ours)
    except ValueError as e:
        parser.error(str(e))
    if not any(ep.name == "sglang_agent" for ep in entry_points(group="sglang.srt.plugins")):
        parser.error("the sglang_agent plugin is not installed: run `pip install -e .` (or bash scripts/setup.sh)")
    from sglang_agent.cache.host_copy import ENGINE_ENV

    engine = agent_args.resolved_copy_engine()
    os.environ["SGLANG_AGENT_ENABLE"] = "1"
    os.environ[ENV_VAR] = agent_args.to_env()
    os.environ[ENGINE_ENV] = engine
    for flag, value in _defaults(rest, engine):
        rest += [flag, value]

    from sglang.launch_server import run_server
    from sglang.srt.plugins import load_plugins
    from sglang.srt.server_args import prepare_server_args
    from sglang.srt.utils import kill_process_tree

    load_plugins()
    server_args = prepare_server_args(rest)
    try:
        run_server(server_args)
    finally:
        kill_process_tree(os.getpid(), include_parent=False)


if __name__ == "__main__":
    main()
