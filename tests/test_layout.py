"""The layout the data flow reads in: which package may import which, no cycles, no private names across
modules, settings without torch (docs/architecture.md#layout)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("backend", "cli", "core", "plugins", "stack", "worker")
# who may import whom (besides itself): the data flow, left to right
ALLOWED = {
    "cli": {"backend", "core", "plugins", "stack", "worker"},
    "backend": {"core", "plugins"},
    "worker": {"core", "plugins"},
    "core": {"plugins"},
    "plugins": set(),
    "stack": {"core", "plugins"},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import statement of a file (absolute only)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, [alias.name for alias in node.names], node.lineno))
    return out


def _graph() -> dict[str, set[str]]:
    """Our modules -> the modules of ours each imports (a `from pkg import mod` counts as importing pkg.mod)."""
    files = {_module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        targets = set()
        for module, names, _ in _imports(path):
            if module.split(".")[0] not in PACKAGES:
                continue
            subs = {f"{module}.{n}" for n in names if f"{module}.{n}" in files}
            targets |= subs or {module}
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as a path of modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a"}}) is None


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_imports_only_what_stands_downstream_of_it(package):
    wrong = []
    for path in sorted((REPO / package).rglob("*.py")):
        for module, _, line in _imports(path):
            top = module.split(".")[0]
            if top in PACKAGES and top != package and top not in ALLOWED[package]:
                wrong.append(f"{path.relative_to(REPO)}:{line} imports {module}")
            if top == "tests":
                wrong.append(f"{path.relative_to(REPO)}:{line} imports the tests")
    assert not wrong, wrong


def test_no_import_cycle_in_any_package_even_inside_functions():
    assert _cycle(_graph()) is None, f"import cycle: {' -> '.join(_cycle(_graph()))}"


def test_no_private_name_is_imported_across_modules():
    """`from x import _name` only inside one package's own private modules (plugins/strategies/_badge.py
    may be imported by plugins/strategies/*, never from outside plugins/strategies)."""
    wrong = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            here = _module_name(path).rsplit(".", 1)[0]
            for module, names, line in _imports(path):
                if module.split(".")[0] not in PACKAGES:
                    continue
                private = [n for n in names if n.startswith("_")]
                inside = module.rsplit(".", 1)[0] == here or module == here
                private_module = any(part.startswith("_") and part != "__init__" for part in module.split("."))
                if private or (private_module and not inside):
                    wrong.append(f"{path.relative_to(REPO)}:{line} from {module} import {', '.join(names)}")
    assert not wrong, wrong


def test_reading_the_settings_imports_no_torch():
    code = ("import sys, core.config, core.project_settings; core.config.Settings(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
