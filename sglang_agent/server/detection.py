"""Tool-call turns recognised from the server's own answer (pure; no client hint needed).

Continuum decides to keep a turn's KV from the turn's output (it generated a tool call). The HTTP
layer feeds `TurnObserver` the response a request got (whole JSON, or the SSE stream chunk by
chunk) and asks it at the end which tools the turn called:
- chat completions whose answer has `tool_calls` (SGLang's --tool-call-parser parsed them), or,
  with `tool_choice` "required" or a named function, any answer (a forced tool choice is a tool call
  by construction: without a parser SGLang returns the call as text; its name is read from it);
- any endpoint's text matched by `--agent-tool-call-pattern REGEX` (text agents: mini-swe-agent's
  fenced ```bash blocks, ReAct `Action:` lines), the tool name from the group named `tool`.
"""

from __future__ import annotations

import json
import re
from typing import Any, Optional

MAX_TEXT_CHARS = 65_536  # what a pattern is matched against: the answer's tail


def forced_tool(payload: dict) -> Optional[str]:
    """"required" -> "" (some tool), a named function -> its name, else None."""
    choice = payload.get("tool_choice")
    if choice == "required":
        return ""
    if isinstance(choice, dict):
        function = choice.get("function") if isinstance(choice.get("function"), dict) else choice
        name = function.get("name")
        return name if isinstance(name, str) else ""
    return None


def _names_in_json_text(text: str) -> list[str]:
    """Tool names in a JSON tool call written as text ([{"name": ...}] or {"name": ...})."""
    try:
        value = json.loads(text)
    except (ValueError, TypeError):
        return []
    items = value if isinstance(value, list) else [value]
    return [i["name"] for i in items if isinstance(i, dict) and isinstance(i.get("name"), str)]


class TurnObserver:
    def __init__(self, path: str, payload: dict, pattern: Optional[re.Pattern], stream: bool, detect: bool = True):
        self.path = path
        self.pattern = pattern
        self.stream = stream
        self.detect = detect  # off: the answer is read for nothing (a cache_control turn still reports)
        chat_tools = detect and path == "/v1/chat/completions" and payload.get("tools")
        self.forced = forced_tool(payload) if chat_tools else None
        self.tool_names: list[str] = []
        self.text_parts: list[str] = []
        self.text_len = 0
        self._buffer = b""
        self.ok = True

    # ---- feeding -------------------------------------------------------------------------------
    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk
        if not self.stream:
            return
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            line = line.strip()
            if line.startswith(b"data:") and line != b"data: [DONE]":
                self._event(line[5:])

    def _event(self, raw: bytes) -> None:
        try:
            event = json.loads(raw)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        if "error" in event:
            self.ok = False
            return
        self._read(event, delta=True)

    def _read(self, body: dict, delta: bool) -> None:
        if self.path == "/generate":
            # /generate streams the whole text so far (not a delta) unless incremental output is on.
            text = body.get("text")
            if isinstance(text, str):
                self.text_parts = [text[-MAX_TEXT_CHARS:]]
            return
        for choice in body.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            message = choice.get("delta" if delta else "message") or {}
            if self.path == "/v1/completions":
                self._text(choice.get("text"))
                continue
            for call in message.get("tool_calls") or []:
                function = call.get("function") if isinstance(call, dict) else None
                name = function.get("name") if isinstance(function, dict) else None
                if isinstance(name, str) and name and name not in self.tool_names:
                    self.tool_names.append(name)
            self._text(message.get("content"))

    def _text(self, text: Any) -> None:
        if isinstance(text, str) and text:
            self.text_parts.append(text)
            self.text_len += len(text)
            while self.text_len > MAX_TEXT_CHARS and len(self.text_parts) > 1:
                self.text_len -= len(self.text_parts.pop(0))

    # ---- the verdict ---------------------------------------------------------------------------
    def tools_called(self) -> Optional[list[str]]:
        """The tools the turn called (names; "" when unknown), or None: no tool call."""
        if not self.stream and self._buffer:
            try:
                body = json.loads(self._buffer)
            except ValueError:
                return None
            if not isinstance(body, dict) or "error" in body:
                return None
            self._read(body, delta=False)
        if not self.ok or not self.detect:
            return None
        if self.tool_names:
            return self.tool_names
        text = "".join(self.text_parts)
        if self.forced is not None:
            return _names_in_json_text(text) or [self.forced]
        if self.pattern is not None and text:
            found = [m.groupdict().get("tool") or "" for m in self.pattern.finditer(text[-MAX_TEXT_CHARS:])]
            if found:
                return list(dict.fromkeys(found))
        return None
