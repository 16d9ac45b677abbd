"""The package's shape, checked statically: no import cycle (TYPE_CHECKING and function-level
imports count), layers import one way (policy <- tree mechanism <- controller <- server wiring),
the pure layers import nothing of SGLang, and no private (underscored) SGLang name is used outside
the one adapter module, sglang_agent/upstream.py."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Where each importable name lives (setup.py maps patches/ and triton_kernels/ into the package).
PACKAGES = {"sglang_agent": ROOT / "sglang_agent", "sglang_agent.patches": ROOT / "patches",
            "sglang_agent.kernels": ROOT / "triton_kernels"}
ADAPTER = "sglang_agent.upstream"

PURE = 0  # decisions: no SGLang, no I/O
MECHANISM = 1  # the tree, its host tier and copy engine, the adapter
CONTROLLER = 2
WIRING = 3


def layer(module: str) -> int:
    if module in ("sglang_agent", "sglang_agent.version", "sglang_agent.hints", "sglang_agent.config") or \
            module.startswith("sglang_agent.policy"):
        return PURE
    if module.startswith(("sglang_agent.cache", "sglang_agent.kernels")) or module == ADAPTER:
        return MECHANISM
    if module.startswith("sglang_agent.controller"):
        return CONTROLLER
    return WIRING


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts]) if parts else package
            if package == "sglang_agent" and (parts[:1] in (["patches"], ["kernels"])):
                continue
            found[name] = path
    return found


def imports_of(name: str, path: Path) -> set[str]:
    """Every sglang_agent module `path` imports, at any depth of the file."""
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.add(module)
            out.update(f"{module}.{a.name}" for a in node.names)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: {m for m in imports_of(name, path) if m in mods and m != name} for name, path in mods.items()}


def test_no_import_cycle(graph):
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert len(graph) > 30  # the walk saw the package


def test_layers_import_one_way(graph):
    wrong = [(a, b) for a, deps in graph.items() for b in deps
             if layer(b) > layer(a) and not (a == "sglang_agent" or b == "sglang_agent")]
    assert not wrong, "upward imports (policy <- mechanism <- controller <- wiring): " + repr(sorted(wrong))


def test_policy_and_controller_import_nothing_of_sglang():
    for name, path in modules().items():
        if layer(name) in (PURE, CONTROLLER) and name != "sglang_agent.version":
            sglang = sorted(m for m in imports_of(name, path) if m == "sglang" or m.startswith("sglang."))
            assert not sglang, f"{name} imports {sglang}"


def _upstream_private_names() -> set[str]:
    """Underscored (not dunder) names SGLang's runtime defines: methods, functions, classes, and
    attributes assigned on objects."""
    root = Path(importlib.util.find_spec("sglang").origin).parent / "srt"
    names = set()
    for path in root.rglob("*.py"):
        try:
            tree = ast.parse(path.read_text(errors="replace"))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def _own_names(tree: ast.Module) -> set[str]:
    """Names a module of ours defines itself (its classes' methods and attributes)."""
    own = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            own.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            own.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            own.add(node.id)
    return own


def test_no_private_sglang_name_outside_the_adapter():
    upstream_private = _upstream_private_names()
    assert {"_node_arena", "_demote", "_split_node", "_dispatch_to_scheduler"} <= upstream_private
    ours = {n for path in modules().values() for n in _own_names(ast.parse(path.read_text()))}
    offenders = []
    for name, path in modules().items():
        if name == ADAPTER:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in upstream_private:
                # Ours if one of our modules defines it and it is not (also) an upstream method we call.
                if node.attr in ours and not _is_upstream_call(node):
                    continue
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: .{node.attr}")
            if isinstance(node, ast.ImportFrom) and node.module and (node.module == "sglang" or node.module.startswith("sglang.")):
                offenders += [f"{path.relative_to(ROOT)}:{node.lineno}: import {a.name}" for a in node.names
                              if a.name.startswith("_") and not a.name.startswith("__")]
    assert not offenders, "private SGLang names outside sglang_agent/upstream.py:\n" + "\n".join(offenders)


def _is_upstream_call(node: ast.Attribute) -> bool:
    """`super()._x(...)`: a private upstream method called through the parent class."""
    value = node.value
    return isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "super"
