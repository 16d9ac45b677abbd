"""Hint API on SGLang's own HTTP server (same port).

Routes: POST /agent/tool_start, /agent/tool_end, /agent/session/close, /agent/workflow,
/agent/workflow/step; GET /agent/stats.
Inline: an `agent` object in the body of /generate, /v1/chat/completions or /v1/completions
(the OpenAI client's `extra_body`) binds that request to a session, optionally declaring that
the turn ends in a tool call. Bad hints get a 4xx with a JSON reason and change no state.

Hints travel to the scheduler on the socket requests take (so a bind is there before its
request), many at once: each carries an id its answer comes back with (`HintChannel`). With
`--dp-size > 1` a session belongs to one DP rank (a stable hash of its id): its requests are
routed there (SGLang's `routed_dp_rank`) and its hints go only there."""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import re
import uuid
import zlib
from typing import Optional

from starlette.requests import Request
from starlette.responses import JSONResponse

from sglang_agent import conventions, hints, upstream
from sglang_agent.server import detection
from sglang_agent.server.messages import SESSION_HINT_KINDS, AgentHintReqInput, AgentHintReqOutput

INLINE_PATHS = ("/generate", "/v1/chat/completions", "/v1/completions")
HINT_TIMEOUT_S = 60.0


class HintChannel:
    """Many hints in flight between the HTTP process and the scheduler(s); answers matched by id."""

    def __init__(self, tokenizer_manager, dp_size: int):
        self.tokenizer_manager = tokenizer_manager
        self.dp_size = max(1, dp_size)
        self.ids = itertools.count(1)
        self.pending: dict[int, tuple[asyncio.Future, list, int]] = {}
        upstream.add_tokenizer_result_handler(tokenizer_manager, AgentHintReqOutput, self.on_answer)

    def dp_rank(self, session_id: Optional[str]) -> int:
        if self.dp_size == 1 or not session_id:
            return -1
        return zlib.crc32(session_id.encode()) % self.dp_size

    def send(self, kind: str, body: dict, rid: Optional[str] = None) -> asyncio.Future:
        session_id = body.get("session_id") if isinstance(body, dict) else None
        dp_rank = self.dp_rank(session_id) if kind in SESSION_HINT_KINDS else -1
        hint_id = next(self.ids)
        future = asyncio.get_running_loop().create_future()
        self.pending[hint_id] = (future, [], 1 if dp_rank >= 0 or self.dp_size == 1 else self.dp_size)
        self.tokenizer_manager.auto_create_handle_loop()
        upstream.send_to_scheduler(self.tokenizer_manager, AgentHintReqInput(
            rid=rid, kind=kind, body_json=json.dumps(body), hint_id=hint_id, dp_rank=dp_rank))
        return future

    def on_answer(self, out: AgentHintReqOutput) -> None:
        entry = self.pending.get(out.hint_id)
        if entry is None:
            return
        future, answers, expected = entry
        answers.append(out)
        if len(answers) >= expected:
            del self.pending[out.hint_id]
            if not future.done():
                future.set_result(answers)

    async def call(self, kind: str, body: dict, rid: Optional[str] = None) -> tuple[int, dict]:
        future = self.send(kind, body, rid)
        # A timer, not asyncio.wait_for: no task per hint on the HTTP process's event loop.
        timer = asyncio.get_running_loop().call_later(
            HINT_TIMEOUT_S, lambda: future.done() or future.set_exception(asyncio.TimeoutError()))
        try:
            answers = await future
        except asyncio.TimeoutError:
            return 504, {"error": f"the scheduler did not answer the {kind} hint within {HINT_TIMEOUT_S:.0f} s",
                         "status": 504}
        finally:
            timer.cancel()
        return merge_answers(kind, answers)


def merge_answers(kind: str, answers: list[AgentHintReqOutput]) -> tuple[int, dict]:
    """One answer per DP rank that got the hint: the worst status wins; stats are summed."""
    worst = max(answers, key=lambda out: out.status)
    if kind != "stats" or len(answers) == 1 or worst.status != 200:
        return worst.status, json.loads(worst.body_json)
    return 200, sum_stats([json.loads(a.body_json) for a in answers])


def sum_stats(snapshots: list[dict]) -> dict:
    """/agent/stats over DP ranks: counts add up (nested ones too); ratios are recomputed, labels
    taken once; `per_dp_rank` keeps each rank's sessions, pins and pinned tokens."""
    total = _add_up(snapshots)
    if total.get("resumed_turns"):
        total["hit_rate_after_tool_calls"] = total["resumed_turns_with_hit"] / total["resumed_turns"]
    total["dp_ranks"] = len(snapshots)
    total["per_dp_rank"] = sorted(({k: snap.get(k) for k in ("dp_rank", "sessions", "pins", "pinned_tokens")}
                                   for snap in snapshots), key=lambda r: r["dp_rank"] if r["dp_rank"] is not None else -1)
    return total


def _add_up(snapshots: list[dict]) -> dict:
    total: dict = {}
    for snap in snapshots:
        for key, value in snap.items():
            if key == "dp_rank" or isinstance(value, bool) or not isinstance(value, (int, float, dict)):
                total.setdefault(key, value)
            elif isinstance(value, dict):
                total[key] = _add_up([total[key], value]) if key in total else dict(value)
            else:
                total[key] = total.get(key, 0) + value
    total.pop("dp_rank", None)
    return total


def channel() -> HintChannel:
    from sglang.srt.entrypoints.http_server import get_global_state

    return get_global_state().tokenizer_manager.agent_hint_channel


async def _read_json(request: Request):
    raw = await request.body()
    if len(raw) > hints.MAX_HINT_BODY_BYTES:
        raise hints.HintError(413, f"hint body of {len(raw)} bytes is over the limit of {hints.MAX_HINT_BODY_BYTES}")
    return parse_json(raw)


def parse_json(raw: bytes):
    """JSON that cannot hurt us: malformed, too deep, or numbers too long are a HintError(400)."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise hints.HintError(400, "malformed JSON body: nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, an integer of thousands of digits
        raise hints.HintError(400, f"malformed JSON body: {e}") from None
    if hints.json_depth_exceeds(value):
        raise hints.HintError(400, f"JSON body nested deeper than {hints.MAX_JSON_DEPTH} levels")
    return value


def _route(kind: str, parse):
    async def endpoint(request: Request):
        try:
            body = await _read_json(request) if request.method == "POST" else {}
            parse(body)  # validate before anything crosses to the scheduler
        except hints.HintError as e:
            return JSONResponse(e.to_body(), status_code=e.status)
        status, answer = await channel().call(kind, body)
        return JSONResponse(answer, status_code=status)

    return endpoint


def add_routes(app) -> None:
    app.add_api_route("/agent/tool_start", _route("tool_start", hints.parse_tool_start), methods=["POST"])
    app.add_api_route("/agent/tool_end", _route("tool_end", lambda b: hints.parse_session_ref(b, "tool_end")),
                      methods=["POST"])
    app.add_api_route("/agent/session/close",
                      _route("close", lambda b: hints.parse_session_ref(b, "session/close")), methods=["POST"])
    app.add_api_route("/agent/workflow", _route("workflow", hints.parse_workflow), methods=["POST"])
    app.add_api_route("/agent/workflow/step", _route("workflow_step", hints.parse_workflow_step), methods=["POST"])
    app.add_api_route("/agent/stats", _route("stats", lambda b: None), methods=["GET"])
    app.add_middleware(InlineHintMiddleware)


def _request_rid(payload: dict) -> str:
    rid = payload.get("rid")
    if rid is None:
        return uuid.uuid4().hex
    if not isinstance(rid, str) or not rid:
        raise hints.HintError(400, "with an agent hint, 'rid' must be one non-empty string")
    return rid


@functools.lru_cache(maxsize=1)
def _detection() -> tuple[bool, Optional[re.Pattern]]:
    """(recognise tool calls in answers?, the text pattern) from the --agent-* args."""
    from sglang_agent.config import AgentServerArgs

    args = AgentServerArgs.from_env()
    return args.detect_tool_calls, (re.compile(args.tool_call_pattern) if args.tool_call_pattern else None)


class InlineHintMiddleware:
    """Pure ASGI middleware on the inference routes.

    Before SGLang sees a body it refuses what would make SGLang answer 500 (malformed `n`, JSON too
    deep or numbers too long), reads the session the client names (our `agent` object, or a
    convention clients already speak: sglang_agent/conventions.py) and binds the request to it
    (the object is stripped). While the answer goes out it watches it for a tool call (detection.py:
    zero-hint agents); when the exchange is over it tells the scheduler what the turn called (and a
    cache_control TTL), and that a bound request it never received (SGLang refused it, or the client
    went away first) is gone, so no session waits for it forever."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in INLINE_PATHS:
            return await self.app(scope, receive, send)
        path = scope["path"]
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        raw = b"".join(chunks)
        forwarded, bound_rid, agent_body, observer, client, single = raw, None, None, None, None, False
        try:
            payload = parse_json(raw) if raw else None
            if isinstance(payload, dict):
                single = hints.check_inference_body(path, payload, with_agent="agent" in payload)
                single = single and isinstance(payload.get("rid"), (str, type(None)))
                client = conventions.read_client_hints(payload, dict(scope["headers"]))
        except hints.HintError as e:
            return await JSONResponse(e.to_body(), status_code=e.status)(scope, receive, send)
        rid = None
        if single:
            detect, pattern = _detection()
            agent_body = payload.pop("agent", None)
            if agent_body is None and client.session_id is not None:
                agent_body = {"session_id": client.session_id}
            if isinstance(agent_body, dict) and client.close_after_turn:
                agent_body = {**agent_body, "close_after_turn": True}
            if client.priority is not None:
                payload.setdefault("priority", client.priority)
            if path == "/generate":
                for field in conventions.CONVENTION_FIELDS:
                    payload.pop(field, None)  # /generate's request type would refuse them
            if client.cache_ttl_s or (detect and (path == "/v1/chat/completions" or pattern is not None)):
                observer = detection.TurnObserver(path, payload, pattern if detect else None,
                                                  stream=bool(payload.get("stream")), detect=detect)
            if agent_body is not None or observer is not None or client.any:
                try:
                    rid = _request_rid(payload)  # named, so what the turn called can be said of it afterwards
                except hints.HintError as e:
                    return await JSONResponse(e.to_body(), status_code=e.status)(scope, receive, send)
                payload["rid"] = rid
                forwarded = json.dumps(payload).encode()
        if agent_body is not None:
            hub = channel()
            try:
                hint = hints.parse_inline(agent_body)
                dp_rank = hub.dp_rank(hint.session_id)
                if dp_rank >= 0:
                    if payload.get("routed_dp_rank") not in (None, dp_rank):
                        raise hints.HintError(400, f"session {hint.session_id!r} lives on DP rank {dp_rank}, "
                                                   f"not {payload['routed_dp_rank']}")
                    payload["routed_dp_rank"] = dp_rank
            except hints.HintError as e:
                return await JSONResponse(e.to_body(), status_code=e.status)(scope, receive, send)
            if dp_rank >= 0 and hint.workflow_step is not None:
                # Workflows live on every DP rank; the step goes to all of them, the bind to one.
                step = {**agent_body.pop("workflow_step"), "session_id": hint.session_id}  # undeclared: learned
                status, answer = await hub.call("workflow_step", step)
                if status != 200:
                    return await JSONResponse(answer, status_code=status)(scope, receive, send)
            status, answer = await hub.call("bind", agent_body, rid=rid)
            if status != 200:
                return await JSONResponse(answer, status_code=status)(scope, receive, send)
            bound_rid = rid
            forwarded = json.dumps(payload).encode()

        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": forwarded, "more_body": False}
            return await receive()

        answered = {"status": None}
        session_id = agent_body.get("session_id") if isinstance(agent_body, dict) else None

        async def watch(message):
            if message["type"] == "http.response.start":
                answered["status"] = message["status"]
            elif message["type"] == "http.response.body" and answered["status"] == 200:
                observer.feed(message.get("body", b""))
                if not message.get("more_body", False):
                    # Before the client sees the end of the answer (and sends its next turn), on the
                    # socket requests take: the next turn finds the tool call started.
                    tools = observer.tools_called()
                    if tools or client.cache_ttl_s:
                        channel().send("turn_outcome", {"tools": tools or [], "cache_ttl_s": client.cache_ttl_s,
                                                        **({"session_id": session_id} if session_id else {})},
                                       rid=rid)
            await send(message)

        headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
        headers.append((b"content-length", str(len(forwarded)).encode()))
        try:
            await self.app({**scope, "headers": headers}, replay, watch if observer is not None else send)
        finally:
            if bound_rid:
                # Whatever the outcome (answered, refused, client gone): if the scheduler never got the
                # request, the session stops waiting for it. Not awaited; applied in order after it.
                channel().send("gone", {"session_id": session_id}, rid=bound_rid)
