"""The docs' accuracy-vs-NEC figure from a demo run (`conceptlens demo` records [evaluation]
nec_curve = [1, 2, 3, 5, 10, 20] for every concept method in results.json):

    .venv/bin/conceptlens demo --output-dir runs/demo
    .venv/bin/python benchmarks/fig_nec_curve.py runs/demo   # -> docs/figures/nec_curve.svg

The plot is report/nec_curve.py's (the same one report.html shows).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from conceptlens.report.nec_curve import nec_curve_svg  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a run folder with results.json (a demo run)")
    p.add_argument("--out", default=str(ROOT / "docs" / "figures" / "nec_curve.svg"))
    args = p.parse_args(argv)
    res = json.loads((Path(args.run) / "results.json").read_text())
    svg = nec_curve_svg(res["results"], title=f"top-1 vs NEC ({res.get('nec_protocol', 'vlg')} protocol)")
    if not svg:
        print(f"{args.run}/results.json has no nec_curve (run it with [evaluation] nec_curve)", file=sys.stderr)
        return 1
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(svg + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
