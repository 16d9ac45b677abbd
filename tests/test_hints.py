import math

import pytest

from sglang_agent import hints
from sglang_agent.hints import HintError, parse_inline, parse_session_ref, parse_tool_start


def test_tool_start_ok():
    hint = parse_tool_start({"session_id": "s", "tool_name": "bash", "expected_duration_s": 3})
    assert hint.expected_duration_s == 3.0 and hint.tool_name == "bash"
    assert parse_tool_start({"session_id": "s", "tool_name": "bash"}).expected_duration_s is None


@pytest.mark.parametrize(
    "body, fragment",
    [
        ([], "JSON object"),
        ({"tool_name": "bash"}, "session_id"),
        ({"session_id": "", "tool_name": "bash"}, "session_id"),
        ({"session_id": "s"}, "tool_name"),
        ({"session_id": "s", "tool_name": "b", "expected_duration_s": -1}, ">= 0"),
        ({"session_id": "s", "tool_name": "b", "expected_duration_s": math.inf}, "finite"),
        ({"session_id": "s", "tool_name": "b", "expected_duration_s": 1e9}, "beyond"),
        ({"session_id": "s", "tool_name": "b", "expected_duration_s": "3"}, "number"),
        ({"session_id": "s", "tool_name": "b", "expected_duration_s": True}, "number"),
        ({"session_id": "s", "tool_name": "b", "color": 1}, "unknown field"),
        ({"session_id": "x" * 300, "tool_name": "b"}, "longer"),
    ],
)
def test_tool_start_rejects(body, fragment):
    with pytest.raises(HintError) as err:
        parse_tool_start(body)
    assert err.value.status == 400 and fragment in err.value.reason


def test_inline_hint():
    hint = parse_inline({"session_id": "s", "tool_start": {"tool_name": "search", "expected_duration_s": 1}})
    assert hint.session_id == "s" and hint.tool_start.session_id == "s"
    assert parse_inline({"session_id": "s"}).tool_start is None
    with pytest.raises(HintError):
        parse_inline({"session_id": "s", "tool_start": {"tool_name": ""}})
    with pytest.raises(HintError):
        parse_inline("s")


def test_session_ref():
    assert parse_session_ref({"session_id": "a"}, "tool_end").session_id == "a"
    with pytest.raises(HintError):
        parse_session_ref({"session_id": "a", "extra": 1}, "tool_end")


from sglang_agent.hints import parse_workflow, parse_workflow_step  # noqa: E402


def test_workflow_definition():
    wf = parse_workflow({"workflow_id": "w", "agents": [{"agent_id": "a"}, {"agent_id": "b", "session_id": "sb"}],
                         "edges": [["a", "b"]], "dag": True})
    assert [a.session_id for a in wf.agents] == ["w/a", "sb"] and wf.edges == (("a", "b"),) and wf.dag
    assert parse_workflow({"workflow_id": "w", "agents": [{"agent_id": "a"}], "schedule": ["a", "a"]}).schedule == ("a", "a")
    assert parse_workflow_step({"workflow_id": "w", "agent_id": "a"}).agent_id == "a"
    roles = parse_workflow({"workflow_id": "w", "agents": [{"agent_id": "a", "role": "planner"}, {"agent_id": "b"}],
                            "schedule": ["a", "b"]})
    assert [a.role for a in roles.agents] == ["planner", None]  # None: the agent id is the role


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"workflow_id": "w", "agents": [], "schedule": ["a"]}, "non-empty list"),
        ({"workflow_id": "w", "agents": [{"agent_id": "a"}]}, "exactly one"),
        ({"workflow_id": "w", "agents": [{"agent_id": "a"}], "schedule": ["a"], "edges": []}, "exactly one"),
        ({"workflow_id": "w", "agents": [{"agent_id": "a"}], "edges": [["a"]]}, "pairs"),
        ({"workflow_id": "w", "agents": [{"agent_id": "a"}], "schedule": "a"}, "list"),
        ({"workflow_id": "w", "agents": [{"agent_id": "a", "x": 1}], "schedule": ["a"]}, "unknown field"),
        ({"workflow_id": "w", "agents": [{"agent_id": "a"}], "schedule": ["a"], "dag": "yes"}, "dag"),
        ({"workflow_id": "w", "agents": [{"agent_id": "a", "role": 7}], "schedule": ["a"]}, "role"),
    ],
)
def test_workflow_definition_rejects(body, fragment):
    with pytest.raises(HintError) as err:
        parse_workflow(body)
    assert err.value.status == 400 and fragment in err.value.reason


def test_inline_workflow_step_takes_the_requests_session_and_a_role():
    hint = hints.parse_inline({"session_id": "s", "workflow_step": {"workflow_id": "w", "agent_id": "a", "role": "coder"}})
    assert hint.workflow_step == hints.WorkflowStep("w", "a", session_id="s", role="coder")
    with pytest.raises(hints.HintError) as e:
        hints.parse_inline({"session_id": "s", "workflow_step": {"workflow_id": "w", "agent_id": "a", "session_id": "t"}})
    assert e.value.status == 400 and "request's session" in e.value.reason
    with pytest.raises(hints.HintError) as e:
        hints.parse_workflow_step({"workflow_id": "w", "agent_id": "a", "role": ""})
    assert e.value.status == 400 and "role" in e.value.reason
