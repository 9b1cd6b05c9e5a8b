"""Write docs/deviations.md: every "Deviations from the reference" table, gathered from the
docstrings of the modules that implement a published method (the docstring is the source).

    .venv/bin/python scripts/deviations.py          # rewrite docs/deviations.md
    .venv/bin/python scripts/deviations.py --check  # exit 1 when the page is out of date
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

# the modules that implement a method are found from the registry (METHODS): each method's module
# with a "Deviations from the reference" section is listed, titled by its docstring's first
# paragraph, so adding a method needs no edit here. These are the other modules (pieces a method
# shares or a protocol) with such a section:
OTHER_MODULES = {  # module -> what it implements
    "conceptlens.concepts.filters": "Label-free CBM's concept filters",
    "conceptlens.evaluation.nec": "accuracy at NEC = 5: VLG-CBM's protocol",
    "conceptlens.data.confounded": "confounded-shift tasks: KnoBo's ID/OOD protocol",
    "conceptlens.evaluation.shift": "ID/OOD accuracy and test-time improvement under a confounded shift",
    "conceptlens.discovery.sae": "`dn_cbm`'s sparse autoencoder: Discover-then-Name (Rao et al., ECCV 2024)",
    "conceptlens.discovery.naming": "`dn_cbm`'s latent naming",
    "conceptlens.discovery.vocabulary": "the naming vocabulary (CLIP-Dissect's 20k words; here wordfreq)",
    "conceptlens.concepts.v2c": "V2C-CBM's concept discovery (He et al., AAAI 2025)",
    "conceptlens.data.video": "video decoding and windows: MoTIF (Knab et al., 2025)",
    "conceptlens.features.video_encode": "per-window video encoding: MoTIF",
    "conceptlens.explain.attribution": "where concepts look: input attributions (Furby et al., 2024)",
}
MARK = "Deviations from the reference"


def method_modules() -> dict[str, str]:
    """module -> title (its docstring's first paragraph) of every registered method's module that
    has a deviations section, in the order of the registered names."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    from conceptlens.methods import METHODS

    out = {}
    for name in METHODS.names():
        module = METHODS.get(name).__module__
        doc = importlib.import_module(module).__doc__ or ""
        if module not in out and MARK in doc:
            out[module] = " ".join(doc.strip().split("\n\n")[0].split())
    return out


OUT = Path(__file__).resolve().parent.parent / "docs" / "deviations.md"


def section(doc: str) -> str:
    """From the 'Deviations from the reference' line to the end of the docstring."""
    start = doc.index(MARK)
    title, _, rest = doc[start:].strip().partition("\n")
    return f"**{title.strip()}**\n\n{rest.strip()}"  # a table may not interrupt a paragraph


def render() -> str:
    parts = ["# Deviations from the authors' code\n",
             "Each method follows its authors' code (cited in its module docstring); what differs is",
             "listed here, with why and the effect where measured. Generated from the docstrings by",
             "`scripts/deviations.py`; edit the docstring, not this page.\n"]
    for name, what in {**method_modules(), **OTHER_MODULES}.items():
        doc = importlib.import_module(name).__doc__ or ""
        parts += [f"## {what}", f"`src/{name.replace('.', '/')}.py`\n", section(doc), ""]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    text = render()
    if ap.parse_args().check:
        sys.exit(0 if OUT.is_file() and OUT.read_text() == text else 1)
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT}")
