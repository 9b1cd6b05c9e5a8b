"""The docs' accuracy-vs-NEC figure from a demo run (`conceptlens demo` records [evaluation]
nec_curve = [1, 2, 3, 5, 10, 20] for every concept method in results.json):

    .venv/bin/conceptlens demo --output-dir runs/demo
    .venv/bin/python benchmarks/fig_nec_curve.py runs/demo
    # -> benchmarks/results/nec_curve_demo.svg and nec_curve_demo.json (the plotted numbers)

The plot is report/nec_curve.py's (the same one report.html shows); the docs serve it as
figures/nec_curve_demo.svg (scripts/docs_hooks.py).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from conceptlens.report.nec_curve import curve_points, nec_curve_svg  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "nec_curve_demo.svg"


def numbers(res: dict, run: str) -> dict:
    """What the figure plots, per method: top-1 at each NEC asked, the NEC each reached, and the
    (NEC, top-1) points drawn; with the run's protocol and the full model's top-1 and NEC."""
    methods = {}
    for name, row in res["results"].items():
        if not row.get("nec_curve"):
            continue
        methods[name] = {"nec_curve": row["nec_curve"], "nec_curve_reached": row.get("nec_curve_reached"),
                         "points": curve_points(row), "top1": row.get("top1"), "nec": row.get("nec")}
    return {"command": "conceptlens demo; python benchmarks/fig_nec_curve.py RUN_DIR", "run": Path(run).name,
            "nec_protocol": res.get("nec_protocol", "vlg"), "backbone_id": res.get("backbone_id"),
            "machine": {"python": platform.python_version()}, "methods": methods}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a run folder with results.json (a demo run)")
    p.add_argument("--out", default=str(OUT), help="the SVG; its numbers go beside it as .json")
    args = p.parse_args(argv)
    res = json.loads((Path(args.run) / "results.json").read_text())
    svg = nec_curve_svg(res["results"], title=f"top-1 vs NEC ({res.get('nec_protocol', 'vlg')} protocol)")
    if not svg:
        print(f"{args.run}/results.json has no nec_curve (run it with [evaluation] nec_curve)",
              file=sys.stderr)
        return 1
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(svg + "\n", encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps(numbers(res, args.run), indent=2, sort_keys=True) + "\n",
                                        encoding="utf-8")
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
