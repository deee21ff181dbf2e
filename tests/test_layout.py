"""Module layout, read from the source with ``ast``: no import cycles, few function-local imports, layering, size.

The package is ``edgepipe``: its root (``edgepipe/``) and the folders actors, bus, models and pipeline,
installed as ``edgepipe.actors``, ... (``pyproject.toml``'s ``package-dir``). A module's imports are split in two:
- top level: every import outside a function body (``try``/``if`` blocks at module level included, and
  ``if TYPE_CHECKING:`` too -- a cycle held apart by a type-only import is still a cycle between files);
- function-local: an import inside a ``def``, ``async def`` or ``lambda`` body; a call of
  ``importlib.import_module`` or ``__import__`` there counts as one too.
"""
from __future__ import annotations

import ast
import io
import subprocess
import sys
import tokenize
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Set

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("actors", "bus", "models", "pipeline")  # each installed as edgepipe.NAME
MAX_LOCAL_IMPORTS = 15
MAX_LINES = 400
# the layers: a package imports nothing from a package above it
LAYER = {"edgepipe": 0, "bus": 0, "models": 0, "actors": 1, "pipeline": 2, "__main__": 3}  # edgepipe/__main__.py: the top
MAX_MODULES = 12  # modules of a folder's own (its __init__.py apart)

class Import(NamedTuple):
    module: str  # the importing module, dotted
    path: str  # its file, relative to the repository
    line: int
    target: str  # what is imported, dotted and absolute (a package module or a library)
    local: bool  # inside a function body
    commented: bool  # a comment on its line or the line above


def package_files() -> Dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    found = {}
    for pkg in PACKAGES + ("edgepipe",):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            if parts[0] != "edgepipe":
                parts.insert(0, "edgepipe")
            found[".".join(parts)] = path
    return found


MODULES = package_files()


def comment_lines(source: str) -> Set[int]:
    lines = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            lines.add(tok.start[0])
    return lines


def resolve(module: str, is_package: bool, node: ast.AST) -> List[str]:
    """The absolute names an import statement brings in: a package module when it is one, else the name."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    assert isinstance(node, ast.ImportFrom)
    base = node.module or ""
    if node.level:
        parts = module.split(".")
        if not is_package:
            parts = parts[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([base] if base else []))
    targets = []
    for alias in node.names:
        sub = "%s.%s" % (base, alias.name)
        targets.append(sub if sub in MODULES else base)
    return targets


DYNAMIC = "<importlib.import_module or __import__>"


def is_dynamic_import(node: ast.AST) -> bool:
    """A call of ``importlib.import_module`` or ``__import__``: an import all the same (it counts)."""
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    return name in ("import_module", "__import__")


def collect() -> List[Import]:
    found = []
    for module, path in MODULES.items():
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source, filename=str(path))
        comments = comment_lines(source)
        rel = str(path.relative_to(ROOT))
        is_package = path.name == "__init__.py"

        def visit(node: ast.AST, local: bool) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    commented = child.lineno in comments or (child.lineno - 1) in comments
                    for target in resolve(module, is_package, child):
                        found.append(Import(module, rel, child.lineno, target, local, commented))
                elif is_dynamic_import(child):
                    commented = child.lineno in comments or (child.lineno - 1) in comments
                    found.append(Import(module, rel, child.lineno, DYNAMIC, local, commented))
                inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                visit(child, inner)

        visit(tree, False)
    return found


IMPORTS = collect()


def in_package(target: str) -> Optional[str]:
    """The package module an import target names (or is inside), else None for a library."""
    name = target
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def strongly_connected(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Tarjan's algorithm, iterative; returns every component of more than one module (or a self-loop)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    on_stack: Set[str] = set()
    stack: List[str] = []
    result = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph[node]:
                    result.append(sorted(component))
    return result


def import_graph(include_local: bool) -> Dict[str, Set[str]]:
    graph: Dict[str, Set[str]] = {m: set() for m in MODULES}
    for imp in IMPORTS:
        if imp.local and not include_local:
            continue
        target = in_package(imp.target)
        if target is not None and target != imp.module:
            graph[imp.module].add(target)
    return graph


def local_imports() -> List[Import]:
    # one statement counts once, however many names it brings in
    seen = {}
    for imp in IMPORTS:
        if imp.local:
            seen.setdefault((imp.path, imp.line), imp)
    return sorted(seen.values(), key=lambda i: (i.path, i.line))


def describe(imports: List[Import]) -> str:
    return "\n".join("%s:%d %s" % (i.path, i.line, i.target) for i in imports)


def test_the_scan_sees_the_package():
    # guards the tests below against passing on an empty scan
    assert {"edgepipe.actors.runtime.base", "edgepipe.bus.sockets", "edgepipe.models.engines.engine", "edgepipe.pipeline.cli"} <= set(MODULES)
    graph = import_graph(include_local=False)
    assert "edgepipe.bus.sockets" in graph["edgepipe.actors.runtime.base"]
    assert "edgepipe.models.engines.engine" in graph["edgepipe.models.spec"] or "edgepipe.models.engines.engine" in graph["edgepipe.models.engines.litert"]
    assert any(imp.local for imp in IMPORTS)
    assert any(imp.target == DYNAMIC for imp in IMPORTS)  # pipeline/cli.py's lazy subcommand table


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}, "f": set()}
    assert sorted(strongly_connected(graph)) == [["a", "b", "c"], ["e"]]


def test_no_import_cycle_between_modules():
    cycles = strongly_connected(import_graph(include_local=False))
    assert not cycles, "import cycles (top-level imports): %s" % cycles


def test_no_import_cycle_even_counting_function_local_imports():
    # a cycle held apart by an import inside a function is still a cycle between files
    graph = import_graph(include_local=True)
    cycles = strongly_connected(graph)
    assert not cycles, "import cycles (counting function-local imports): %s" % cycles


def test_function_local_imports_are_few_and_each_says_why():
    local = local_imports()
    assert len(local) <= MAX_LOCAL_IMPORTS, "%d function-local imports:\n%s" % (len(local), describe(local))
    silent = [i for i in local if not i.commented]
    assert not silent, "function-local imports without a comment saying why:\n%s" % describe(silent)
    into_package = [i for i in local if in_package(i.target)]
    assert not into_package, "function-local imports of the package's own modules:\n%s" % describe(into_package)


def layer_of(module: str) -> str:
    """edgepipe.actors.sinks.display -> actors; edgepipe -> edgepipe."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYER else parts[0]


def test_layering_no_package_imports_one_above_it():
    upward = []
    for imp in IMPORTS:  # function-local imports included
        target = in_package(imp.target)
        if target is None:
            continue
        src, dst = layer_of(imp.module), layer_of(target)
        if LAYER[dst] > LAYER[src]:
            upward.append(imp)
    assert not upward, "imports from a higher layer:\n%s" % describe(upward)


def test_no_module_over_400_lines():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines()) for p in MODULES.values()}
    long = {path: n for path, n in sizes.items() if n > MAX_LINES}
    assert not long, "modules over %d lines: %s" % (MAX_LINES, long)


def test_the_command_line_parses_before_it_imports_the_pipeline():
    # pipeline/cli.py's one lazy import: `run.py --help` and a bad option answer without loading cv2 and the actors
    code = ("import sys; import edgepipe.pipeline.cli; "
            "print(' '.join(m for m in ('cv2', 'numpy', 'zmq', 'edgepipe.actors.runtime.base',"
            " 'edgepipe.pipeline.runner') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), stdout=subprocess.PIPE, check=True,
                         universal_newlines=True).stdout
    assert out.split() == []
    from edgepipe.pipeline import cli
    for module, function in list(cli.SUBCOMMANDS.values()) + [cli.RUN]:  # every entry of the table resolves
        assert callable(cli._command(module, function)), (module, function)


def test_no_folder_holds_more_than_12_modules_of_its_own():
    folders: Dict[str, List[str]] = {}
    for path in MODULES.values():
        if path.name != "__init__.py":
            folders.setdefault(str(path.parent.relative_to(ROOT)), []).append(path.name)
    crowded = {f: len(m) for f, m in folders.items() if len(m) > MAX_MODULES}
    assert not crowded, "folders with more than %d modules of their own: %s" % (MAX_MODULES, crowded)
    assert len(folders) >= 10  # the scan sees the subpackages


def test_every_folder_is_a_package_that_says_what_lives_there():
    for pkg in PACKAGES:
        for folder in [ROOT / pkg] + [d for d in (ROOT / pkg).rglob("*") if d.is_dir() and d.name != "__pycache__"]:
            init = folder / "__init__.py"
            assert init.exists(), "%s has no __init__.py" % folder.relative_to(ROOT)
            assert ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))), "%s says nothing" % init


def test_one_import_root_no_module_imports_the_folders_by_their_own_names():
    bare = [i for i in IMPORTS if i.target.split(".")[0] in PACKAGES]
    assert not bare, "imports of actors/bus/models/pipeline outside edgepipe:\n%s" % describe(bare)


def test_only_the_bus_imports_zmq():
    leaks = [i for i in IMPORTS if i.target.split(".")[0] == "zmq" and layer_of(i.module) != "bus"]
    assert not leaks, "zmq imported outside bus/:\n%s" % describe(leaks)
    assert any(i.target.split(".")[0] == "zmq" for i in IMPORTS)  # the scan sees the bus's


def test_no_actor_constructor_takes_more_than_6_parameters():
    # name, bus, its config section, its endpoints, the run's context, and one more (its models, its sink...)
    import inspect

    from edgepipe.actors.roles import ROLES
    from edgepipe.actors.runtime.base import Actor
    from edgepipe.actors.sinks.live_view import LiveView

    classes = {r.actor for r in ROLES} | {LiveView, Actor}
    for cls in classes:
        params = [p for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"]
        assert len(params) <= 6, "%s.__init__ takes %d parameters: %s" % (cls.__name__, len(params),
                                                                          [p.name for p in params])
        assert not any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in params), cls
