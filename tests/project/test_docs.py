"""Documentation generated from the code stays in step with it."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_deviations_page_is_generated_from_the_docstrings():
    """docs/deviations.md lists every method's differences from its authors' code; it must
    match the docstrings it is generated from (run scripts/deviations.py after editing one)."""
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "deviations.py"), "--check"])
    assert r.returncode == 0, "docs/deviations.md is stale: run .venv/bin/python scripts/deviations.py"


# -- the methods table and each method's parameters, from the registry --------------------------

def _load_script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def documented_parameters(doc: str | None) -> set[str]:
    """The names in a numpydoc "Parameters" section (`name : type` lines at the section's indent;
    `a, b : type` documents both), up to the next section header (a title over a dashed line)."""
    lines = inspect.cleandoc(doc or "").splitlines()
    try:
        start = next(i for i in range(len(lines) - 1)
                     if lines[i].strip() == "Parameters" and set(lines[i + 1].strip()) == {"-"})
    except StopIteration:
        return set()
    names: set[str] = set()
    for i in range(start + 2, len(lines)):
        line = lines[i]
        if i + 1 < len(lines) and line.strip() and set(lines[i + 1].strip()) == {"-"}:
            break  # the next section
        if line and not line[0].isspace():
            head = line.split(" : ", 1)[0]
            names.update(n.strip() for n in head.split(","))
    return names


def registered_methods():
    from conceptlens.methods import METHODS

    return [(name, METHODS.get(name)) for name in METHODS.names()]


@pytest.mark.parametrize(("name", "cls"), registered_methods(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_constructor_parameter_is_documented(name, cls):
    """help() of every registered method describes every constructor parameter, in a numpydoc
    "Parameters" section of the class's own docstring (which the API reference renders)."""
    params = cls._param_names()
    documented = documented_parameters(cls.__doc__)  # a class's own: __doc__ is not inherited
    missing = [p for p in params if p not in documented]
    assert not missing, (f"{cls.__qualname__} ({name!r}) does not document {missing} in a numpydoc "
                         "'Parameters' section of its class docstring")
    extra = sorted(documented - set(params))
    assert not extra, f"{cls.__qualname__} documents parameters it does not take: {extra}"
    assert cls.__doc__.strip().splitlines()[0].strip(), f"{cls.__qualname__}: no summary line"


def test_documented_parameters_reads_numpydoc():
    doc = """Summary.

    Parameters
    ----------
    a : int, default 1
        The a.
    b, c : float
        Both.
    d
        Untyped.

    References
    ----------
    e : not a parameter
    """
    assert documented_parameters(doc) == {"a", "b", "c", "d"}
    assert documented_parameters("No sections.") == set()


def test_methods_table_is_generated_from_the_registry():
    """README.md and docs/methods/index.md hold the table scripts/methods_table.py renders from the
    registry (run it after adding a method or editing a class docstring's first line)."""
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "methods_table.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr + "run .venv/bin/python scripts/methods_table.py"


def test_a_new_method_appears_in_the_table_with_no_edit(monkeypatch):
    from conceptlens.methods import METHODS, Method

    class Dummy(Method):
        """A dummy bottleneck for this test.

        Parameters
        ----------
        k : int, default 3
            Anything.

        References
        ----------
        Someone et al., "A Paper", Somewhere 2030.
        """

        uses_validation = True

        def __init__(self, k: int = 3):
            self.k = k

    monkeypatch.setitem(METHODS._factories, "zz_dummy", Dummy)
    table = _load_script("methods_table").render()
    row = next(line for line in table.splitlines() if line.startswith("| `zz_dummy` |"))
    assert "A dummy bottleneck for this test." in row
    assert 'Someone et al., "A Paper", Somewhere 2030.' in row
    assert "concepts, validation images" in row
    for name, _ in registered_methods():
        assert f"| `{name}` |" in table


# -- the README: short, its two commands true, its links alive -----------------------------------

README = ROOT / "README.md"
DEMO = "bash scripts/bootstrap.sh && .venv/bin/conceptlens demo"
TESTS = "bash scripts/bootstrap.sh && .venv/bin/python -m pytest"


def test_readme_is_short_and_its_two_commands_are_true():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    first_screen = "\n".join(text.splitlines()[:20])
    assert DEMO in first_screen and TESTS in first_screen
    ci = (ROOT / ".ci" / "run").read_text()
    for step in TESTS.split(" && "):  # CI runs the README's test command (other checks may sit between)
        assert step in ci, f".ci/run does not run {step!r}, a step of the README's test command"
    from conceptlens.cli import build_parser

    assert "demo" in build_parser()._subparsers._group_actions[0].choices


def test_readme_and_docs_links_point_at_files():
    """Every relative link of the README and of the docs pages names a file that exists (mkdocs
    build --strict checks the site's; this checks the README's too, which GitHub renders)."""
    import re

    pages = [README, *sorted((ROOT / "docs").rglob("*.md"))]
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            path = (page.parent / target).resolve()
            if target.startswith("../figures/"):  # served by scripts/docs_hooks.py
                path = ROOT / "benchmarks" / "results" / Path(target).name
            assert path.exists(), f"{page.relative_to(ROOT)} links to {target}, which does not exist"


def test_every_docs_page_is_in_the_nav():
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in (ROOT / "docs").rglob("*.md"):
        rel = page.relative_to(ROOT / "docs").as_posix()
        assert f": {rel}" in text, f"docs/{rel} is not in mkdocs.yml's nav"
