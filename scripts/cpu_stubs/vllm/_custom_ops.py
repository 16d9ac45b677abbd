"""CPU-path import stand-in: SGLang imports these names but never calls them on torch_native."""


def _unavailable(*_args, **_kwargs):
    raise RuntimeError("vllm._custom_ops is a CPU-path import stand-in; no CUDA ops here")


rotary_embedding = _unavailable
rms_norm = _unavailable
fused_add_rms_norm = _unavailable
awq_dequantize = _unavailable


def __getattr__(name):
    return _unavailable
