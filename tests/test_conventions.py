"""Session keys and cache conventions clients already send (sglang_agent/conventions.py): which key
names the session, what a cache_control / nvext means, and bad values refused with 400."""

import pytest

from sglang_agent.conventions import read_client_hints, session_key
from sglang_agent.hints import HintError


def test_session_key_precedence_and_namespaces():
    body = {"agent": {"session_id": "a"}, "prompt_cache_key": "k", "job_id": "j", "user": "u"}
    assert session_key(body, {b"x-session-id": b"h"}) == ("a", "agent")
    del body["agent"]
    assert session_key(body, {b"x-session-id": b"h"}) == ("h", "header")
    assert session_key(body, {}) == ("cache-key:k", "prompt_cache_key")
    del body["prompt_cache_key"]
    assert session_key(body, {}) == ("job:j", "job_id")
    del body["job_id"]
    assert session_key({**body, "safety_identifier": "s"}, {}) == ("user:s", "safety_identifier")
    assert session_key(body, {}) == ("user:u", "user")
    assert session_key({}, {}) == (None, None)
    assert session_key({"job_id": 17}, {}) == ("job:17", "job_id")  # Continuum sends ints too


@pytest.mark.parametrize("cache_control, ttl", [
    ({"type": "ephemeral"}, 300.0), ({"type": "ephemeral", "ttl": "5m"}, 300.0),
    ({"type": "ephemeral", "ttl": "1h"}, 3600.0), ({"type": "ephemeral", "ttl": 90}, 90.0),
    ({"type": "ephemeral", "ttl": "120s"}, 120.0),
])
def test_cache_control_on_the_request_on_a_message_or_a_part_or_in_nvext(cache_control, ttl):
    assert read_client_hints({"cache_control": cache_control}, {}).cache_ttl_s == ttl
    on_message = {"messages": [{"role": "system", "content": "x", "cache_control": cache_control}]}
    assert read_client_hints(on_message, {}).cache_ttl_s == ttl
    on_part = {"messages": [{"role": "user", "content": [{"type": "text", "text": "x", "cache_control": cache_control}]}]}
    assert read_client_hints(on_part, {}).cache_ttl_s == ttl
    assert read_client_hints({"nvext": {"cache_control": cache_control}}, {}).cache_ttl_s == ttl


@pytest.mark.parametrize("body", [
    {"cache_control": {"type": "persistent"}}, {"cache_control": {"type": "ephemeral", "ttl": "1d"}},
    {"cache_control": {"type": "ephemeral", "ttl": -5}}, {"cache_control": {"type": "ephemeral", "ttl": 7200}},
    {"cache_control": {"type": "ephemeral", "ttl": True}}, {"cache_control": "ephemeral"},
    {"cache_control": {"type": "ephemeral", "scope": "x"}},
    {"messages": [{"role": "user", "content": "x", "cache_control": {"type": "ephemeral", "ttl": "2h"}}]},
    {"nvext": []}, {"nvext": {"agent_hints": {"priority": "high"}}}, {"nvext": {"agent_hints": {"osl": 0}}},
    {"nvext": {"agent_hints": {"osl": 1.5}}}, {"nvext": {"agent_hints": {"latency_sensitivity": "x"}}},
    {"nvext": {"agent_hints": {"speculative_prefill": 1}}}, {"nvext": {"agent_hints": {"unknown": 1}}},
    {"is_last_step": "yes"}, {"job_id": ["a"]}, {"prompt_cache_key": "x" * 300},
])
def test_bad_values_are_400(body):
    with pytest.raises(HintError) as e:
        read_client_hints(body, {})
    assert e.value.status == 400


def test_nvext_agent_hints_and_continuums_last_step():
    hints = read_client_hints({"job_id": "j", "is_last_step": True,
                               "nvext": {"agent_hints": {"priority": 3, "osl": 256, "latency_sensitivity": 0.5}}}, {})
    assert hints.session_id == "job:j" and hints.close_after_turn and hints.priority == 3
    assert hints.cache_ttl_s is None
