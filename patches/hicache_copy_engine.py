"""Hook: MHATokenToKVPoolHost.backup_from_device_all_layer / load_to_device_per_layer (AROUND):
our batched Triton kernel (torch reference without a GPU) becomes HiCache's copy engine for MHA
pools in the layer_first layout with `--hicache-io-backend kernel`; any other pool, layout or
io backend goes to upstream unchanged (sglang_agent/cache/host_copy.py decides)."""

from sglang.srt.plugins.hook_registry import HookRegistry, HookType

from sglang_agent.patches._version import check_sglang_version

POOL = "sglang.srt.mem_cache.pool_host.mha.MHATokenToKVPoolHost"


def _around_backup(original, pool, device_pool, host_indices, device_indices, io_backend):
    from sglang_agent.cache import host_copy

    if not host_copy.engine_applies(pool, io_backend):
        return original(pool, device_pool, host_indices, device_indices, io_backend)
    host_copy.backup_all_layers(pool, host_indices, device_indices)


def _around_load(original, pool, device_pool, host_indices, device_indices, layer_id, io_backend, *, is_draft=False):
    from sglang_agent.cache import host_copy

    if not host_copy.engine_applies(pool, io_backend):
        return original(pool, device_pool, host_indices, device_indices, layer_id, io_backend, is_draft=is_draft)
    if not is_draft and not 0 <= layer_id < pool.target_layer_num:
        return  # as upstream: a draft layer id on the target pool moves nothing
    host_copy.load_one_layer(pool, host_indices, device_indices, layer_id)


def register() -> None:
    check_sglang_version()
    HookRegistry.register(f"{POOL}.backup_from_device_all_layer", _around_backup, HookType.AROUND)
    HookRegistry.register(f"{POOL}.load_to_device_per_layer", _around_load, HookType.AROUND)
