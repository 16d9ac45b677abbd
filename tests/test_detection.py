"""Tool-call turns recognised from the server's answer (sglang_agent/server/detection.py): parsed
tool_calls (whole JSON and SSE), a forced tool_choice without a parser, a text pattern, and what is
not a tool call."""

import json
import re

from sglang_agent.server.detection import TurnObserver

TOOLS = [{"type": "function", "function": {"name": "bash", "parameters": {}}}]


def observe(path, payload, body, stream=False, pattern=None):
    obs = TurnObserver(path, payload, re.compile(pattern) if pattern else None, stream)
    if stream:
        for event in body:
            data = b"data: " + (event if isinstance(event, bytes) else json.dumps(event).encode()) + b"\n\n"
            for i in range(0, len(data), 7):  # in pieces, as a socket delivers them
                obs.feed(data[i:i + 7])
    else:
        obs.feed(json.dumps(body).encode())
    return obs.tools_called()


def test_parsed_tool_calls_in_a_chat_answer_and_its_stream():
    answer = {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "content": None, "tool_calls": [{"id": "1", "function": {"name": "bash", "arguments": "{}"}},
                                        {"id": "2", "function": {"name": "grep", "arguments": "{}"}}]}}]}
    assert observe("/v1/chat/completions", {"tools": TOOLS}, answer) == ["bash", "grep"]
    events = [{"choices": [{"index": 0, "delta": {"role": "assistant"}}]},
              {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"name": "bash"}}]}}]},
              {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]},
                            "finish_reason": "tool_calls"}]}, b"[DONE]"]
    assert observe("/v1/chat/completions", {"tools": TOOLS, "stream": True}, events, stream=True) == ["bash"]


def test_a_forced_tool_choice_is_a_tool_call_even_as_text():
    text = '[{"name": "bash", "parameters": {"cmd": "ls"}}]'
    answer = {"choices": [{"index": 0, "finish_reason": "stop", "message": {"content": text}}]}
    assert observe("/v1/chat/completions", {"tools": TOOLS, "tool_choice": "required"}, answer) == ["bash"]
    named = {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "bash"}}}
    garbled = {"choices": [{"index": 0, "message": {"content": "not json"}}]}
    assert observe("/v1/chat/completions", named, garbled) == ["bash"]
    assert observe("/v1/chat/completions", {"tools": TOOLS, "tool_choice": "required"}, garbled) == [""]


def test_plain_answers_are_no_tool_call():
    answer = {"choices": [{"index": 0, "finish_reason": "stop", "message": {"content": "the weather is fine"}}]}
    assert observe("/v1/chat/completions", {"tools": TOOLS}, answer) is None
    assert observe("/v1/chat/completions", {}, answer) is None
    assert observe("/v1/chat/completions", {"tools": TOOLS}, {"error": "boom"}) is None


def test_text_agents_by_pattern_on_completions_and_generate():
    fence = r"```bash\n(?P<tool>\S+)"
    completion = {"choices": [{"index": 0, "text": "THOUGHT: list files\n```bash\nls -la\n```"}]}
    assert observe("/v1/completions", {}, completion, pattern=fence) == ["ls"]
    react = r"Action: (?P<tool>\w+)"
    assert observe("/generate", {}, {"text": "Thought: search\nAction: search[x]"}, pattern=react) == ["search"]
    assert observe("/generate", {}, {"text": "Final Answer: 42"}, pattern=react) is None
    events = [{"text": "Action: se"}, {"text": "Action: search[x]"}]  # /generate streams the text so far
    assert observe("/generate", {"stream": True}, events, stream=True, pattern=react) == ["search"]
    stream = [{"choices": [{"index": 0, "text": "```ba"}]}, {"choices": [{"index": 0, "text": "sh\ncat f"}]}]
    assert observe("/v1/completions", {"stream": True}, stream, stream=True, pattern=fence) == ["cat"]
    assert observe("/v1/completions", {}, completion) is None  # no pattern configured
