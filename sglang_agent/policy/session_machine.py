"""The agent session state machine, as one total table (pure).

Every (state, event) pair is either a transition (next state + the action the controller runs)
or a refusal (an HTTP status and a reason; nothing changes). `test_session_machine.py` checks
that the table is total and drives the controller against a reference model of it.

States:
- ABSENT: no such session (never seen, closed, or forgotten after being idle). A request that
  names it opens it anew.
- IDLE: no request running, no tool call.
- RUNNING: a turn (one or more requests of the session) is running.
- TOOL_PENDING: a tool call was announced while the turn still runs; it starts when the turn ends.
- IN_TOOL: the tool runs; the session's KV is held for it (pinned, offloaded / being prefetched)
  or was let go (the "drop" placement).
- LAPSED: the tool still runs but its hold ended (pin TTL or host keep time ran out): nothing is
  held any more; a late tool_end or the next turn still records the tool's duration.

Events come from hints (BIND: a request names the session; TOOL_START, TOOL_END, CLOSE), from the
scheduler (TURN_END: the session's last running request finished; TOOL_START also comes from the
server recognising a tool call in the turn's answer, and an explicit tool_start over such a
recognised call is TOOL_RESTART: explicit hints win; TURN_DROPPED: it left without
finishing: aborted queued or running, refused; OPENING_DROPPED when those were the requests that
opened the session, so a refused first request leaves nothing behind), and from the step clock
(HOLD_LAPSED, IDLE_TIMEOUT).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Union


class State(str, Enum):
    ABSENT = "absent"
    IDLE = "idle"
    RUNNING = "running"
    TOOL_PENDING = "tool_pending"
    IN_TOOL = "in_tool"
    LAPSED = "lapsed"


class Event(str, Enum):
    BIND = "bind"
    TURN_END = "turn_end"
    TURN_DROPPED = "turn_dropped"
    OPENING_DROPPED = "opening_dropped"  # ...and it was the session's first: nothing else happened
    TOOL_START = "tool_start"
    TOOL_RESTART = "tool_restart"  # an explicit tool_start over a tool the server only recognised
    TOOL_END = "tool_end"
    CLOSE = "close"
    HOLD_LAPSED = "hold_lapsed"
    IDLE_TIMEOUT = "idle_timeout"


@dataclass(frozen=True)
class Go:
    """Move to `state` and run `action` (a controller method name; "none" changes nothing)."""

    state: State
    action: str


@dataclass(frozen=True)
class Refuse:
    status: int
    reason: str


Outcome = Union[Go, Refuse]
S, E = State, Event
_UNKNOWN = Refuse(404, "unknown session {session!r}: send a request with agent.session_id first")
_NO_TOOL = Refuse(409, "session {session!r} has no tool call in progress (tool_end without tool_start)")
_TOOL_RUNS = Refuse(409, "session {session!r} already has tool {tool!r} running")

TABLE: dict[tuple[State, Event], Outcome] = {
    (S.ABSENT, E.BIND): Go(S.RUNNING, "open"),
    (S.ABSENT, E.TURN_END): Go(S.ABSENT, "none"),
    (S.ABSENT, E.TURN_DROPPED): Go(S.ABSENT, "none"),
    (S.ABSENT, E.OPENING_DROPPED): Go(S.ABSENT, "none"),
    (S.ABSENT, E.TOOL_START): _UNKNOWN,
    (S.ABSENT, E.TOOL_RESTART): _UNKNOWN,
    (S.ABSENT, E.TOOL_END): _UNKNOWN,
    (S.ABSENT, E.CLOSE): _UNKNOWN,
    (S.ABSENT, E.HOLD_LAPSED): Go(S.ABSENT, "none"),
    (S.ABSENT, E.IDLE_TIMEOUT): Go(S.ABSENT, "none"),

    (S.IDLE, E.BIND): Go(S.RUNNING, "begin_turn"),
    (S.IDLE, E.TURN_END): Go(S.IDLE, "none"),
    (S.IDLE, E.TURN_DROPPED): Go(S.IDLE, "none"),
    (S.IDLE, E.OPENING_DROPPED): Go(S.IDLE, "none"),
    # The turn ended before the client announced its tool call: the tool starts now.
    (S.IDLE, E.TOOL_START): Go(S.IN_TOOL, "start_tool"),
    (S.IDLE, E.TOOL_RESTART): Go(S.IN_TOOL, "start_tool"),
    (S.IDLE, E.TOOL_END): _NO_TOOL,
    (S.IDLE, E.CLOSE): Go(S.ABSENT, "close"),
    (S.IDLE, E.HOLD_LAPSED): Go(S.IDLE, "none"),
    (S.IDLE, E.IDLE_TIMEOUT): Go(S.ABSENT, "forget"),

    # Another request of the same session while a turn runs (parallel calls): one more to wait for.
    (S.RUNNING, E.BIND): Go(S.RUNNING, "add_request"),
    (S.RUNNING, E.TURN_END): Go(S.IDLE, "end_turn"),
    (S.RUNNING, E.TURN_DROPPED): Go(S.IDLE, "drop_turn"),
    (S.RUNNING, E.OPENING_DROPPED): Go(S.ABSENT, "discard"),
    (S.RUNNING, E.TOOL_START): Go(S.TOOL_PENDING, "defer_tool"),
    (S.RUNNING, E.TOOL_RESTART): Go(S.TOOL_PENDING, "defer_tool"),
    (S.RUNNING, E.TOOL_END): Refuse(409, "session {session!r}: the turn is still running and no tool call was "
                                         "announced (tool_end without tool_start)"),
    (S.RUNNING, E.CLOSE): Go(S.ABSENT, "close"),
    (S.RUNNING, E.HOLD_LAPSED): Go(S.RUNNING, "none"),
    (S.RUNNING, E.IDLE_TIMEOUT): Go(S.RUNNING, "none"),

    (S.TOOL_PENDING, E.BIND): Go(S.TOOL_PENDING, "add_request"),
    (S.TOOL_PENDING, E.TURN_END): Go(S.IN_TOOL, "start_pending_tool"),
    # The turn never ended in its tool call (aborted, refused): the announced tool is void.
    (S.TOOL_PENDING, E.TURN_DROPPED): Go(S.IDLE, "drop_turn"),
    (S.TOOL_PENDING, E.OPENING_DROPPED): Go(S.ABSENT, "discard"),
    (S.TOOL_PENDING, E.TOOL_START): Refuse(409, "session {session!r} already announced tool {tool!r} for the "
                                                "running turn"),
    # The tool ran and returned while the turn was still generating: nothing to hold after it.
    (S.TOOL_PENDING, E.TOOL_RESTART): Refuse(409, "session {session!r} already announced tool {tool!r} for the "
                                                  "running turn"),
    (S.TOOL_PENDING, E.TOOL_END): Go(S.RUNNING, "cancel_pending_tool"),
    (S.TOOL_PENDING, E.CLOSE): Go(S.ABSENT, "close"),
    (S.TOOL_PENDING, E.HOLD_LAPSED): Go(S.TOOL_PENDING, "none"),
    (S.TOOL_PENDING, E.IDLE_TIMEOUT): Go(S.TOOL_PENDING, "none"),

    # The next turn arriving is the tool's return, announced or not.
    (S.IN_TOOL, E.BIND): Go(S.RUNNING, "resume"),
    (S.IN_TOOL, E.TURN_END): Go(S.IN_TOOL, "none"),
    (S.IN_TOOL, E.TURN_DROPPED): Go(S.IN_TOOL, "none"),
    (S.IN_TOOL, E.OPENING_DROPPED): Go(S.IN_TOOL, "none"),
    (S.IN_TOOL, E.TOOL_START): _TOOL_RUNS,
    (S.IN_TOOL, E.TOOL_RESTART): Go(S.IN_TOOL, "restart_tool"),
    (S.IN_TOOL, E.TOOL_END): Go(S.IDLE, "finish_tool"),
    (S.IN_TOOL, E.CLOSE): Go(S.ABSENT, "close"),
    (S.IN_TOOL, E.HOLD_LAPSED): Go(S.LAPSED, "lapse"),
    # Only sent when nothing is held (a "drop" placement): a tool that never returns is forgotten.
    (S.IN_TOOL, E.IDLE_TIMEOUT): Go(S.ABSENT, "forget"),

    (S.LAPSED, E.BIND): Go(S.RUNNING, "resume"),
    (S.LAPSED, E.TURN_END): Go(S.LAPSED, "none"),
    (S.LAPSED, E.TURN_DROPPED): Go(S.LAPSED, "none"),
    (S.LAPSED, E.OPENING_DROPPED): Go(S.LAPSED, "none"),
    (S.LAPSED, E.TOOL_START): _TOOL_RUNS,
    (S.LAPSED, E.TOOL_RESTART): _TOOL_RUNS,
    (S.LAPSED, E.TOOL_END): Go(S.IDLE, "finish_tool"),
    (S.LAPSED, E.CLOSE): Go(S.ABSENT, "close"),
    (S.LAPSED, E.HOLD_LAPSED): Go(S.LAPSED, "none"),
    (S.LAPSED, E.IDLE_TIMEOUT): Go(S.ABSENT, "forget"),
}


def transition(state: State, event: Event) -> Outcome:
    return TABLE[(state, event)]
