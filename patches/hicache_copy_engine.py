"""Hook: MHATokenToKVPoolHost.backup_from_device_all_layer / load_to_device_per_layer (AROUND):
with `--agent-copy-engine triton`, our batched Triton kernel (torch reference without a GPU)
becomes HiCache's copy engine for MHA pools in the layer_first layout with `--hicache-io-backend
kernel`; any other pool, layout or io backend, and the default engine, go to upstream unchanged
(sglang_agent/cache/host_copy.py decides). A failure of ours is counted, turns our engine off for
that pool, and the copy is redone by upstream's."""

from sglang.srt.plugins.hook_registry import HookType

from sglang_agent.patches.backend_ref import PROCESS, of_scheduler
from sglang_agent.patches.contained import register_hook
from sglang_agent.patches._version import check_sglang_version

POOL = "sglang.srt.mem_cache.pool_host.mha.MHATokenToKVPoolHost"


def _ours(pool, io_backend) -> bool:
    from sglang_agent.cache import host_copy

    return not getattr(pool, "agent_copy_failed", False) and host_copy.engine_applies(pool, io_backend)


def _failed(pool, error: Exception) -> None:
    pool.agent_copy_failed = True
    backend = PROCESS["backend"]
    if backend is not None:
        backend._internal_error("copy_engine", error, None)


def _around_backup(original, pool, device_pool, host_indices, device_indices, io_backend):
    from sglang_agent.cache import host_copy

    if _ours(pool, io_backend):
        try:
            return host_copy.backup_all_layers(pool, host_indices, device_indices)
        except Exception as e:
            _failed(pool, e)
    return original(pool, device_pool, host_indices, device_indices, io_backend)


def _around_load(original, pool, device_pool, host_indices, device_indices, layer_id, io_backend, *, is_draft=False):
    from sglang_agent.cache import host_copy

    if _ours(pool, io_backend):
        if not is_draft and not 0 <= layer_id < pool.target_layer_num:
            return  # as upstream: a draft layer id on the target pool moves nothing
        try:
            return host_copy.load_one_layer(pool, host_indices, device_indices, layer_id)
        except Exception as e:
            _failed(pool, e)
    return original(pool, device_pool, host_indices, device_indices, layer_id, io_backend, is_draft=is_draft)


def register() -> None:
    check_sglang_version()
    register_hook(f"{POOL}.backup_from_device_all_layer", _around_backup, HookType.AROUND)
    register_hook(f"{POOL}.load_to_device_per_layer", _around_load, HookType.AROUND)
