"""The package's parts depend on each other one way only, through public names; SQL stays in storage/.

A part is a subpackage (``storage``, ``retrieval``, ...) or a top-level module (``memory``,
``records``, ...). Imports made only for type checking count too: they are dependencies all
the same, and a cycle through them is one refactor away from an import loop.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from helpers import REPO

PACKAGE = REPO / "ctxmem_plugin"
SQL_MODULES = ("sqlite3", "psycopg", "psycopg_pool")


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        out[name] = ast.parse(path.read_text(encoding="utf-8"))
    return out


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(tree: ast.Module) -> list[tuple[str, list[str]]]:
    """``(module, names imported from it)`` for every import of the package's own modules."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ctxmem_plugin"):
            if node.module == "ctxmem_plugin":  # ``from ctxmem_plugin import namespaces``
                found += [(f"ctxmem_plugin.{a.name}", []) for a in node.names if not a.name.startswith("__")]
            else:
                found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.startswith("ctxmem_plugin.")]
    return found


def _graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for module, tree in _modules().items():
        for target, _ in _imports(tree):
            if _part(module) != _part(target):
                edges[_part(module)].add(_part(target))
    return edges


def test_parts_depend_on_each_other_without_cycles() -> None:
    edges = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(part: str, path: list[str]) -> None:
        state[part] = 1
        for nxt in sorted(edges.get(part, ())):
            assert state.get(nxt) != 1, f"import cycle: {' -> '.join([*path, part, nxt])}"
            if nxt not in state:
                visit(nxt, [*path, part])
        state[part] = 2

    for part in sorted(edges):
        if part not in state:
            visit(part, [])
    # The layering the design describes, spot-checked: the foundations import no part above them.
    for low in ("errors", "namespaces", "records", "config", "filters", "storage", "encoders"):
        assert not edges.get(low, set()) & {"memory", "retrieval", "reranker", "training", "evaluation", "cli"}, low


def test_no_part_imports_another_parts_private_names() -> None:
    for module, tree in _modules().items():
        for target, names in _imports(tree):
            if _part(module) == _part(target):
                continue
            private = [n for n in names if n.startswith("_")]
            assert not private, f"{module} imports {private} from {target}"


def test_private_attributes_are_used_only_by_their_own_class() -> None:
    """No ``memory._write(...)``: a private attribute is reached through ``self``/``cls`` only."""
    own = {("ctxmem_plugin.encoders.sentence", "encoder._model")}  # SentenceEncoder.over, a classmethod building one
    for module, tree in _modules().items():
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")):
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            assert (module, ast.unparse(node)) in own, f"{module}: {ast.unparse(node)} is private"


def test_sql_runs_only_in_storage() -> None:
    for module, tree in _modules().items():
        if _part(module) == "storage":
            continue
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not [n for n in names if n.split(".")[0] in SQL_MODULES], f"{module} imports a database driver"
            if isinstance(node, ast.Attribute) and node.attr in ("db", "execute", "executemany"):
                raise AssertionError(f"{module} reaches a database connection ({node.attr})")


def test_the_core_never_imports_langchain() -> None:
    for module, tree in _modules().items():
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not [n for n in names if n.split(".")[0] in ("langchain", "langchain_core", "langgraph")], module
