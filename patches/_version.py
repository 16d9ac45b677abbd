"""The one SGLang version the hooks were written against (sglang_agent/version.py)."""

from sglang_agent.version import SGLangVersionError, check_sglang_version  # noqa: F401
