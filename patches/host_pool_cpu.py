"""Hook: pool_host.common._cuda_host_register (AROUND) — HiCache's host pool on a machine without
CUDA. Upstream registers the host pool with cudaHostRegister and fails on a CPU-only torch
("Torch not compiled with CUDA enabled"); without CUDA the pool is plain host memory, which is
all the CPU server (and CI) needs. With CUDA, upstream runs unchanged."""

import logging

from sglang.srt.plugins.hook_registry import HookType

from sglang_agent.patches.contained import register_hook
from sglang_agent.patches._version import check_sglang_version

TARGET = "sglang.srt.mem_cache.pool_host.common._cuda_host_register"
logger = logging.getLogger(__name__)


def _around_register(original, buffer, *args, **kwargs):
    import torch

    if torch.cuda.is_available():
        return original(buffer, *args, **kwargs)
    logger.info("HiCache host pool of %.1f MiB left unregistered: no CUDA here",
                buffer.numel() * buffer.element_size() / 2**20)
    return None


def register() -> None:
    check_sglang_version()
    register_hook(TARGET, _around_register, HookType.AROUND)
