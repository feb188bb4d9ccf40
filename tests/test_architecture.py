"""The house rules of the package, as tests: stages in layers, no import cycles, a light root.

Imports are read from the source with :mod:`ast`, lazy ones (inside functions) included, so a cycle
cannot hide behind a function-level import.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "loopexp"

#: The stages, lowest first: a module may import its own stage and the stages before it, never a
#: later one. The order is the loop's, with the vocabulary every stage shares (core, stats, the
#: event table and the metric definitions a spec names) underneath the spec that uses it.
LAYERS = (
    "core",
    "stats",
    "events",
    "collect",
    "metrics",
    "design",
    "assignment",
    "analysis",
    "learn",
    "report",
    "track",
    "run",
    "sim",
    "cli",
)

#: Third-party packages only some stages may import, and where.
CONFINED = {
    "mlflow": ("loopexp.track",),
    "papermill": ("loopexp.run.notebook",),
    "pyspark": ("loopexp.metrics.spark",),
    "starlette": ("loopexp.collect",),
    "uvicorn": ("loopexp.collect",),
    "boto3": ("loopexp.collect.bucket", "loopexp.events.remote"),
    # policy learning (issue 27): the outcome models and the policy tree
    "sklearn": ("loopexp.learn.policy",),
    # the team extra: the advisory run lock, the store's pre-flight
    "psycopg": ("loopexp.run.lock",),
    "sqlalchemy": ("loopexp.track.store",),
}
#: Engines the statistics never touch: stats works on sufficient statistics.
ENGINES = ("duckdb", "pyspark", "polars", "mlflow", "pyarrow")

#: What ``import loopexp`` must not load (each costs from 0.1 to 2 s).
HEAVY = ("scipy", "statsmodels", "duckdb", "mlflow", "papermill", "matplotlib", "pyspark")
HEAVY += ("sklearn",)  # policy learning (issue 27)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str) -> str:
    """The loopexp module an import of ``name`` loads (a package, a module, or its parent)."""
    mods = modules()
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name


@cache
def imports() -> dict[str, dict[str, set[str]]]:
    """``{module: {"loopexp": {modules}, "external": {top-level packages}}}``, lazy ones
    included."""
    graph: dict[str, dict[str, set[str]]] = {}
    for name, path in modules().items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        internal: set[str] = set()
        external: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            for target in targets:
                if target.split(".")[0] == "loopexp":
                    resolved = _resolve(target)
                    if resolved and resolved != name:
                        internal.add(resolved)
                else:
                    external.add(target.split(".")[0])
        graph[name] = {"loopexp": internal, "external": external}
    return graph


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_lives_in_a_stage():
    stray = [m for m in modules() if m != "loopexp" and _stage(m) not in LAYERS]
    assert not stray, f"modules outside the stages {LAYERS}: {stray}"


def test_no_import_cycle_counting_lazy_imports():
    graph = {m: deps["loopexp"] - {"loopexp"} for m, deps in imports().items()}
    assert not _cycles(graph)


def test_stages_import_only_earlier_stages():
    violations = []
    for module, deps in imports().items():
        stage = _stage(module)
        if stage is None:  # the root only names public objects, loaded lazily
            continue
        for dep in deps["loopexp"]:
            dep_stage = _stage(dep)
            if dep_stage is None or LAYERS.index(dep_stage) > LAYERS.index(stage):
                violations.append(f"{module} ({stage}) imports {dep} ({dep_stage})")
    assert not violations, "\n".join(sorted(violations))


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("package", sorted(CONFINED))
def test_confined_third_party_imports(package):
    allowed = CONFINED[package]
    where = sorted(
        m
        for m, deps in imports().items()
        if package in deps["external"] and not m.startswith(allowed)
    )
    assert not where, f"{package} imported outside {allowed}: {where}"


def test_stats_imports_no_engine_and_no_later_stage():
    for module, deps in imports().items():
        if _stage(module) == "stats":
            assert not deps["external"] & set(ENGINES), module
            assert all(_stage(d) in ("core", "stats") for d in deps["loopexp"]), module


@pytest.mark.parametrize(
    "statement",
    ["import loopexp", "import loopexp.cli", "import loopexp.core.config, loopexp.core.errors"],
)
def test_light_imports(statement):
    code = f"{statement}; import sys; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "", f"`{statement}` loads {loaded}"


def test_public_names_resolve_lazily():
    import loopexp

    for name in loopexp.__all__:
        assert getattr(loopexp, name) is not None
    assert callable(loopexp.assign), "the function, not the assignment stage"
    with pytest.raises(AttributeError):
        _ = loopexp.no_such_name


def test_graph_reads_lazy_imports():
    """The reader sees an import inside a function (the kind that hid cycles before)."""
    module = "loopexp.cli.run"  # the `loopexp run` command: it imports the pipeline when it runs
    tree = ast.parse(modules()[module].read_text(encoding="utf-8"))
    top_level = {
        node.module for node in tree.body if isinstance(node, ast.ImportFrom) and node.module
    }
    assert "loopexp.run.pipeline" not in top_level, "the pipeline is imported lazily"
    assert "loopexp.run.pipeline" in imports()[module]["loopexp"]
    assert defaultdict  # keeps the import list honest for readers


def test_lazy_table_covers_all_public_names():
    import loopexp

    assert sorted(loopexp.__all__) == sorted(loopexp._PUBLIC)


# --- size ---------------------------------------------------------------------------------------

MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80

#: Modules and functions allowed over the limits, each with the reason a reader needs.
#: An entry is removed when its module or function is split; a stale entry fails the test below.
SIZE_EXCEPTIONS: dict[str, str] = {}


def _oversized() -> dict[str, int]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).as_posix()
        source = path.read_text(encoding="utf-8")
        if (n := len(source.splitlines())) > MAX_MODULE_LINES:
            found[rel] = n
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found[f"{rel}::{node.name}"] = length
    return found


def test_modules_and_functions_stay_readable():
    over = {k: v for k, v in _oversized().items() if k not in SIZE_EXCEPTIONS}
    assert not over, f"over {MAX_MODULE_LINES} lines (module) or {MAX_FUNCTION_LINES} (function)"


def test_size_exceptions_are_current():
    stale = sorted(set(SIZE_EXCEPTIONS) - set(_oversized()))
    assert not stale, f"no longer over the limit: remove {stale} from SIZE_EXCEPTIONS"


def test_readme_layout_names_every_stage_and_only_real_paths():
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    import re

    paths = re.findall(r"`(loopexp/[\w/]*)`", layout)
    assert [p for p in paths if not (PACKAGE.parent / p).exists()] == []
    assert [s for s in LAYERS if f"loopexp/{s}/" not in paths] == []


# --- one configuration, one set of tag names, one error base ------------------------------------


def _string_constants(path: Path) -> list[tuple[int, str]]:
    """String literals of a module that are not docstrings."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_loopexp_variables_are_read_in_one_module():
    import re

    spelled = [
        f"{name}:{line}"
        for name, path in modules().items()
        if name != "loopexp.core.config"
        for line, text in _string_constants(path)
        if re.fullmatch(r"LOOPEXP_[A-Z_]+", text)
    ]
    assert not spelled, f"LOOPEXP_* spelled outside loopexp/core/config.py: {spelled}"


def test_tag_names_are_spelled_in_one_module():
    import re

    spelled = [
        f"{name}:{line} {text}"
        for name, path in modules().items()
        if name != "loopexp.core.tags"
        for line, text in _string_constants(path)
        if re.fullmatch(r"loopexp\.[a-z_.]+", text)
        and text not in modules()  # a module path (lazy public names), not a tag
        and text not in ("loopexp.notebooks", "loopexp.experiments")  # packaged data folders
    ]
    assert not spelled, f"tag names spelled outside loopexp/core/tags.py: {spelled}"


def test_every_loopexp_exception_derives_from_one_base():
    import importlib

    from loopexp.core.errors import LoopexpError

    outside = []
    for name in modules():
        if name.endswith("__main__"):
            continue  # running it is its only effect
        module = importlib.import_module(name)
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and issubclass(obj, BaseException)
                and obj.__module__.startswith("loopexp")
                and not issubclass(obj, LoopexpError)
            ):
                outside.append(f"{obj.__module__}.{obj.__qualname__}")
    assert not outside, f"exceptions not derived from LoopexpError: {sorted(set(outside))}"
