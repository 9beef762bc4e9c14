"""The package's shape: no import cycles (lazy imports count), no module over 400 lines,
development tools that load neither Celery nor the test suite."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from .support import REPO

PACKAGE = REPO / "token_worker"
MAX_LINES = 400


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere (functions included), except
    under ``if TYPE_CHECKING:``."""
    paths = {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        deps: set[str] = set()

        def visit(node: ast.AST, package: list[str] = package, deps: set[str] = deps,
                  name: str = name) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and _type_checking_only(child):
                    for other in child.orelse:
                        visit(other)
                    continue
                targets: list[str] = []
                if isinstance(child, ast.ImportFrom):
                    base = package[:len(package) - child.level + 1] if child.level else []
                    module = ".".join(base + ([child.module] if child.module else []))
                    # `from . import x` imports the submodule x when there is one
                    targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in paths
                               else module for a in child.names]
                elif isinstance(child, ast.Import):
                    targets = [a.name for a in child.names]
                deps.update(t for t in targets if t in paths and t != name)
                visit(child)

        visit(ast.parse(path.read_text(), str(path)))
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_the_package_has_no_import_cycle_lazy_imports_included() -> None:
    found = cycles(import_graph())
    graph = import_graph()
    assert not found, "\n".join(
        ", ".join(f"{m} -> {sorted(graph[m] & set(c))}" for m in c) for c in found)


def test_the_cycle_check_sees_lazy_imports_and_skips_type_checking_ones(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from .b import g\n")
    (pkg / "b.py").write_text("from . import a\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\n"
                              "if TYPE_CHECKING:\n    from .a import f\n")
    (pkg / "d.py").write_text("from .c import x\n")
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.a"}
    assert graph["pkg.c"] == set() and graph["pkg.d"] == {"pkg.c"}
    assert cycles(graph) == [["pkg.a", "pkg.b"]]


def test_no_package_module_is_over_400_lines() -> None:
    long = {str(p.relative_to(REPO)): n for p in sorted(PACKAGE.rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_the_development_tools_load_neither_celery_nor_the_test_suite() -> None:
    code = ("import sys, token_worker.testing, token_worker.testing.emulator, "
            "token_worker.demo; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('celery', 'tests')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, timeout=60, check=True).stdout
    assert out.strip() == "[]"


def test_benchmarks_import_the_tools_from_the_package_not_from_tests() -> None:
    for path in sorted((REPO / "bench").glob("*.py")):
        text = path.read_text()
        assert "sys.path.insert" not in text and "from tests" not in text, path.name


# -- one door to Redis, one event encoding (issue 11) ----------------------------------------

STORE_MODULES = {"store.py", "store_guard.py", "store_status.py", "store_async.py",
                 "store_read.py", "store_server.py"}


def _package_sources() -> dict[str, str]:
    # the development tools (token_worker/testing) drive Redis directly on purpose
    return {p.name: p.read_text() for p in sorted(PACKAGE.glob("*.py"))}


def _calls(source: str, names: set[str]) -> list[str]:
    """``X.name(...)`` / ``name(...)`` calls in the source, for name in ``names``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            f = node.func
            called = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
            if called in names:
                found.append(f"{called}@{node.lineno}")
    return found


def _store_internals(source: str) -> list[str]:
    """Reaches into a store's client or keys: ``<x>.store.redis``, ``store.keys`` ..."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in ("redis", "keys", "_redis"):
            owner = node.value
            name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
            if name in ("store", "_store"):
                found.append(f"{name}.{node.attr}@{node.lineno}")
    return found


def test_only_the_store_reaches_into_redis() -> None:
    offenders = {name: hits for name, src in _package_sources().items()
                 if name not in STORE_MODULES and (hits := _store_internals(src))}
    assert not offenders, offenders
    # the check sees what it looks for
    assert _store_internals("store.redis.get(k)\nself.store.keys.token(p)\n") == \
        ["store.redis@1", "store.keys@2"]


def test_redis_clients_are_built_in_one_module() -> None:
    builders = {"Redis", "ConnectionPool", "from_url", "RedisCluster", "Sentinel",
                "StrictRedis", "SentinelConnectionPool"}
    offenders = {name: hits for name, src in _package_sources().items()
                 if name != "connection.py" and (hits := _calls(src, builders))}
    assert not offenders, offenders
    assert _calls("redis.Redis(connection_pool=p)\nx.from_url(u)\n", builders) == \
        ["Redis@1", "from_url@2"]


def test_events_are_encoded_and_parsed_in_one_module() -> None:
    # Event.encode()/Event.parse() live in events.py; nobody else splits or joins lines
    offenders = {}
    for name, src in _package_sources().items():
        if name == "events.py":
            continue
        hits = [f"{n}@{i}" for i, line in enumerate(src.splitlines(), 1)
                for n in ("keys.events()", '"message"]["data"]', "data.split(")
                if n in line and name not in STORE_MODULES | {"subscriber.py"}]
        if hits:
            offenders[name] = hits
    assert not offenders, offenders
