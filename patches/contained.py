"""Every hook is registered through here, so no exception of ours reaches SGLang's scheduler.

SGLang runs a hook inline in its event loop; an exception escaping one kills the scheduler and
every request on the server with it. A contained hook that fails is reported to the process's
agent backend (counted in `internal_errors`, logged once, agent behaviour stopped after repeated
failures) and SGLang goes on as if the hook were not there:
- AFTER: upstream's result is returned unchanged;
- BEFORE: the call proceeds with its original arguments;
- AROUND: if our code failed before calling upstream, upstream is called as is; if it failed after,
  upstream's result is returned. An exception raised by upstream itself passes through untouched
  (it is SGLang's to handle, not ours to swallow)."""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable

from sglang.srt.plugins.hook_registry import HookRegistry, HookType

from sglang_agent.patches.backend_ref import PROCESS

logger = logging.getLogger(__name__)
_UPSTREAM = "_sglang_agent_upstream_raised"


def report(name: str, error: Exception) -> None:
    backend = PROCESS["backend"]
    if backend is not None:
        backend.hook_failed(name, error)
    else:  # a process without an agent backend (HTTP server, detokenizer): log it
        logger.exception("sglang-agent: hook %s failed; SGLang goes on without it", name)


def _with_fallback(fn: Callable, name: str, fallback: Callable[[tuple], Any]) -> Callable:
    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            report(name, e)
            return fallback(args)
    return call


def contain(fn: Callable, hook_type: HookType, name: str) -> Callable:
    if hook_type == HookType.AFTER:  # called as fn(result, *args): upstream's result stands
        return _with_fallback(fn, name, lambda args: args[0])
    if hook_type == HookType.BEFORE:  # None: the call goes on with its own arguments
        return _with_fallback(fn, name, lambda args: None)
    if hook_type == HookType.AROUND:
        @functools.wraps(fn)
        def around(original, *args, **kwargs):
            done = []

            def upstream(*a, **k):
                try:
                    value = original(*a, **k)
                except BaseException as e:
                    setattr(e, _UPSTREAM, True)
                    raise
                done.append(value)
                return value

            try:
                return fn(upstream, *args, **kwargs)
            except Exception as e:
                if getattr(e, _UPSTREAM, False):
                    raise
                report(name, e)
                return done[-1] if done else original(*args, **kwargs)
        return around
    raise ValueError(f"a hook of type {hook_type} cannot be contained")


def register_hook(target: str, fn: Callable, hook_type: HookType) -> None:
    """HookRegistry.register, with the hook contained."""
    HookRegistry.register(target, contain(fn, hook_type, f"hook:{target.rsplit('.', 2)[-2]}.{fn.__name__}"),
                          hook_type)
