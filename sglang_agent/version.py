"""The one SGLang release sglang-agent is written against, and the check every upstream-facing
module (patches/, upstream.py) runs before touching SGLang."""

from __future__ import annotations

from sglang_agent import SGLANG_VERSION


class SGLangVersionError(RuntimeError):
    pass


def check_sglang_version() -> None:
    import sglang

    found = getattr(sglang, "__version__", "unknown")
    if found != SGLANG_VERSION:
        raise SGLangVersionError(
            f"sglang-agent's patches are written for sglang=={SGLANG_VERSION}, found {found}. "
            f"Install sglang=={SGLANG_VERSION} (bash scripts/setup.sh) or port patches/ and sglang_agent/upstream.py."
        )
