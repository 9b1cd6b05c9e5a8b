"""Write the methods table, generated from the registry, into README.md and docs/methods/index.md
(between `<!-- methods-table:start -->` and `<!-- methods-table:end -->`).

Each row comes from the registered class itself: its name, its class, the first entry of its
docstring's numpydoc "References" section (the paper), what it needs (its declared capability
flags) and its docstring's first line. A newly registered method appears on the next run.

    .venv/bin/python scripts/methods_table.py          # rewrite the table in both files
    .venv/bin/python scripts/methods_table.py --check  # exit 1 when either is out of date
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = (ROOT / "README.md", ROOT / "docs" / "methods" / "index.md")
START, END = "<!-- methods-table:start -->", "<!-- methods-table:end -->"
DISCOVERY = {"pool": "an unlabelled image pool", "words": "a naming vocabulary",
             "sae": "a sparse autoencoder", "codebook": "a token codebook"}


def summary(cls) -> str:
    """The docstring's first sentence-line (its summary), joined if it wraps."""
    doc = inspect.cleandoc(cls.__doc__ or "")
    first = doc.split("\n\n", 1)[0]
    return " ".join(first.split())


def paper(cls) -> str:
    """The first entry of the numpydoc "References" section, without its `.. [1]` label."""
    doc = inspect.cleandoc(cls.__doc__ or "")
    m = re.search(r"^References\n-+\n(.*?)(?:\n\n|\Z)", doc, re.S | re.M)
    if not m:
        return "—"
    entry = re.sub(r"^\.\. \[\w+\]\s*", "", m.group(1).strip())
    return " ".join(entry.split())


def needs(cls) -> str:
    """What fitting the method needs, from its declared flags."""
    out = []
    if getattr(cls, "discovers_concepts", False):
        found = [DISCOVERY.get(n, n) for n in getattr(cls, "discovery_needs", ())]
        out.append("finds its own concepts (" + ", ".join(found) + ")")
    elif getattr(cls, "needs_concepts", True):
        out.append("concepts")
    if getattr(cls, "concept_labelled", False):
        out.append("concept annotations")
    if getattr(cls, "uses_validation", False):
        out.append("validation images")
    if getattr(cls, "input", "embedding") == "features":
        out.append("backbone features")
    return ", ".join(out) or "class prompts only"


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> str:
    from conceptlens.methods import METHODS

    rows = ["| name | class | paper | needs | refits at `target_nec` | what it is |",
            "| --- | --- | --- | --- | --- | --- |"]
    for name in METHODS.names():
        cls = METHODS.get(name)
        rows.append(f"| `{name}` | `{cls.__module__}.{cls.__qualname__}` | {cell(paper(cls))} | "
                    f"{needs(cls)} | {'yes' if getattr(cls, 'refit_at_nec', False) else '—'} | "
                    f"{cell(summary(cls))} |")
    return "\n".join(rows)


def replaced(text: str, table: str, path: Path) -> str:
    if START not in text or END not in text:
        raise SystemExit(f"{path}: no {START} ... {END} markers for the methods table.")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table}\n{END}{tail}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when a file's table is out of date")
    args = ap.parse_args(argv)
    table = render()
    stale = []
    for path in TARGETS:
        text = path.read_text(encoding="utf-8")
        new = replaced(text, table, path)
        if new != text:
            stale.append(path)
            if not args.check:
                path.write_text(new, encoding="utf-8")
                print(f"wrote {path.relative_to(ROOT)}")
    if args.check and stale:
        print("stale methods table in " + ", ".join(str(p.relative_to(ROOT)) for p in stale)
              + ": run scripts/methods_table.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))  # the checkout's conceptlens, also without an install
    sys.exit(main())
