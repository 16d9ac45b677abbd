"""A planner -> coder -> tester loop against an sglang-agent server.

Each agent has its own long, fixed system prompt (its cached prefix). The workflow is declared
once; every request names its step inline, and tool calls are wrapped so their KV is pinned
while the tool runs. Run a server first (see README), then:

    python examples/multi_agent_workflow.py --base-url http://127.0.0.1:30000 --rounds 2
"""

from __future__ import annotations

import argparse
import time

import requests

from sglang_agent.frontend import AgentClient

ROLES = {
    "planner": "You are the planner. Break the task into small steps and say which tool to use. ",
    "coder": "You are the coder. Write the smallest correct patch for the step you are given. ",
    "tester": "You are the tester. Run the tests, read the failures and report them precisely. ",
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default="http://127.0.0.1:30000")
    parser.add_argument("--rounds", type=int, default=2, help="planner/coder/tester rounds")
    parser.add_argument("--tool-seconds", type=float, default=0.2, help="simulated tool duration")
    parser.add_argument("--workflow-id", default=f"demo-{int(time.time())}")
    parser.add_argument("--prompt-repeat", type=int, default=8, help="system prompt length (repeats of the role)")
    args = parser.parse_args(argv)
    system_prompts = {agent: role * args.prompt_repeat for agent, role in ROLES.items()}

    client = AgentClient(args.base_url)
    order = ["planner", "coder", "tester"] * args.rounds
    client.declare_workflow(args.workflow_id, {a: f"{args.workflow_id}/{a}" for a in ROLES}, schedule=order)
    history = dict(system_prompts)
    for agent in order:
        session = client.session(f"{args.workflow_id}/{agent}")
        reply = requests.post(args.base_url + "/generate", timeout=300, json={
            "text": history[agent] + "\nNext step:",
            "sampling_params": {"max_new_tokens": 16, "temperature": 0},
            "agent": session.hint(workflow_step=(args.workflow_id, agent)),
        }).json()
        meta = reply["meta_info"]
        print(f"{agent:8s} prompt={meta['prompt_tokens']:5d} cached={meta['cached_tokens']:5d}")
        with session.tool("bash", expected_duration_s=args.tool_seconds) as pin:
            time.sleep(args.tool_seconds)  # the tool runs here while the server holds the KV
        print(f"{'':8s} tool call: KV pinned for {pin['ttl_s']:.2f} s ({pin['pinned_tokens']} tokens)")
        history[agent] += "\nNext step:" + reply["text"] + "\nTool output: ok"
    print(client.stats())
    for agent in ROLES:
        client.session(f"{args.workflow_id}/{agent}").close()


if __name__ == "__main__":
    main()
