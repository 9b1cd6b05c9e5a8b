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

MODULES = {  # module -> what it implements
    "conceptlens.methods.labo": "`labo`: LaBo (Yang et al., CVPR 2023)",
    "conceptlens.methods.label_free": "`label_free`: Label-free CBM (Oikarinen et al., ICLR 2023)",
    "conceptlens.concepts.filters": "Label-free CBM's concept filters",
    "conceptlens.methods.posthoc":
        "`posthoc`, `posthoc_hybrid`: Post-hoc CBM (Yuksekgonul et al., ICLR 2023)",
    "conceptlens.methods.sparse_cbm": "`sparse_cbm`, `cms`: Sparse-CBM (Semenov et al., 2024)",
    "conceptlens.evaluation.nec": "accuracy at NEC = 5: VLG-CBM's protocol",
    "conceptlens.methods.knobo": "`knobo`: Knowledge-enhanced Bottlenecks (Yang et al., NeurIPS 2024)",
    "conceptlens.data.confounded": "confounded-shift tasks: KnoBo's ID/OOD protocol",
    "conceptlens.evaluation.shift": "ID/OOD accuracy and test-time improvement under a confounded shift",
    "conceptlens.discovery.sae": "`dn_cbm`'s sparse autoencoder: Discover-then-Name (Rao et al., ECCV 2024)",
    "conceptlens.methods.dn_cbm": "`dn_cbm`: Discover-then-Name CBM (Rao et al., ECCV 2024)",
    "conceptlens.discovery.naming": "`dn_cbm`'s latent naming",
    "conceptlens.discovery.vocabulary": "the naming vocabulary (CLIP-Dissect's 20k words; here wordfreq)",
    "conceptlens.concepts.v2c": "V2C-CBM's concept discovery (He et al., AAAI 2025)",
    "conceptlens.methods.v2c": "`v2c`: V2C-CBM (He et al., AAAI 2025)",
    "conceptlens.methods.cbm": "`cbm`: Concept Bottleneck Models (Koh et al., ICML 2020)",
    "conceptlens.methods.ecbm": "`ecbm`: Energy-based CBM (Xu et al., ICLR 2024)",
    "conceptlens.data.video": "video decoding and windows: MoTIF (Knab et al., 2025)",
    "conceptlens.features.video_encode": "per-window video encoding: MoTIF",
    "conceptlens.methods.motif": "`motif`: MoTIF, concepts in motion (Knab et al., 2025)",
    "conceptlens.explain.attribution": "where concepts look: input attributions (Furby et al., 2024)",
}
OUT = Path(__file__).resolve().parent.parent / "docs" / "deviations.md"


def section(doc: str) -> str:
    """From the 'Deviations from the reference' line to the end of the docstring."""
    start = doc.index("Deviations from the reference")
    title, _, rest = doc[start:].strip().partition("\n")
    return f"**{title.strip()}**\n\n{rest.strip()}"  # a table may not interrupt a paragraph


def render() -> str:
    parts = ["# Deviations from the authors' code\n",
             "Each method follows its authors' code (cited in its module docstring); what differs is",
             "listed here, with why and the effect where measured. Generated from the docstrings by",
             "`scripts/deviations.py`; edit the docstring, not this page.\n"]
    for name, what in MODULES.items():
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
