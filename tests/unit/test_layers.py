"""The import graph, read from the source: no module imports another that imports it back
(directly or round a circle), and the layers point one way (DESIGN.md): the library
(``reasoning``, ``rewards``, ``routers``) never imports a program (``recipes``), and the core
(``reasoning``) never imports the judges built on it (``rewards``, ``routers``). Imports inside
functions count: a lazy import is still a dependency."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("conf", "reasoning", "rewards", "routers", "recipes")


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            parts = p.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = p
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (``from a import b``: ``a.b`` if that is a
    module, else ``a``)."""
    mods = modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module
                           for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            edges[m] |= {t for t in targets if t in mods and t != m}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_checker_finds_a_circle_and_an_upward_import():
    # the checker itself, on a graph made by hand
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_round_a_circle():
    assert cycles(import_graph()) == []


def test_the_library_imports_no_program():
    up = sorted((m, t) for m, ts in import_graph().items() for t in ts
                if m.split(".")[0] in ("reasoning", "rewards", "routers") and t.split(".")[0] == "recipes")
    assert up == []


def test_the_core_imports_no_judge_built_on_it():
    up = sorted((m, t) for m, ts in import_graph().items() for t in ts
                if m.split(".")[0] == "reasoning" and t.split(".")[0] in ("rewards", "routers"))
    assert up == []


def test_the_schedules_drive_the_engine_and_it_knows_neither():
    g = import_graph()
    assert "reasoning.engine" in g["reasoning.schedule"] and "reasoning.engine" in g["reasoning.loop"]
    assert not g["reasoning.engine"] & {"reasoning.loop", "reasoning.schedule", "reasoning.pipeline"}
