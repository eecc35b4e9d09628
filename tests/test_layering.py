"""The engine's rooms depend only downward, and no two modules import each other.

The team rule: a new capability lands as a room of its own that depends only on the rooms
below it. A room is the first name under `engine`: a sub-package (`engine.morphable`,
`engine.network`, `engine.runners`, ...) or a single module (`engine.detect`, `engine.errors`,
...); the package `engine` itself (its `__init__`: `__version__`, the error classes) is the room
`engine`. Why the rule: a cycle, however lazy (an import inside a function), means neither side
can be read, tested, installed lean or moved without the other, and a lazy import hides it from
every check that only imports things. So this test reads the source with `ast` and imports
nothing: every import statement at any depth, `from P import x` resolved to the submodule P.x
when x is not a name P's `__init__` defines, relative imports, `importlib.import_module("...")`
with a literal name, and the lazy re-export tables of a sub-package's `__init__` (a dict of
name -> "engine.room.module": resolved on first attribute access, so they are imports too).

Left out on purpose: the lazy table of the top-level facade `engine/__init__.py` (`engine.Reconstructor`,
...). It is the door to all rooms, resolved on first use; at import time it needs only
engine.errors, and rooms below the pipeline read `engine.__version__` from it.

ROOM_ORDER lists the rooms bottom first; a room may import only rooms listed before it. It was
derived from the import graph (issue: the morphable model's class importing its own loaders,
the network validating itself with the runners above it), grouped by what each room is for:

- foundations (errors, file writing, the compiled core, the numpy oracle);
- photos and faces (images, boxes, crops, the detector, descriptors);
- meshes and models (mesh files, the decode kernel, morphable models, pose fitting, drawing);
- the network (Caffe files, weights, ONNX, the variants' card; it finds faces for calibration
  with the detector, so it sits above it), the release's downloads (fetch, which knows the
  model card's folder), the runners (the network on a backend), and `engine.validate`
  (builds and measures the CPU variants by running the runners and decoding meshes);
- the pipeline, then the programs that drive it: the benchmark, the command line, `python -m`.

A new room goes where its imports put it; an import that breaks this order is a design
question to answer, not a line to add here.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENGINE = REPO / "engine"

ROOM_ORDER = (
    # foundations
    "engine.errors", "engine.fileio", "engine._reference", "engine._core", "engine",
    # photos and faces
    "engine.images", "engine.box_match", "engine.crop", "engine.detect", "engine.descriptors",
    # meshes and models
    "engine.mesh_io", "engine.decode", "engine.morphable", "engine.pose", "engine.render",
    # the network and what runs it
    "engine.network", "engine.fetch", "engine.runners", "engine.validate",
    # the pipeline and the programs
    "engine.pipeline", "engine.distributed", "engine.serve", "engine.bench", "engine.cli", "engine.__main__",
)


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, e.g. "engine.morphable.bfm"
    target: str  # the imported module
    file: str  # relative to the repository
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.source} imports {self.target}"


def module_files(engine_dir: Path = ENGINE) -> dict[str, Path]:
    """{dotted module name: file} for every .py file under engine/ (a package is its __init__.py)."""
    out = {}
    for p in sorted(engine_dir.rglob("*.py")):
        parts = list(p.relative_to(engine_dir.parent).with_suffix("").parts)
        if "__pycache__" in parts:
            continue
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


def _top_level_names(tree: ast.Module) -> set[str]:
    """Names a module binds at its top level (outside functions and classes): what `from P import x`
    finds in P's __init__ before it looks for a submodule P.x."""
    names: set[str] = set()

    def visit(body):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    names.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
            for field in ("body", "orelse", "finalbody", "handlers"):  # if / try / with at top level
                inner = getattr(node, field, None)
                if isinstance(inner, list) and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                      ast.ClassDef)):
                    visit(inner)

    visit(tree.body)
    return names


def _lazy_table(tree: ast.Module) -> dict[str, ast.Constant]:
    """{name: its module's string node} from the top-level dict literals whose values name engine
    modules: a package's lazy re-export table (`__getattr__` imports the module on first use)."""
    out = {}
    for node in tree.body:
        value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
        if isinstance(value, ast.Dict):
            out.update((k.value, v) for k, v in zip(value.keys, value.values)
                       if isinstance(k, ast.Constant) and isinstance(k.value, str) and isinstance(v, ast.Constant)
                       and isinstance(v.value, str) and v.value.startswith("engine."))
    return out


def import_graph(engine_dir: Path = ENGINE) -> list[Import]:
    """Every import of one engine module by another, at any depth of the source."""
    files = module_files(engine_dir)
    trees = {m: ast.parse(p.read_text(encoding="utf-8"), str(p)) for m, p in files.items()}
    packages = {m for m, p in files.items() if p.name == "__init__.py"}
    defined = {m: _top_level_names(trees[m]) | set(_lazy_table(trees[m])) for m in packages}

    def resolve(name: str) -> str | None:
        """The engine module `name` is, or the nearest package above it that is one."""
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    def from_import(base: str, name: str) -> str | None:
        """`from P import x`, as Python does it: P's own name x when its __init__ binds it (or its
        lazy table names it), else the submodule P.x; a compiled one (engine._C) is no engine source."""
        sub = f"{base}.{name}"
        if base not in packages or name in defined[base] or name == "*":
            return resolve(base)
        return sub if sub in files else None  # no source: compiled (engine._C, built or not)

    edges: list[Import] = []
    for m, tree in trees.items():
        rel = str(files[m].relative_to(engine_dir.parent))

        def add(target: str | None, line: int) -> None:
            if target is not None and target != m and target.split(".")[0] == "engine":
                edges.append(Import(m, target, rel, line))

        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    add(resolve(a.name), node.lineno)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package, one level up per extra dot
                    pkg = m.split(".") if m in packages else m.split(".")[:-1]
                    pkg = pkg[:len(pkg) - node.level + 1]
                    base = ".".join(pkg + ([base] if base else []))
                for a in node.names:
                    add(from_import(base, a.name), node.lineno)
            elif (isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name))
                  and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "import_module"
                  and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                add(resolve(node.args[0].value), node.lineno)
        if m in packages and m != "engine":  # the top-level facade's table is left out (module docstring)
            for value in _lazy_table(tree).values():
                add(resolve(value.value), value.lineno)
    return sorted(edges, key=lambda e: (e.file, e.line, e.target))


def room(module: str) -> str:
    return ".".join(module.split(".")[:2])


def strongly_connected(nodes, edges: list[Import]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one member: each is a cycle."""
    succ: dict[str, set[str]] = {n: set() for n in nodes}
    for e in edges:
        succ.setdefault(e.source, set()).add(e.target)
        succ.setdefault(e.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(succ[v]):
            if w not in index:
                visit(w)
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
                out.append(sorted(component))

    for v in sorted(succ):
        if v not in index:
            visit(v)
    return out


def one_cycle(component: list[str], edges: list[Import], key=lambda name: name) -> list[Import]:
    """The imports along one shortest cycle through the component's first member."""
    inside = set(component)
    by_source: dict[str, list[Import]] = {}
    for e in edges:
        if key(e.source) in inside and key(e.target) in inside and key(e.source) != key(e.target):
            by_source.setdefault(key(e.source), []).append(e)
    start = component[0]
    paths = {start: []}
    frontier = [start]
    while frontier:  # breadth first, back to `start`
        nxt = []
        for v in frontier:
            for e in by_source.get(v, []):
                w = key(e.target)
                if w == start:
                    return paths[v] + [e]
                if w not in paths:
                    paths[w] = paths[v] + [e]
                    nxt.append(w)
        frontier = nxt
    return []


def cycle_report(components: list[list[str]], edges: list[Import], key=lambda name: name) -> str:
    return "\n".join(f"cycle {' <-> '.join(c)}:\n" + "\n".join(f"  {e}" for e in one_cycle(c, edges, key))
                     for c in components)


@pytest.fixture(scope="module")
def graph() -> list[Import]:
    return import_graph()


def test_the_scan_sees_lazy_and_submodule_imports(tmp_path):
    """The scanner itself, on a small package: a function-level import, `from P import sub`,
    a name of P's __init__, a relative import and a lazy table all count, so a cycle through
    any of them is found."""
    pkg = tmp_path / "engine"
    (pkg / "room").mkdir(parents=True)
    (pkg / "__init__.py").write_text("__version__ = '0'\n")
    (pkg / "room" / "__init__.py").write_text("from engine.room.a import thing\n"
                                              "_EXPORTS = {'other': 'engine.room.b'}\n")
    (pkg / "room" / "a.py").write_text("def thing():\n    from engine.room import b\n    return b\n")
    (pkg / "room" / "b.py").write_text("from . import a\nfrom engine import __version__\n")
    (pkg / "low.py").write_text("def f():\n    from engine.room import thing\n")
    edges = {(e.source, e.target, e.line) for e in import_graph(pkg)}
    assert edges == {("engine.room", "engine.room.a", 1), ("engine.room", "engine.room.b", 2),
                     ("engine.room.a", "engine.room.b", 2), ("engine.room.b", "engine.room.a", 1),
                     ("engine.room.b", "engine", 2), ("engine.low", "engine.room", 2)}
    components = strongly_connected(module_files(pkg), import_graph(pkg))
    assert components == [["engine.room.a", "engine.room.b"]]
    assert "engine/room/a.py:2: engine.room.a imports engine.room.b" in cycle_report(components, import_graph(pkg))


def test_no_import_cycle_between_modules(graph):
    """No two modules import each other, directly or through others, at any depth (a package's
    __init__ importing its own submodules is a plain edge; it closes a cycle only when one of
    them imports a name of that __init__ back)."""
    components = strongly_connected(module_files(), graph)
    assert not components, "import cycles between engine modules:\n" + cycle_report(components, graph)


def test_rooms_form_no_cycle(graph):
    components = strongly_connected({room(m) for m in module_files()}, [
        Import(room(e.source), room(e.target), e.file, e.line) for e in graph if room(e.source) != room(e.target)])
    assert not components, "import cycles between rooms:\n" + cycle_report(components, graph, key=room)


def test_every_room_is_declared_in_order():
    rooms = {room(m) for m in module_files()}
    assert len(set(ROOM_ORDER)) == len(ROOM_ORDER)
    assert not rooms - set(ROOM_ORDER), (
        f"rooms not in tests/test_layering.py ROOM_ORDER: {sorted(rooms - set(ROOM_ORDER))}; add each where its "
        "imports put it (above every room it imports, below every room that imports it)")
    assert not set(ROOM_ORDER) - rooms, f"ROOM_ORDER names rooms that no longer exist: {sorted(set(ROOM_ORDER) - rooms)}"


def test_rooms_depend_only_downward(graph):
    rank = {r: i for i, r in enumerate(ROOM_ORDER)}
    upward = [e for e in graph if room(e.source) != room(e.target)
              and rank.get(room(e.target), len(rank)) > rank.get(room(e.source), -1)]
    assert not upward, "imports of a room above the importer's own (tests/test_layering.py ROOM_ORDER):\n" + "\n".join(
        f"  {e} (room {room(e.source)} imports room {room(e.target)}, which is above it)" for e in upward)
