"""Layering of the code base: the shared home imports no stage, no stage imports tools/, and no module
imports itself through a cycle (every import statement counts, at module level or inside a function)."""
from __future__ import annotations

import ast
from pathlib import Path

from lewel_bench.utils import REPO_ROOT

#: the stage packages: pretraining and every evaluation package (eval_<name>, found by its name)
STAGES = ("pretrain", *sorted(p.name for p in REPO_ROOT.glob("eval_*") if (p / "__init__.py").is_file()))
PACKAGES = ("lewel_bench", *STAGES, "tools")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str) -> set[str]:
    """Project modules imported by the file (relative imports resolved; ``from pkg import mod`` counted
    as the module when it is one)."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                mod = ".".join(base[: len(base) - node.level + 1] + ([mod] if mod else []))
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}
    return {m for m in out if m.split(".")[0] in PACKAGES}


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for pkg in PACKAGES for p in (REPO_ROOT / pkg).rglob("*.py")
             if "configs" not in p.parts}
    graph = {}
    for name, path in files.items():
        graph[name] = {m for m in _imports(path, name) if m in files and m != name}
    return graph


def test_the_shared_home_imports_no_stage_and_no_stage_imports_tools() -> None:
    graph = _graph()
    bad = sorted((m, i) for m, deps in graph.items() if m.startswith("lewel_bench") for i in deps
                 if i.split(".")[0] in (*STAGES, "tools"))
    assert not bad, bad
    bad = sorted((m, i) for m, deps in graph.items() if m.split(".")[0] in STAGES for i in deps
                 if i.split(".")[0] == "tools")
    assert not bad, bad


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycles_between_modules_or_packages() -> None:
    graph = _graph()
    # a package's __init__ re-exporting its own submodules is not a dependency of theirs on each other
    modules = {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in graph.items()}
    assert not _cycles(modules), _cycles(modules)
    packages: dict[str, set[str]] = {}
    for m, deps in graph.items():
        packages.setdefault(m.split(".")[0], set()).update(d.split(".")[0] for d in deps if d.split(".")[0] != m.split(".")[0])
    assert not _cycles(packages), _cycles(packages)


def test_the_cycle_finder_finds_cycles() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
