"""The package's layers, checked: each folder of reconciler/ imports only the layers below it
(ARCHITECTURE.md's table, read bottom up), and no two modules import each other in a ring.

Every import counts, including those inside functions and under TYPE_CHECKING: a deferred
import is still an arrow a reader has to follow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "reconciler"

LAYERS = ("base", "desired", "record", "hosts", "lb", "rollout", "views", "forge", "serve", "top")
"""Lowest first. `base`: the top-level modules every layer may use (errors, redact,
canonical); `top`: the command line (cli and its commands) and the demo, which may use
everything."""
BASE = {"errors", "redact", "canonical", "__init__"}
TOP = {"cli", "commands_spec", "commands_fleet", "exitcodes", "demo", "__main__"}
MAX_TOP_LEVEL = 12


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "base"
    if len(parts) == 2:  # reconciler.<module> or reconciler.<package>
        name = parts[1]
        if name in BASE:
            return "base"
        if name in TOP:
            return "top"
        if (PACKAGE / name).is_dir():
            return name
        raise AssertionError(f"{module}: a module at the top that is neither base nor top")
    return parts[1]


def imports(path: Path) -> set[str]:
    """Every reconciler module `path` imports, wherever the import statement is."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("reconciler"):
                for alias in node.names:
                    candidate = f"{node.module}.{alias.name}"
                    as_path = PACKAGE.parent / Path(*candidate.split("."))
                    is_module = as_path.with_suffix(".py").exists() or as_path.is_dir()
                    found.add(candidate if is_module else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("reconciler")}
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
SANDBOX = "reconciler.sandbox"


def edges() -> list[tuple[str, str]]:
    return [
        (source, target)
        for source, path in sorted(MODULES.items())
        for target in sorted(imports(path))
        if target != source
    ]


def test_no_layer_imports_a_layer_above_it() -> None:
    wrong = []
    for source, target in edges():
        if source.startswith(SANDBOX) or target.startswith(SANDBOX):
            continue  # the sandbox stands beside the package: tests, bench and the demo use it
        a, b = LAYERS.index(layer_of(source)), LAYERS.index(layer_of(target))
        if b > a:
            wrong.append(f"{source} ({LAYERS[a]}) imports {target} ({LAYERS[b]})")
    assert not wrong, "\n".join(wrong)


def test_the_package_proper_never_imports_the_sandbox() -> None:
    wrong = [
        f"{s} imports {t}"
        for s, t in edges()
        if t.startswith(SANDBOX) and not s.startswith(SANDBOX) and layer_of(s) != "top"
    ]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for source, target in edges():
        if target in MODULES:
            graph.setdefault(source, set()).add(target)
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            ring = [*path[path.index(node) :], node]
            pytest.fail("import cycle: " + " -> ".join(ring))
        if node in done:
            return
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, [*path, node])
        done.add(node)

    for module in sorted(graph):
        visit(module, [])


def test_the_layers_are_folders_and_few_modules_stay_at_the_top() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL, top
    assert set(LAYERS) - {"base", "top"} <= {p.name for p in PACKAGE.iterdir() if p.is_dir()}


def test_no_module_is_over_600_lines() -> None:
    long = {
        name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > 600
    }
    assert not long, long
