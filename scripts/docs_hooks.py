"""mkdocs hooks (mkdocs.yml `hooks:`), all offline:

- the figures that the benchmarks write to `benchmarks/results/` are served as
  `figures/<name>.png` (or .svg), so a figure has one copy, the script's;
- `<!-- module-doc: conceptlens.methods.labo -->` in a page is replaced by that module's
  docstring (what the implementation follows, its deviations table and notes), so a method's
  page shows its deviations from the one source that docs/deviations.md is generated from;
- numbered notes written side by side ("[5] [7]") stay text: Markdown would read the pair as a
  reference link, and the cross-reference plugin would fail the strict build on it.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "src"))  # module docstrings from this checkout, installed or not
MODULE_DOC = re.compile(r"<!-- module-doc: ([\w.]+) -->")
NOTE_PAIR = re.compile(r"(\[\d+\]) (?=\[\d+\])")


def on_files(files, config):
    for figure in sorted([*FIGURES.glob("*.png"), *FIGURES.glob("*.svg")]):
        files.append(File.generated(config, f"figures/{figure.name}", abs_src_path=str(figure)))
    return files


def _module_doc(match: re.Match) -> str:
    lines = inspect.cleandoc(importlib.import_module(match.group(1)).__doc__ or "").splitlines()
    out: list[str] = []
    for line in lines:  # a table may not interrupt a paragraph: give it its blank line
        if line.startswith("|") and out and out[-1].strip() and not out[-1].startswith("|"):
            out.append("")
        out.append(line)
    return "\n".join(out)


def on_page_markdown(markdown, page, config, files):
    markdown = MODULE_DOC.sub(_module_doc, markdown)
    return NOTE_PAIR.sub(r"\1&#32;", markdown)
