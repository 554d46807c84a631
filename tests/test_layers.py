"""The package's architecture, kept: no import cycles, imports only downwards, a light job side.

Every module of ``fercluster/`` is parsed with ``ast``: imports at module level and inside
functions alike, ``from x import y`` counted as an import of the module ``x.y`` when there is one,
relative imports resolved. Layers, lowest first: base (``fercluster`` itself, ``errors``,
``atomic``, ``lock``, ``fmt``, ``overrides``, ``config``, ``code``) -> data -> train -> orchestration ->
analysis -> cli, where the library's API (``fercluster.api``) sits with the CLI. A module may
import its own layer or lower ones; the exceptions (``EXCEPTIONS``) are the aggregation job's call
into the analysis and the package's lazy re-export of the API (only inside its ``__getattr__``, or
for type checkers). Importing a module does not count as importing its parent packages (their
``__init__`` only holds docstrings and re-exports).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fercluster"
LAYERS = ("base", "data", "train", "orchestration", "analysis", "cli")
BASE = {
    "fercluster",
    "fercluster.errors",
    "fercluster.atomic",
    "fercluster.lock",
    "fercluster.fmt",
    "fercluster.overrides",
    "fercluster.yaml_io",
    "fercluster.config_errors",
    "fercluster.config",
    "fercluster.code",
}
TOP = "fercluster.api"  # the library's API: a layer of its own would sit where the CLI does, at the top
EXCEPTIONS = {
    ("fercluster.orchestration.jobs", "fercluster.analysis.report"),  # aggregate_job, deferred
    ("fercluster", "fercluster.api"),  # PEP 562 lazy re-export (test_the_package_reexports_the_api_lazily)
}
JOB_SIDE_BANNED = ("submitit", "ray", "rich", "matplotlib", "typer")


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__``)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The fercluster module ``name`` is, or is inside (an attribute import); None if not ours."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def imports(module: str, path: Path, known: dict[str, Path]) -> dict[str, int]:
    """fercluster modules that ``module`` imports anywhere in its file, with the first line of each."""
    is_package = path.name == "__init__.py"
    out: dict[str, int] = {}

    def add(target: str | None, line: int) -> None:
        if target is not None and target != module:
            out.setdefault(target, line)

    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(_resolve(alias.name, known), node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package, one level up per extra dot
                package = module.split(".") if is_package else module.split(".")[:-1]
                base = ".".join(package[: len(package) - (node.level - 1)])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            for alias in node.names:
                full = f"{source}.{alias.name}"
                add(full if full in known else _resolve(source, known), node.lineno)
    return out


def graph() -> dict[str, dict[str, int]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def layer(module: str) -> str | None:
    if module in BASE:
        return "base"
    if module == TOP or module.startswith(TOP + "."):
        return "cli"
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS[1:] else None


def where(module: str, line: int) -> str:
    return f"{modules()[module].relative_to(PACKAGE.parent)}:{line}"


def cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle (as a path a -> ... -> a) per strongly connected component with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan; the package is small enough for recursion
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, {}):
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
                components.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return [_cycle_in(component, edges) for component in components]


def _cycle_in(component: list[str], edges: dict[str, dict[str, int]]) -> list[str]:
    """A shortest path from the component's first module back to itself, inside the component."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(edges.get(v, {})):
            if w == start:
                return paths[v] + [start]
            if w in members and w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    return component


def test_the_parser_sees_imports_inside_functions_and_resolves_them() -> None:
    edges = graph()
    assert "fercluster.orchestration.slurm.requeue" in edges["fercluster.orchestration.jobs"]  # inside a function
    assert "fercluster.analysis.report" in edges["fercluster.orchestration.jobs"]
    assert "fercluster.orchestration.slurm.parse" in edges["fercluster.orchestration.fake"]  # from pkg import module
    assert cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [["a", "b", "c", "a"]]
    assert layer("fercluster.config") == "base" and layer("fercluster.orchestration.tune.search") == "orchestration"
    assert layer("fercluster.api") == layer("fercluster.api.sweep_results") == "cli"


def test_no_import_cycles() -> None:
    edges = graph()
    found = cycles(edges)
    lines = []
    for cycle in found:
        steps = [f"{a} -> {b} ({where(a, edges[a][b])})" for a, b in zip(cycle, cycle[1:], strict=False)]
        lines.append("cycle: " + "; ".join(steps))
    assert not found, "\n".join(lines)


def test_imports_point_down_the_layers() -> None:
    edges = graph()
    unplaced = sorted(m for m in edges if layer(m) is None)
    assert not unplaced, f"modules in no layer (add them to BASE or a layer folder): {unplaced}"
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = []
    for source, targets in sorted(edges.items()):
        for target, line in sorted(targets.items()):
            if rank[layer(target)] > rank[layer(source)] and (source, target) not in EXCEPTIONS:
                upward.append(f"{where(source, line)}: {source} ({layer(source)}) -> {target} ({layer(target)})")
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_exceptions_are_still_needed() -> None:
    edges = graph()
    stale = [pair for pair in EXCEPTIONS if pair[1] not in edges.get(pair[0], {})]
    assert not stale, f"exceptions that no import uses any more (remove them): {stale}"


def test_job_side_imports_without_the_heavy_or_interactive_packages() -> None:
    names = sorted(m for m in modules() if layer(m) in ("data", "train"))
    code = textwrap.dedent(
        f"""
        import importlib, sys
        for name in {names!r}:
            importlib.import_module(name)
        print(",".join(sorted({{m.split(".")[0] for m in sys.modules}} & set({JOB_SIDE_BANNED!r}))))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=PACKAGE.parent)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = proc.stdout.strip()
    assert not loaded, f"importing fercluster.data and fercluster.train loaded: {loaded}"


def test_the_package_reexports_the_api_lazily() -> None:
    """``import fercluster`` (what every job does first) loads no layer above the job side; the
    API's names resolve on first use. Its imports of the API are inside ``__getattr__`` or under
    ``if TYPE_CHECKING:``, never run at import."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    lazy: set[int] = set()
    for node in ast.walk(tree):
        lazy_block = (isinstance(node, ast.FunctionDef) and node.name == "__getattr__") or (
            isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
        )
        if lazy_block:
            lazy |= {id(n) for n in ast.walk(node)}
    known = modules()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in lazy:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [
                f"{node.module}.{a.name}" for a in node.names]  # fmt: skip
            above = [n for n in names if (m := _resolve(n, known)) and layer(m) not in ("base", None)]
            assert not above, f"fercluster/__init__.py:{node.lineno} imports {above} at import time"
    code = textwrap.dedent(
        """
        import sys
        import fercluster
        before = sorted(m for m in sys.modules if m.startswith("fercluster."))
        import fercluster.train.job, fercluster.data
        heavy = sorted(m for m in sys.modules if m.split(".")[:2] in
                       (["fercluster", "api"], ["fercluster", "orchestration"], ["fercluster", "analysis"],
                        ["fercluster", "cli"]) or m.split(".")[0] in ("rich", "submitit", "ray", "typer"))
        print(before, heavy)
        assert callable(fercluster.results) and fercluster.load_config.__module__ == "fercluster.config"
        assert "fercluster.api" in sys.modules and set(fercluster.__all__) <= set(dir(fercluster))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=PACKAGE.parent)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "[] []", (
        f"import fercluster loaded (fercluster.*, then above the job side): {proc.stdout}"
    )


# -- size: modules under about 400 lines, functions under about 50, folders of about ten modules ----
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 50
MAX_FOLDER_MODULES = 10  # a folder of orchestration/ holds at most this many modules, grouped by what they do
LONG_MODULE = "# Over 400 lines:"  # within the module's first 30 lines: why it stays whole
LONG_FUNCTION = "# Over 50 lines:"  # within the function's first 3 lines (def and docstring aside): why


def long_functions(path: Path) -> list[str]:
    """``file:line name (N lines)`` of each function over the limit that does not say why."""
    lines = path.read_text().splitlines()
    out = []
    for node in ast.walk(ast.parse("\n".join(lines), filename=str(path))):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        length = node.end_lineno - node.lineno + 1
        first = node.body[0]
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and len(node.body) > 1:
            first = node.body[1]  # past the docstring
        head = lines[first.lineno - 4 : first.lineno + 2]
        if length > MAX_FUNCTION_LINES and not any(LONG_FUNCTION in ln for ln in head):
            out.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({length} lines)")
    return out


def test_functions_are_short_or_say_why() -> None:
    found = [f for path in modules().values() for f in long_functions(path)]
    assert not found, (
        f"functions over {MAX_FUNCTION_LINES} lines without a `{LONG_FUNCTION} <why>` comment at the top:\n"
        + "\n".join(found)
    )


def test_modules_are_short_or_say_why() -> None:
    found = []
    for path in modules().values():
        lines = path.read_text().splitlines()
        if len(lines) > MAX_MODULE_LINES and not any(LONG_MODULE in ln for ln in lines[:30]):
            found.append(f"{path.relative_to(PACKAGE.parent)} ({len(lines)} lines)")
    assert not found, f"modules over {MAX_MODULE_LINES} lines without a `{LONG_MODULE}` comment:\n" + "\n".join(found)


def test_folders_hold_about_ten_modules() -> None:
    crowded = []
    for folder in sorted({p.parent for p in modules().values() if "orchestration" in p.parts}):
        own = [p for p in folder.glob("*.py") if p.name != "__init__.py"]
        if len(own) > MAX_FOLDER_MODULES:
            crowded.append(f"{folder.relative_to(PACKAGE.parent)}: {len(own)} modules")
    assert not crowded, "folders of more than about ten modules (group them by what they do):\n" + "\n".join(crowded)


def test_the_size_checks_can_fail(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES + 5))
    sample.write_text(f"def big():\n{body}\n\n\ndef why():\n    {LONG_FUNCTION} a table\n{body}\n")
    global PACKAGE
    saved, PACKAGE = PACKAGE, tmp_path
    try:
        assert [f.split(" ")[1] for f in long_functions(sample)] == ["big"]
    finally:
        PACKAGE = saved
