"""The README's grounding figure: accuracy, NEC, concept AUROC, explanation precision@5 and
confounded-shift ID/OOD accuracy for every method on Fashion-MNIST with the offline backbone.

    .venv/bin/python benchmarks/fig_grounding.py [--cache-dir DIR]
    # -> benchmarks/results/grounding.json, grounding.md

Three runs of the real CLI, on the same images and cache:
- `conceptlens run configs/fashion_mnist_grounding.toml`: every method, concepts = the 36
  built-in annotated attributes, with the [confounded] protocol;
- the same config with `positive = true` on every head that has the option (non-negative
  class weights), without [confounded] and without the methods that lack the option;
- `conceptlens concepts evaluate --raw`: the backbone's raw concept similarity (cosine of image
  and attribute text embeddings) against the same annotations: the baseline a bottleneck starts
  from; and the same on `fashion-mnist-composite` against per-image truth.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tomllib

from conceptlens._io import write_json, write_text
from conceptlens.methods import get_method

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
CONFIG = ROOT / "configs" / "fashion_mnist_grounding.toml"
CLI = [sys.executable, "-m", "conceptlens"]


def cli(args: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(CLI + args, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def positive_twin(work: Path) -> Path:
    """The grounding config with positive = true wherever a method has the option."""
    from conceptlens.runs.config import load_config, to_toml

    cfg = load_config(CONFIG)
    cfg.methods = {m: {**p, "positive": True} for m, p in cfg.methods.items()
                   if "positive" in get_method(m).get_params()}
    cfg.confounded = None
    path = work / "positive.toml"
    path.write_text(to_toml(cfg))
    return path


def num(v, digits=1, scale=1.0):
    return "—" if v is None else f"{v * scale:.{digits}f}"


def table(main: dict, positive: dict) -> str:
    conf = (main.get("confounded") or {}).get("results", {})
    from conceptlens.runs.tables import evidence_cell, precision_cell

    head = ("| method | top-1 | NEC | top-1 at NEC=5 | concept AUROC (n) | precision@5 (coverage) "
            "| negative precision@5 | evidence@5 | confounded ID | OOD | gap |")
    lines = [head, "|" + "---|" * 11]

    def row(name, r, shift):
        auroc = ("—" if r.get("concept_auroc") is None
                 else f"{r['concept_auroc']:.3f} ({r['concept_auroc_n']})")
        s = (shift or {}).get("mean")
        nec = num(r.get("nec")) if r.get("concept_auroc_n") else "—"  # NEC counts concepts
        cells = [name, num(r["top1"], 1, 100), nec, num(r.get("top1_at_nec"), 1, 100), auroc,
                 precision_cell(r.get("precision_at_k"), r.get("precision_at_k_coverage"),
                                r.get("precision_at_k_on_covered")),
                 num(r.get("negative_precision_at_k"), 2), evidence_cell(r),
                 num(s and s["id"]), num(s and s["ood"]), num(s and s["gap"])]
        return "| " + " | ".join(cells) + " |"

    order = list(tomllib.loads(CONFIG.read_text())["methods"])  # the config's order, not json's
    for name in sorted(main["results"], key=order.index):
        lines.append(row(name, main["results"][name], conf.get(name)))
    for name in sorted(positive["results"], key=order.index):
        lines.append(row(f"{name}, w >= 0", positive["results"][name], None))
    return "\n".join(lines)


def main(cache_dir: str | None) -> None:
    work = Path(tempfile.mkdtemp(prefix="conceptlens-grounding-figure-"))
    cache = ["--cache-dir", cache_dir] if cache_dir else []
    common = ["--no-progress", *cache]
    seconds = {}
    seconds["grounding"] = cli(["run", str(CONFIG), "--output-dir", str(work / "main"), *common])
    seconds["positive"] = cli(["run", str(positive_twin(work)), "--output-dir", str(work / "positive"),
                               *common])
    test_per_class = str(tomllib.loads(CONFIG.read_text())["data"]["test_per_class"])
    seconds["raw"] = cli(["concepts", "evaluate", "--raw", "--dataset", "fashion-mnist", "--annotations",
                          "fashion-mnist", "--images-per-class", test_per_class, "--json",
                          str(work / "raw.json"), *cache])
    # per-image truth: 2 x 2 composites, an attribute is present where one of the four items has it
    seconds["raw_composite"] = cli(["concepts", "evaluate", "--raw", "--dataset", "fashion-mnist-composite",
                                    "--images-per-class", "all", "--json", str(work / "raw_composite.json"),
                                    *cache])
    main_out = json.loads((work / "main" / "results.json").read_text())
    pos_out = json.loads((work / "positive" / "results.json").read_text())
    raw = json.loads((work / "raw.json").read_text())
    write_json(RESULTS / "grounding.json", {
        "script": "benchmarks/fig_grounding.py", "config": str(CONFIG.relative_to(ROOT)),
        "wall_seconds": {k: round(v, 1) for k, v in seconds.items()},
        "results": main_out["results"], "positive": pos_out["results"],
        "confounded": main_out.get("confounded"), "raw": raw,
        "raw_composite": json.loads((work / "raw_composite.json").read_text())})
    render()


def render() -> None:
    """grounding.md from grounding.json."""
    saved = json.loads((RESULTS / "grounding.json").read_text())
    main_out = {"results": saved["results"], "confounded": saved["confounded"]}
    pos_out, raw, seconds = {"results": saved["positive"]}, saved["raw"], saved["wall_seconds"]
    comp = saved["raw_composite"]
    md = table(main_out, pos_out)
    per_concept = raw.get("concept_auroc_per_concept") or {}
    worst = sorted((v, k) for k, v in per_concept.items() if v is not None)[:5]
    raw_line = (f"Raw backbone similarity (cosine of image and attribute text embeddings), no training: "
                f"mean concept AUROC {raw['concept_auroc']:.3f} over {raw['concept_auroc_n']} attributes; "
                "lowest: " + ", ".join(f"{k!r} {v:.2f}" for v, k in worst) + ". On "
                "`fashion-mnist-composite` test images against per-image truth: "
                f"{comp['concept_auroc']:.3f} over {comp['concept_auroc_n']} attributes.")
    conf_table = (main_out.get("confounded") or {}).get("table", "")
    write_text(RESULTS / "grounding.md", md + "\n\n" + raw_line + "\n\n" + conf_table + "\n")
    print(md, raw_line, conf_table, seconds, sep="\n\n")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache-dir", help="feature cache root (default: the user cache)")
    ap.add_argument("--render", action="store_true", help="only rewrite grounding.md from grounding.json")
    args = ap.parse_args()
    render() if args.render else main(args.cache_dir)
