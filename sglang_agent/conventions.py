"""What clients already send, read as our hints (pure): session keys, prompt-cache conventions and
Dynamo's agent hints. A bad value is a HintError (400) like any hint of ours, and changes nothing.

| client convention | our hint |
|---|---|
| `agent.session_id` (ours) | the session |
| header `X-Session-Id` | the session |
| OpenAI `prompt_cache_key` | the session |
| Continuum's `job_id` (its vLLM fork's `extra_body`) | the session; `is_last_step: true` closes it after this turn |
| OpenAI `safety_identifier`, then `user` | the session (a user's requests share one) |
| Anthropic `cache_control: {"type": "ephemeral", "ttl": "5m" / "1h" / seconds}`, on the request or on a message (or a message's content part) | pin the turn's prefix for that TTL after the turn (within the pin cap and the running requests' memory) |
| Dynamo `nvext.cache_control` (same shape) | as `cache_control` |
| Dynamo `nvext.agent_hints.priority` | SGLang's request `priority` (honoured with --enable-priority-scheduling) |
| Dynamo `nvext.agent_hints.osl`, `latency_sensitivity`, `speculative_prefill` | validated; not used |

The first key found, in that order, names the session; with none, the server finds the session
by itself (implicit sessions: the request's prompt extends a session's cached path).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Optional

from sglang_agent.hints import MAX_FIXED_TTL_S, MAX_ID_CHARS, HintError

SESSION_HEADER = b"x-session-id"
ANTHROPIC_TTLS = {"5m": 300.0, "1h": 3600.0}
MAX_CACHE_TTL_S = MAX_FIXED_TTL_S  # the limit of an explicit ttl_s: Anthropic's longest (Dynamo clamps to 1 h too)
# Body fields that /generate (a dataclass) would refuse; the chat and completions models ignore them.
CONVENTION_FIELDS = ("job_id", "is_last_step", "cache_control", "nvext", "prompt_cache_key", "safety_identifier")


@dataclass(frozen=True)
class ClientHints:
    session_id: Optional[str] = None
    session_source: Optional[str] = None  # which convention named it
    cache_ttl_s: Optional[float] = None  # pin the turn's prefix this long after the turn
    close_after_turn: bool = False  # Continuum's is_last_step
    priority: Optional[int] = None  # Dynamo agent_hints.priority -> SGLang's request priority

    @property
    def any(self) -> bool:
        return self.session_id is not None or self.cache_ttl_s is not None or self.close_after_turn


def _key(value: Any, where: str) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise HintError(400, f"'{where}' must be a string")
    value = str(value)
    if not value.strip():
        return None
    if len(value) > MAX_ID_CHARS:
        raise HintError(400, f"'{where}' is longer than {MAX_ID_CHARS} characters")
    return value


def session_key(payload: dict, headers: dict[bytes, bytes]) -> tuple[Optional[str], Optional[str]]:
    """(session id, the convention that named it): agent.session_id, X-Session-Id, prompt_cache_key,
    job_id, safety_identifier, user. Namespaced by convention, so a user id never meets a job id."""
    agent = payload.get("agent")
    if isinstance(agent, dict) and agent.get("session_id") is not None:
        return agent["session_id"], "agent"
    header = headers.get(SESSION_HEADER)
    if header is not None:
        try:
            value = _key(header.decode(), "X-Session-Id")
        except UnicodeDecodeError:
            raise HintError(400, "'X-Session-Id' must be UTF-8") from None
        if value:
            return value, "header"
    for field, prefix in (("prompt_cache_key", "cache-key"), ("job_id", "job"), ("safety_identifier", "user"),
                          ("user", "user")):
        value = _key(payload.get(field), field)
        if value:
            return f"{prefix}:{value}", field
    return None, None


def parse_ttl(value: Any, where: str) -> float:
    if value is None:
        return ANTHROPIC_TTLS["5m"]  # Anthropic's default
    if isinstance(value, str):
        if value in ANTHROPIC_TTLS:
            return ANTHROPIC_TTLS[value]
        match = re.fullmatch(r"(\d+)([smh]?)", value.strip())
        if not match:
            raise HintError(400, f"{where}.ttl must be \"5m\", \"1h\" or a number of seconds, got {value!r}")
        value = float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise HintError(400, f"{where}.ttl must be \"5m\", \"1h\" or a number of seconds")
    value = float(value)
    if not math.isfinite(value) or value <= 0 or value > MAX_CACHE_TTL_S:
        raise HintError(400, f"{where}.ttl must be in (0, {MAX_CACHE_TTL_S:.0f}] seconds, got {value}")
    return value


def _cache_control(value: Any, where: str) -> Optional[float]:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise HintError(400, f"{where} must be an object like {{\"type\": \"ephemeral\", \"ttl\": \"5m\"}}")
    unknown = sorted(set(value) - {"type", "ttl"})
    if unknown:
        raise HintError(400, f"{where}: unknown field(s) {unknown}")
    if value.get("type") != "ephemeral":
        raise HintError(400, f"{where}.type must be \"ephemeral\", got {value.get('type')!r}")
    return parse_ttl(value.get("ttl"), where)


def _message_cache_controls(payload: dict) -> list[float]:
    ttls = []
    messages = payload.get("messages")
    if not isinstance(messages, list):
        return ttls
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        ttl = _cache_control(message.get("cache_control"), f"messages[{i}].cache_control")
        if ttl is not None:
            ttls.append(ttl)
        content = message.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                if isinstance(part, dict):
                    ttl = _cache_control(part.get("cache_control"), f"messages[{i}].content[{j}].cache_control")
                    if ttl is not None:
                        ttls.append(ttl)
    return ttls


def parse_nvext(payload: dict) -> tuple[Optional[float], Optional[int]]:
    """(cache TTL, priority) from Dynamo's `nvext`; other agent hints are validated only."""
    nvext = payload.get("nvext")
    if nvext is None:
        return None, None
    if not isinstance(nvext, dict):
        raise HintError(400, "nvext must be an object")
    ttl = _cache_control(nvext.get("cache_control"), "nvext.cache_control")
    hints = nvext.get("agent_hints")
    priority = None
    if hints is not None:
        if not isinstance(hints, dict):
            raise HintError(400, "nvext.agent_hints must be an object")
        unknown = sorted(set(hints) - {"priority", "osl", "latency_sensitivity", "speculative_prefill"})
        if unknown:
            raise HintError(400, f"nvext.agent_hints: unknown field(s) {unknown}")
        priority = hints.get("priority")
        if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
            raise HintError(400, "nvext.agent_hints.priority must be an integer")
        osl = hints.get("osl")
        if osl is not None and (isinstance(osl, bool) or not isinstance(osl, int) or osl <= 0):
            raise HintError(400, "nvext.agent_hints.osl must be a positive integer")
        sensitivity = hints.get("latency_sensitivity")
        if sensitivity is not None and (isinstance(sensitivity, bool) or not isinstance(sensitivity, (int, float))
                                        or not math.isfinite(sensitivity)):
            raise HintError(400, "nvext.agent_hints.latency_sensitivity must be a number")
        if hints.get("speculative_prefill") is not None and not isinstance(hints["speculative_prefill"], bool):
            raise HintError(400, "nvext.agent_hints.speculative_prefill must be true or false")
    return ttl, priority


def read_client_hints(payload: dict, headers: dict[bytes, bytes]) -> ClientHints:
    """Every convention of the table above in one body; raises HintError for a bad value."""
    session_id, source = session_key(payload, headers)
    ttls = [t for t in (_cache_control(payload.get("cache_control"), "cache_control"),) if t is not None]
    ttls += _message_cache_controls(payload)
    nv_ttl, priority = parse_nvext(payload)
    if nv_ttl is not None:
        ttls.append(nv_ttl)
    last = payload.get("is_last_step")
    if last is not None and not isinstance(last, bool):
        raise HintError(400, "'is_last_step' must be true or false")
    return ClientHints(session_id, source, max(ttls) if ttls else None, bool(last), priority)
