"""No error is swallowed silently: a handler that catches everything (bare, Exception, BaseException) in the
product's code re-raises, translates into a typed error, or reports what it caught."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("backend", "cli", "core", "plugins", "stack", "worker")
BROAD = {"Exception", "BaseException"}
REPORTS = {"warn", "warning", "error", "exception", "info", "debug", "say"}


def _broad(handler: ast.ExceptHandler) -> bool:
    caught = handler.type
    names = caught.elts if isinstance(caught, ast.Tuple) else [caught]
    return caught is None or any(isinstance(n, ast.Name) and n.id in BROAD for n in names)


def _accounts_for_it(handler: ast.ExceptHandler) -> bool:
    """The handler raises, or calls a logger/reporter method, somewhere in its body."""
    for node in ast.walk(ast.Module(body=handler.body, type_ignores=[])):
        if isinstance(node, ast.Raise):
            return True
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in REPORTS:
            return True
    return False


def _silent_handlers(source: str, name: str) -> list[str]:
    tree = ast.parse(source, filename=name)
    return [f"{name}:{h.lineno}" for h in ast.walk(tree)
            if isinstance(h, ast.ExceptHandler) and _broad(h) and not _accounts_for_it(h)]


def test_the_check_finds_a_silent_broad_handler():
    assert _silent_handlers("try:\n    f()\nexcept Exception:\n    pass\n", "x.py") == ["x.py:3"]
    assert _silent_handlers("try:\n    f()\nexcept (ValueError, BaseException):\n    x = 1\n", "x.py") == ["x.py:3"]
    assert _silent_handlers("try:\n    f()\nexcept Exception:\n    log.warning('f')\n", "x.py") == []
    assert _silent_handlers("try:\n    f()\nexcept Exception as e:\n    raise E(str(e))\n", "x.py") == []
    assert _silent_handlers("try:\n    f()\nexcept OSError:\n    pass\n", "x.py") == []


@pytest.mark.parametrize("package", PACKAGES)
def test_no_broad_handler_in_the_product_swallows_what_it_caught(package):
    silent = [hit for path in sorted((REPO / package).rglob("*.py"))
              for hit in _silent_handlers(path.read_text(), str(path.relative_to(REPO)))]
    assert not silent, f"broad except handlers that neither raise nor report: {silent}"
