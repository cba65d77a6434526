"""The headless core (engine, gguf, text, hub, store, recording, export) and the server (serve) never
import textual: ask, the benchmarks, `dg-chat serve` and the tests use them without a terminal UI. And
dg_chat's import graph stays a layered DAG: no module imports one that (indirectly) imports it back, and
no layer imports a layer above it."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "dg_chat"
HEADLESS = ("engine", "gguf", "text", "hub", "store", "recording", "export", "serve")


def module_name(file: Path) -> str:
    parts = file.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def headless_modules() -> list[str]:
    """Every module of the headless parts that exists now, so new modules are covered as they come."""
    files: list[Path] = []
    for name in HEADLESS:
        if (PACKAGE / name).is_dir():
            files += sorted((PACKAGE / name).rglob("*.py"))
        elif (PACKAGE / f"{name}.py").is_file():
            files.append(PACKAGE / f"{name}.py")
    return [module_name(file) for file in files]


def test_headless_modules_do_not_import_textual() -> None:
    modules = headless_modules()
    assert {"dg_chat.gguf.reader", "dg_chat.text.tokenizer", "dg_chat.text.chat",
            "dg_chat.engine.events"} <= set(modules)
    code = ("import importlib, json, sys\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'textual')))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == []


def test_the_check_would_see_textual() -> None:
    """The same subprocess check does notice textual when something imports it."""
    code = "import sys, textual.app\nprint(sorted(m for m in sys.modules if m.split('.')[0] == 'textual')[:1])"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "['textual']"


# -- the import graph: no cycles, no layer importing upward --------------------------------------

LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"errors", "paths", "files", "config", "config_file", "text", "gguf", "hub"}),
    frozenset({"engine"}),
    frozenset({"store", "recording", "export"}),  # records what the engine produced, and writes it out
    frozenset({"serve"}),  # the engine over HTTP (dg-chat serve)
    frozenset({"commands", "tui", "cli", "__main__", ""}),  # "": dg_chat/__init__.py
)
"""dg_chat's top-level modules and packages, lowest first: a module imports from its own layer or below."""


@dataclass(frozen=True, slots=True)
class Import:
    importer: str
    imported: str
    line: int
    in_function: bool
    says_why: bool
    """A comment on the import's line or above it, over the imports before it (what a delayed import needs)."""


def package_modules() -> dict[str, Path]:
    return {module_name(file): file for file in sorted(PACKAGE.rglob("*.py"))}


def _says_why(lines: list[str], index: int) -> bool:
    """Whether line `index` (an import) or an import above it in the same block has a comment, or a
    comment line heads that block."""
    while index >= 0:
        line = lines[index].strip()
        is_import = line.startswith(("import ", "from "))
        if line.startswith("#") or (is_import and "#" in line):
            return True
        if not is_import:
            return False
        index -= 1
    return False


def _targets(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool, known: set[str]) -> list[str]:
    """The modules an import statement loads: `from a import b` is module a.b when that exists, else a."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = importer.split(".")[:len(importer.split(".")) + is_package - node.level]
        base = ".".join([*package, base] if base else package)
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]


def imports_of(modules: dict[str, Path]) -> list[Import]:
    """Every import statement of every module, module level (also under `if TYPE_CHECKING:`) or in a function."""
    known = set(modules)
    return [imp for name, file in modules.items() for imp in _imports_in(name, file, known)]


def _imports_in(name: str, file: Path, known: set[str]) -> list[Import]:
    found: list[Import] = []
    source = file.read_text(encoding="utf-8")
    lines = source.splitlines()

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            says_why = _says_why(lines, node.lineno - 1)
            for target in _targets(node, name, file.name == "__init__.py", known):
                found.append(Import(name, target, node.lineno, in_function, says_why))
        inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(source, filename=str(file)), False)
    return found


def internal_graph(imports: list[Import]) -> dict[str, set[str]]:
    """dg_chat module -> the dg_chat modules it imports, at module level or delayed into a function:
    a delayed import that closes a cycle still makes one (it only postpones the failure)."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        graph.setdefault(imp.importer, set())
        if imp.imported.split(".")[0] == "dg_chat" and imp.imported != imp.importer:
            graph[imp.importer].add(imp.imported)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components, iterative (no recursion limit to mind)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                components.append(component)
    return components


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    return next(i for i, layer in enumerate(LAYERS) if top in layer)


def test_dg_chat_has_no_import_cycle() -> None:
    graph = internal_graph(imports_of(package_modules()))
    cycles = [sorted(component) for component in strongly_connected(graph) if len(component) > 1]
    assert cycles == []


def test_no_layer_imports_upward() -> None:
    modules = package_modules()
    for module in modules:
        layer_of(module)  # StopIteration: a new top-level module or package needs its place in LAYERS
    upward = [f"{imp.importer}:{imp.line} imports {imp.imported}" for imp in imports_of(modules)
              if imp.imported in modules and layer_of(imp.imported) > layer_of(imp.importer)]
    assert upward == []


def test_imports_inside_functions_say_why() -> None:
    """A delayed import is for a heavy or optional library, or a module only one path needs: a comment says which."""
    silent = [f"{imp.importer}:{imp.line} ({imp.imported})" for imp in imports_of(package_modules())
              if imp.in_function and not imp.says_why]
    assert silent == []


def test_the_graph_checks_would_see_a_cycle_and_an_upward_import(tmp_path: Path) -> None:
    """The same machinery notices a cycle closed by a delayed import, and imports up the layers."""
    sources = {"dg_chat.text.a": "from dg_chat.gguf import b\n",
               "dg_chat.gguf.b": "def f():\n    from dg_chat.engine import c  # why: the test\n",
               "dg_chat.engine.c": "import dg_chat.text.a\nfrom dg_chat.tui import app\n",
               "dg_chat.tui.app": ""}
    fake = {name: tmp_path / f"{name}.py" for name in sources}
    for name, source in sources.items():
        fake[name].write_text(source)
    imports = imports_of(fake)
    assert [sorted(c) for c in strongly_connected(internal_graph(imports)) if len(c) > 1] == [
        ["dg_chat.engine.c", "dg_chat.gguf.b", "dg_chat.text.a"]]
    assert [(imp.importer, imp.imported) for imp in imports if layer_of(imp.imported) > layer_of(imp.importer)] == [
        ("dg_chat.gguf.b", "dg_chat.engine.c"), ("dg_chat.engine.c", "dg_chat.tui.app")]
    assert all(imp.says_why for imp in imports if imp.in_function)
