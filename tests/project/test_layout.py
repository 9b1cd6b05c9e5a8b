"""The tests folder mirrors the package: each test file sits in the folder of the subpackage it
tests, and no test module imports another (shared helpers ship in conceptlens.testing; shared
fixtures live in a conftest.py)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
PACKAGE = TESTS.parent / "src" / "conceptlens"
# folders that mirror no subpackage: the package's top-level modules (api, sklearn, cache,
# threads, validation, ...), and the project around it (docs, examples, benchmarks, fuzzing)
EXTRA = {"core", "project"}


def _subpackages() -> set[str]:
    return {p.parent.name for p in PACKAGE.glob("*/__init__.py")}


def _test_module_names() -> set[str]:
    return {p.stem for p in TESTS.rglob("*.py")}


def test_every_test_file_sits_in_a_folder_that_mirrors_the_package():
    allowed = _subpackages() | EXTRA
    misplaced = [str(p.relative_to(TESTS)) for p in TESTS.rglob("test_*.py")
                 if len(p.relative_to(TESTS).parts) != 2 or p.parent.name not in allowed]
    assert not misplaced, f"move these into tests/<subpackage>/ (or {sorted(EXTRA)}): {misplaced}"
    assert not [p for p in TESTS.glob("*.py") if p.name != "conftest.py"], \
        "only conftest.py belongs at the top of tests/"


def test_folder_names_are_real_subpackages():
    unknown = {p.name for p in TESTS.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))}
    assert unknown <= _subpackages() | EXTRA, unknown - _subpackages() - EXTRA


def test_test_file_names_are_unique():
    # pytest's default import mode puts each test folder on sys.path: equal basenames collide
    names = [p.name for p in TESTS.rglob("test_*.py")]
    assert len(names) == len(set(names)), sorted({n for n in names if names.count(n) > 1})


def _imported(tree: ast.AST) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.append((node.lineno, node.module.split(".")[0]))
        elif isinstance(node, ast.ImportFrom) and node.level:
            out.append((node.lineno, "." * node.level + (node.module or "")))
    return out


def test_no_test_module_imports_another():
    local = _test_module_names() | {"conftest", "tests"}
    found = []
    for path in TESTS.rglob("*.py"):
        for line, name in _imported(ast.parse(path.read_text(encoding="utf-8"))):
            if name.startswith(".") or name in local:
                found.append(f"{path.relative_to(TESTS)}:{line} imports {name}")
    assert not found, "use conceptlens.testing or a conftest fixture instead: " + "; ".join(found)


def test_the_layout_check_sees_an_import_of_a_test_module():
    # the check above must be able to fail: a module that imports a sibling test module
    tree = ast.parse("from test_runs import tiny_setup\nimport conftest\nfrom . import helpers\n")
    names = [n for _, n in _imported(tree)]
    assert names == ["test_runs", "conftest", "."]
    assert "test_runs" in _test_module_names()
