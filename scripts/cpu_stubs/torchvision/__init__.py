"""CPU-path import stand-in for torchvision (see scripts/cpu_stubs/README.md). Not torchvision.

Any `torchvision.*` submodule imports; any name in it is a placeholder that raises when called.
"""

import enum
import importlib.abc
import importlib.machinery
import sys
import types

__version__ = "0.0.0+sglang-agent-cpu-stub"
IS_SGLANG_AGENT_STUB = True


class InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BOX = "box"
    HAMMING = "hamming"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    LANCZOS = "lanczos"


class _UnavailableMeta(type):
    def __getattr__(cls, name):
        return cls


class _Unavailable(metaclass=_UnavailableMeta):
    def __init__(self, *_args, **_kwargs):
        raise RuntimeError("torchvision is a CPU-path import stand-in; image ops are unavailable")


def _module_getattr(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return InterpolationMode if name == "InterpolationMode" else _Unavailable


__getattr__ = _module_getattr


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith(__name__ + "."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []
        module.__getattr__ = _module_getattr
        return module

    def exec_module(self, module):
        pass


sys.meta_path.insert(0, _StubFinder())
