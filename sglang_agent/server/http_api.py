"""Hint API on SGLang's own HTTP server (same port).

Routes: POST /agent/tool_start, /agent/tool_end, /agent/session/close, /agent/workflow,
/agent/workflow/step; GET /agent/stats.
Inline: an `agent` object in the body of /generate, /v1/chat/completions or /v1/completions
(the OpenAI client's `extra_body`) binds that request to a session, optionally declaring that
the turn ends in a tool call. Bad hints get a 4xx with a JSON reason and change no state."""

from __future__ import annotations

import json
import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse

from sglang_agent.server import hints
from sglang_agent.server.messages import AgentHintReqInput

INLINE_PATHS = ("/generate", "/v1/chat/completions", "/v1/completions")


def _tokenizer_manager():
    from sglang.srt.entrypoints.http_server import get_global_state

    return get_global_state().tokenizer_manager


async def send_hint(kind: str, body: dict, rid: str | None = None) -> tuple[int, dict]:
    manager = _tokenizer_manager()
    manager.auto_create_handle_loop()
    outputs = await manager.agent_hint_communicator.queueing_call(
        AgentHintReqInput(rid=rid, kind=kind, body_json=json.dumps(body))
    )
    # Every DP rank answers the same way; an error from any of them wins.
    worst = max(outputs, key=lambda out: out.status)
    return worst.status, json.loads(worst.body_json)


async def _read_json(request: Request):
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise hints.HintError(400, f"malformed JSON body: {e}") from None


def _route(kind: str, parse):
    async def endpoint(request: Request):
        try:
            body = await _read_json(request) if request.method == "POST" else {}
            parse(body)  # validate before anything crosses to the scheduler
        except hints.HintError as e:
            return JSONResponse(e.to_body(), status_code=e.status)
        status, answer = await send_hint(kind, body)
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


def _single_request_rid(path: str, payload: dict) -> str:
    """The request id the bind refers to; inline hints describe exactly one request."""
    if path == "/generate":
        if isinstance(payload.get("text"), list) or (
            isinstance(payload.get("input_ids"), list) and payload["input_ids"] and isinstance(payload["input_ids"][0], list)
        ):
            raise hints.HintError(400, "agent hints apply to a single request, not a batch")
    elif int(payload.get("n") or 1) != 1:
        raise hints.HintError(400, "agent hints apply to a single completion (n=1)")
    rid = payload.get("rid")
    if rid is None:
        return uuid.uuid4().hex
    if not isinstance(rid, str) or not rid:
        raise hints.HintError(400, "with an agent hint, 'rid' must be one non-empty string")
    return rid


class InlineHintMiddleware:
    """Pure ASGI middleware: strips `agent` from inference bodies after binding the request."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in INLINE_PATHS:
            return await self.app(scope, receive, send)
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        raw = b"".join(chunks)
        forwarded, bound_rid = raw, None
        try:
            payload = json.loads(raw) if raw else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            payload = None  # not ours to judge: SGLang answers malformed bodies itself
        if isinstance(payload, dict) and "agent" in payload:
            try:
                hint_body = payload.pop("agent")
                hints.parse_inline(hint_body)
                rid = _single_request_rid(scope["path"], payload)
            except hints.HintError as e:
                return await JSONResponse(e.to_body(), status_code=e.status)(scope, receive, send)
            status, answer = await send_hint("bind", hint_body, rid=rid)
            if status != 200:
                return await JSONResponse(answer, status_code=status)(scope, receive, send)
            payload["rid"] = bound_rid = rid
            forwarded = json.dumps(payload).encode()

        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": forwarded, "more_body": False}
            return await receive()

        rejected = False

        async def watch(message):
            # A bound request that SGLang refuses (too long, bad sampling params...) never
            # reaches the scheduler's tree: unbind it, or its session would wait for it forever.
            nonlocal rejected
            if message["type"] == "http.response.start" and message["status"] >= 400:
                rejected = True
            await send(message)

        headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
        headers.append((b"content-length", str(len(forwarded)).encode()))
        try:
            await self.app({**scope, "headers": headers}, replay, watch if bound_rid else send)
        finally:
            if rejected and bound_rid:
                await send_hint("unbind", {}, rid=bound_rid)
