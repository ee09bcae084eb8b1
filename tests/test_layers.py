"""The layering rules of docs/architecture.md, checked on the source: every module of sweep/,
analysis/ and dashboard/ is parsed with `ast` and its imports (top-level and inside functions,
relative ones resolved) are held against the rules.

    probes (sweep/probes/)    never import ray, duckdb, pyarrow or fsspec
    analysis/, dashboard/     never import torch (nor torchvision, timm) or ray
    timm                      imported only by sweep/encoders/timm_models.py
    ray                       imported only by sweep/run/distribute.py
    analysis -> sweep         only sweep.schema, sweep.errors, sweep.files, sweep.params
    size                      no module outside tests/ over 450 lines
    sys.path                  never edited in tests/ or benchmarks/ (package imports instead)
    `probe ==` switches       none outside sweep/probes/ (each probe owns what is known about it)
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERED = ("sweep", "analysis", "dashboard")
MAX_LINES = 450
TIMM_HOME = "sweep/encoders/timm_models.py"
RAY_HOME = "sweep/run/distribute.py"
ANALYSIS_MAY_IMPORT = {"sweep.schema", "sweep.errors", "sweep.files", "sweep.params"}
PROBES_NEVER = {"ray", "duckdb", "pyarrow", "fsspec"}
NO_TORCH_NO_RAY = {"torch", "torchvision", "timm", "ray"}
SKIP_DIRS = {"__pycache__", ".venv", ".git", ".mutants", "mutants", "build", "dist", ".bench-cache"}


def _modules(*tops: str) -> list[Path]:
    found = []
    for top in tops:
        for path in sorted((REPO / top).rglob("*.py")):
            if not SKIP_DIRS.intersection(path.relative_to(REPO).parts):
                found.append(path)
    return found


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _package(path: Path) -> list[str]:
    """The dotted package a module belongs to (for resolving relative imports)."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return parts[:-1] if parts[-1] != "__init__" else parts[:-1]


def imports(path: Path) -> list[tuple[int, str]]:
    return list(_imports(ast.parse(path.read_text(), filename=str(path)), _package(path)))


def _imports(tree: ast.AST, package: list[str]) -> Iterator[tuple[int, str]]:
    """(line, absolute dotted name) of every import in the module; `from a import b` yields both
    `a` and `a.b` (b may be a submodule)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield node.lineno, module
            for alias in node.names:
                if alias.name != "*":
                    yield node.lineno, f"{module}.{alias.name}"


def _top(name: str) -> str:
    return name.split(".")[0]


def _violations(paths: list[Path], bad: set[str]) -> list[str]:
    return sorted({f"{_rel(p)}:{line} imports {name}" for p in paths for line, name in imports(p) if _top(name) in bad})


def test_probes_import_no_ray_duckdb_pyarrow_or_fsspec() -> None:
    probes = _modules("sweep/probes")
    assert probes, "sweep/probes/ has no modules"
    assert _violations(probes, PROBES_NEVER) == []


def test_analysis_and_dashboard_import_no_torch_or_ray() -> None:
    assert _violations(_modules("analysis", "dashboard"), NO_TORCH_NO_RAY) == []


@pytest.mark.parametrize(("package", "home"), [("timm", TIMM_HOME), ("ray", RAY_HOME)])
def test_one_module_imports_each_heavy_engine(package: str, home: str) -> None:
    assert (REPO / home).is_file(), f"{home} is missing"
    others = [p for p in _modules(*LAYERED) if _rel(p) != home]
    assert _violations(others, {package}) == [], f"only {home} may import {package}"
    assert any(_top(name) == package for _, name in imports(REPO / home)), f"{home} does not import {package}"


def test_analysis_imports_from_sweep_only_its_shared_contracts() -> None:
    found = set()
    for path in _modules("analysis"):
        for line, name in imports(path):
            if _top(name) != "sweep" or name in ANALYSIS_MAY_IMPORT:
                continue
            if name == "sweep" or any(name.startswith(f"{ok}.") for ok in ANALYSIS_MAY_IMPORT):
                continue  # `from sweep import schema` (sweep, sweep.schema) and names inside them
            if ".".join(name.split(".")[:-1]) in ANALYSIS_MAY_IMPORT:
                continue
            found.add(f"{_rel(path)}:{line} imports {name}")
    assert sorted(found) == []


def test_no_module_outside_tests_exceeds_450_lines() -> None:
    tops = [p.name for p in REPO.iterdir() if p.is_dir() and p.name not in SKIP_DIRS | {"tests"}
            and not p.name.startswith(".")]
    long = {_rel(p): n for p in _modules(*tops) if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def _edits_sys_path(tree: ast.AST) -> Iterator[int]:
    def is_sys_path(node: ast.AST) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr == "path"
                and isinstance(node.value, ast.Name) and node.value.id == "sys")

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_sys_path(node.value):  # sys.path.insert(...), .append, …
            yield node.lineno
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                inner = target.value if isinstance(target, ast.Subscript) else target
                if is_sys_path(inner):  # sys.path = …, sys.path[:0] = …, sys.path += …
                    yield node.lineno


def test_no_sys_path_edits_in_tests_or_benchmarks() -> None:
    found = [f"{_rel(p)}:{line}" for p in _modules("tests", "benchmarks")
             for line in _edits_sys_path(ast.parse(p.read_text(), filename=str(p)))]
    assert found == []


def _probe_switches(tree: ast.AST) -> Iterator[int]:
    """`probe == "match"`, `probe != "…"`, `probe in ("match", …)`, `match probe: case "…"`: a
    branch on a probe's name (a name, attribute or key called `probe` against string literals)."""

    def is_probe(node: ast.AST) -> bool:
        if isinstance(node, ast.Name):
            return node.id == "probe"
        if isinstance(node, ast.Attribute):
            return node.attr == "probe"
        return (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant)
                and node.slice.value == "probe")

    def is_names(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return isinstance(node.value, str)
        return isinstance(node, (ast.Tuple, ast.List, ast.Set)) and all(is_names(e) for e in node.elts)

    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for op, left, right in zip(node.ops, operands, operands[1:]):
                if isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)) and (
                        (is_probe(left) and is_names(right)) or (is_probe(right) and is_names(left))):
                    yield node.lineno
        elif isinstance(node, ast.Match) and is_probe(node.subject):
            yield node.lineno


def test_no_probe_switches_outside_the_probes() -> None:
    found = [f"{_rel(p)}:{line}" for p in _modules(*LAYERED) if not _rel(p).startswith("sweep/probes/")
             for line in _probe_switches(ast.parse(p.read_text(), filename=str(p)))]
    assert found == []


def test_the_checks_see_what_they_look_for() -> None:
    """The parsers above on small sources, so that a rule that passes is not passing blind."""
    tree = ast.parse("import sys\nsys.path.insert(0, 'x')\nsys.path[:0] = ['y']\nprint(sys.path)\n")
    assert sorted(_edits_sys_path(tree)) == [2, 3]
    tree = ast.parse("if probe == 'match': pass\nif u['probe'] == probe: pass\nif 'lipschitz' != row.probe: pass\n"
                     "ok = probe in ('match', 'perturb')\n")
    assert sorted(_probe_switches(tree)) == [1, 3, 4]
    tree = ast.parse("from . import db\nfrom ..run.store import RunStore\ndef f():\n    import ray.util\n")
    assert sorted(_imports(tree, ["sweep", "finished"])) == [
        (1, "sweep.finished"), (1, "sweep.finished.db"), (2, "sweep.run.store"), (2, "sweep.run.store.RunStore"),
        (4, "ray.util")]
