"""The layer table of ARCHITECTURE.md, checked against every import in ``inspector/`` and ``gui/``.

The files are parsed (``ast``), never imported, so the check takes a second and cannot be fooled by
an import that happens to fail or succeed on this machine. Two rules:

- no upward import: a module imports only from its own layer or the layers listed before it;
- no import cycle between modules, counting the imports that run when a module is imported (its
  top level, ``try``/``if`` blocks included). Imports inside functions run later and imports under
  ``if TYPE_CHECKING:`` never run, so they cannot deadlock an import; they still count for the layers.

Every module must belong to a row of the table, so a new package fails here until the table names it.
Allowed exceptions are the rows of the table under "Allowed exceptions" in ARCHITECTURE.md, each with
its reason; one that no longer matches any import fails too, so the list cannot go stale.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURE = ROOT / "ARCHITECTURE.md"
PACKAGES = ("inspector", "gui")


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name, e.g. inspector.runtime.detector
    path: Path  # relative to the project root
    line: int
    target: str  # the project module it resolves to (a package's __init__ when the name is not a module)
    written: str  # the statement's text as written, for the message
    at_import_time: bool  # False inside a function or under `if TYPE_CHECKING:`

    def where(self) -> str:
        return f"{self.path}:{self.line} {self.importer} imports {self.target} ({self.written})"


def project_modules(root: Path = ROOT) -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file relative to ``root``, is_package) for every .py file of the project packages."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            path = path.relative_to(root)
            parts = list(path.with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            modules[".".join(parts)] = (path, is_package)
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, at_import_time: bool):
    """Yield (import node, runs at import time) for every import under ``node``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, at_import_time
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield from _walk(child, False)
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for statement in child.body:
                yield from _walk(ast.Module(body=[statement], type_ignores=[]), False)
            for statement in child.orelse:
                yield from _walk(ast.Module(body=[statement], type_ignores=[]), at_import_time)
        else:
            yield from _walk(child, at_import_time)


def project_imports(modules: dict[str, tuple[Path, bool]], root: Path = ROOT) -> list[Import]:
    """Every import of a project module by a project module, resolved to the module it loads."""
    found = []
    for name, (path, is_package) in modules.items():
        tree = ast.parse((root / path).read_text(encoding="utf-8"), filename=str(path))
        for node, at_import_time in _walk(tree, True):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:  # relative: from . import x / from ..y import z
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                # `from pkg import mod` loads pkg.mod; `from pkg import name` loads pkg (its __init__)
                targets = [f"{prefix}.{alias.name}" if f"{prefix}.{alias.name}" in modules else prefix
                           for alias in node.names]
            for target in dict.fromkeys(targets):
                while target and target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]  # `import inspector.x.y` where y is a name
                if target in modules:
                    found.append(Import(name, path, node.lineno, target, ast.unparse(node), at_import_time))
    return found


@dataclass(frozen=True)
class Layer:
    rank: int
    name: str
    prefixes: tuple[str, ...]  # dotted module prefixes, e.g. inspector.data, inspector.registry


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _section_rows(text: str, heading: str) -> list[tuple[int, list[str]]]:
    """(line number, cells) of the first markdown table after ``heading``, header and rule skipped."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == heading), None)
    assert start is not None, f"ARCHITECTURE.md: no '{heading}' heading"
    rows, in_table = [], False
    for number, line in enumerate(lines[start + 1:], start=start + 2):
        if line.lstrip().startswith("|"):
            in_table = True
            rows.append((number, _cells(line)))
        elif in_table:
            break
        elif line.startswith("#"):
            break
    return rows[2:]  # header row, then |---|


def _module_prefix(path_text: str) -> str:
    return path_text.strip("/").removesuffix(".py").replace("/", ".")


def layer_table(text: str) -> list[Layer]:
    """The rows of the table under '# Architecture': layer name and the packages/modules it holds."""
    layers = []
    for number, cells in _section_rows(text, "# Architecture"):
        assert len(cells) >= 2, f"ARCHITECTURE.md:{number}: a layer row needs | layer | packages |"
        paths = re.findall(r"`([^`]+)`", cells[1])
        prefixes = tuple(_module_prefix(p) for p in paths if p.split("/")[0] in PACKAGES)
        assert prefixes, f"ARCHITECTURE.md:{number}: layer '{cells[0]}' names no `inspector/...` or `gui/...` path"
        layers.append(Layer(len(layers), cells[0], prefixes))
    return layers


@dataclass(frozen=True)
class Exception_:
    importer: str
    target: str
    reason: str


def allowed_exceptions(text: str) -> list[Exception_]:
    """The rows of the table under '## Allowed exceptions': `importer` | `imported module` | why."""
    allowed = []
    for number, cells in _section_rows(text, "## Allowed exceptions"):
        names = [re.findall(r"`([^`]+)`", cell) for cell in cells[:2]]
        assert len(cells) >= 3 and all(len(n) == 1 for n in names) and cells[2], (
            f"ARCHITECTURE.md:{number}: an exception row is | `importer` | `imported module` | why |")
        allowed.append(Exception_(names[0][0], names[1][0], cells[2]))
    return allowed


def layer_of(module: str, layers: list[Layer]) -> Layer | None:
    """The layer whose longest prefix matches ``module`` (so `inspector.cli` wins over `inspector`)."""
    best, best_length = None, -1
    for layer in layers:
        for prefix in layer.prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_length:
                best, best_length = layer, len(prefix)
    return best


def upward_imports(imports: list[Import], layers: list[Layer]) -> list[tuple[Import, Layer, Layer]]:
    upward = []
    for imp in imports:
        source, target = layer_of(imp.importer, layers), layer_of(imp.target, layers)
        if source is not None and target is not None and target.rank > source.rank:
            upward.append((imp, source, target))
    return upward


def import_cycles(imports: list[Import]) -> list[list[str]]:
    """Strongly connected components (more than one module) of the import-time graph (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if imp.at_import_time and imp.target != imp.importer:
            graph.setdefault(imp.importer, set()).add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(node: str) -> None:  # recursion depth is bounded by the module count (~200)
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


# ---------------------------------------------------------------------------------------------- the checks

@pytest.fixture(scope="module")
def architecture() -> str:
    return ARCHITECTURE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def modules():
    return project_modules()


@pytest.fixture(scope="module")
def imports(modules):
    return project_imports(modules)


def test_every_module_has_a_layer(architecture, modules):
    layers = layer_table(architecture)
    missing = [f"{path} ({name})" for name, (path, _) in modules.items()
               if layer_of(name, layers) is None and name not in PACKAGES]
    assert not missing, ("modules in no layer of ARCHITECTURE.md's table (add their package to a row):\n  "
                         + "\n  ".join(missing))


def test_a_package_root_outside_the_table_imports_nothing_of_the_project(architecture, imports):
    """``import inspector.anything`` runs inspector/__init__.py first: an import there would put its target
    under every layer at once."""
    layers = layer_table(architecture)
    offending = [imp.where() for imp in imports if imp.importer in PACKAGES and layer_of(imp.importer, layers) is None]
    assert not offending, "package roots in no layer import project modules:\n  " + "\n  ".join(offending)


def test_no_upward_import(architecture, imports):
    layers = layer_table(architecture)
    allowed = {(e.importer, e.target) for e in allowed_exceptions(architecture)}
    offending = [f"{imp.where()}: layer '{source.name}' may not import layer '{target.name}'"
                 for imp, source, target in upward_imports(imports, layers)
                 if (imp.importer, imp.target) not in allowed]
    order = " -> ".join(layer.name for layer in layers)
    assert not offending, (f"upward imports against the layer table ({order}):\n  " + "\n  ".join(offending))


def test_allowed_exceptions_are_still_needed(architecture, imports):
    """An exception nothing needs any more is removed from the table, so the list stays the truth."""
    layers = layer_table(architecture)
    used = {(imp.importer, imp.target) for imp, _, _ in upward_imports(imports, layers)}
    stale = [f"`{e.importer}` -> `{e.target}`" for e in allowed_exceptions(architecture)
             if (e.importer, e.target) not in used]
    assert not stale, "ARCHITECTURE.md lists exceptions no import needs any more:\n  " + "\n  ".join(stale)


def test_no_import_cycle(imports):
    cycles = import_cycles(imports)
    lines = []
    for component in cycles:
        members = set(component)
        lines.append("cycle between " + ", ".join(component) + ":")
        lines += [f"    {imp.where()}" for imp in imports
                  if imp.at_import_time and imp.importer in members and imp.target in members
                  and imp.importer != imp.target]
    assert not cycles, "import cycles (imports run when a module is imported):\n  " + "\n  ".join(lines)


# ---------------------------------------------------------------------------------------------- the checker

def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_checker_finds_an_upward_import_a_cycle_and_ignores_lazy_and_type_only_imports(tmp_path):
    """The rules themselves, on a made-up project: they must fail on what they are meant to catch."""
    _write(tmp_path, {
        "inspector/__init__.py": "",
        "inspector/data/__init__.py": "from inspector.data.low import thing\n",
        "inspector/data/low.py": "import os\nthing = 1\n",
        "inspector/data/upward.py": "def later():\n    from inspector.runtime import run\n",
        "inspector/runtime/__init__.py": "from .a import run\n",
        "inspector/runtime/a.py": "from . import b\nrun = 1\n",
        "inspector/runtime/b.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                   "    from inspector.runtime.c import C\nfrom inspector.runtime import a\n"),
        "inspector/runtime/c.py": "def f():\n    from inspector.runtime.b import x\n",
        "inspector/runtime/d.py": "from ..data import low\nimport inspector.data.low.thing\n",
        "gui/__init__.py": "",
    })
    layers = layer_table("# Architecture\n\n| layer | package |\n|---|---|\n| data | `inspector/data/` |\n"
                         "| runtime | `inspector/runtime/`, `gui/` |\n")
    found = project_imports(project_modules(tmp_path), tmp_path)
    upward = upward_imports(found, layers)
    assert [(i.importer, i.line, i.target, i.at_import_time) for i, _, _ in upward] == [
        ("inspector.data.upward", 2, "inspector.runtime", False)]
    assert import_cycles(found) == [["inspector.runtime.a", "inspector.runtime.b"]]  # c<->b: lazy/type-only
    d = {(i.target, i.line) for i in found if i.importer == "inspector.runtime.d"}
    assert d == {("inspector.data.low", 1), ("inspector.data.low", 2)}
    assert layer_of("gui.main_window", layers).name == "runtime" and layer_of("tests.x", layers) is None
