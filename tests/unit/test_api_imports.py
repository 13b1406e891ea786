"""The layout of perpline/api, read from its source (ast): the wire adapters import no other adapter,
only the application (app.py, and main.py that starts it) imports adapters, and no import circle is
left anywhere in the package. Imports inside functions count: a deferred import is still a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import perpline.api

API_DIR = Path(perpline.api.__file__).parent
PACKAGE = "perpline.api"
# each wire adapter, with the modules that are its own parts
ADAPTERS = {"v1": {"v1"}, "fapi": {"fapi", "fastpath"}, "market": {"market"}, "stream": {"stream"}, "ops": {"ops"},
            "sessions": {"sessions"}, "listenkey": {"listenkey"}, "fstream": {"fstream", "fstream_frames"}}
COMPOSITION_ROOTS = {"app", "main"}


def module_name(path: Path) -> str:
    rel = path.relative_to(API_DIR).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts)


def imports_of(path: Path, package: str = PACKAGE) -> set[str]:
    """The perpline.api modules a file imports (relative to the package), wherever the import is."""
    found: set[str] = set()
    known = {module_name(p) for p in API_DIR.rglob("*.py")}
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.startswith(package + "."):
                rel = name[len(package) + 1:]
                while rel and rel not in known:  # `from perpline.api.service import orders` names a module
                    rel = rel.rpartition(".")[0]
                if rel:
                    found.add(rel)
    return found


def graph(root: Path = API_DIR) -> dict[str, set[str]]:
    out = {module_name(p): imports_of(p) for p in root.rglob("*.py")}
    for name, deps in out.items():  # a package's __init__ is imported on the way to any of its modules
        deps.discard(name)
        deps.difference_update({d for d in deps if name.startswith(d + ".") or d == ""})
    return out


def adapter_of(module: str) -> str | None:
    return next((a for a, parts in ADAPTERS.items() if module in parts), None)


def adapter_violations(g: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, deps in g.items():
        mine = adapter_of(module)
        for dep in deps:
            theirs = adapter_of(dep)
            if theirs is not None and theirs != mine and module not in COMPOSITION_ROOTS:
                bad.append(f"{module} imports the adapter {dep}")
    return sorted(bad)


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle, found by depth-first search (one path per circle's first back edge)."""
    found, state, stack = [], dict.fromkeys(g, 0), []

    def visit(node: str) -> None:
        state[node], _ = 1, stack.append(node)
        for dep in sorted(g.get(node, ())):
            if state.get(dep, 0) == 1:
                found.append([*stack[stack.index(dep):], dep])
            elif state.get(dep, 0) == 0 and dep in g:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(g):
        if state[node] == 0:
            visit(node)
    return found


def test_every_adapter_module_exists() -> None:
    g = graph()
    assert {m for parts in ADAPTERS.values() for m in parts} <= set(g), "an adapter was renamed: update ADAPTERS"


def test_no_adapter_imports_another() -> None:
    assert adapter_violations(graph()) == []


def test_no_import_circle_in_the_api_package() -> None:
    assert cycles(graph()) == []


def test_the_checks_catch_a_circle_and_an_adapter_importing_another(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The same checks on a small package laid out as the API was: `app` and a router import each other,
    and one adapter imports another's helper."""
    pkg = tmp_path / "api"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "app.py").write_text("from perpline.api import v1\nclass ApiDeps: ...\n")
    (pkg / "v1.py").write_text("from perpline.api.app import ApiDeps\n")
    (pkg / "fapi.py").write_text("def f():\n    from perpline.api.v1 import ApiDeps\n")
    monkeypatch.setitem(globals(), "API_DIR", pkg)  # module names are relative to the package read
    g = graph(pkg)
    assert adapter_violations(g) == ["fapi imports the adapter v1"]
    assert cycles(g) == [["app", "v1", "app"]]
