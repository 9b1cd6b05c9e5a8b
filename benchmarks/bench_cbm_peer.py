"""conceptlens' `cbm` against PyC's (PyPI `pytorch-concepts`) ConceptBottleneckModel, side by side,
on the same frozen features and the same concept labels.

    .venv/bin/python benchmarks/bench_cbm_peer.py [--pyc-python /work/pycenv/bin/python]
        [--epochs 50] [--out benchmarks/results/cbm_peer.json]

PyC lives in its own virtualenv (it pins its own torch): `python -m venv /work/pycenv;
/work/pycenv/bin/pip install torch==2.13.0 pytorch-concepts==1.0.0a7`. This file is also PyC's
worker (`--pyc-worker data.npz out.json`, run by that interpreter, no conceptlens import).

Data, encoded once with the offline backbone (conceptlens' feature cache) and saved to .npz:
- `fashion-mnist`: 300 / 50 / 200 images per class (train / val / test, seed 0), the built-in
  attribute annotations broadcast from each image's class (class level);
- `fashion-mnist-composite` (n=3000, seed 0, cooccurrence 0.5): its per-image truth.
Both libraries get the SAME inputs: the backbone's features standardised with the training mean
and standard deviation, and the concepts whose label is known on every image (an unknown label
would need masking, which PyC's losses do not do; `cbm` masks, tested elsewhere).

Models (one torch thread each, so fit times compare):
- `pyc`: ConceptBottleneckModel (linear encoder -> sigmoid -> linear predictor, PyC's
  DeterministicInference), loss ConceptLoss(BCEWithLogits, CrossEntropy) = CE + mean BCE, Adam
  (lr, batch, epochs below), no weight decay, no validation;
- `ours_adam`: `cbm` joint with the same architecture and objective (bottleneck 'sigmoid',
  concept_weight 1/k and concept_weighting 'none' give (CE + mean BCE) / 2: the same minimiser;
  Adam being invariant to the loss scale, the same steps), the same optimiser, lr, batch size
  and epochs, no validation: the equal-budget comparison;
- `ours_joint`, `ours_independent`: `cbm`'s defaults (the reference's settings, L-BFGS to
  convergence): what a user gets.
Measured on the test images: task accuracy, concept accuracy (mean over concepts; whole vector),
and the intervention curve (accuracy after setting 0..k concepts per image to their true label,
the new value being the 95th / 5th percentile of the training activations for true / false, as
conceptlens' 'truth' strategy and the reference's tti.py do), for two orders: the SAME random
order per image for both libraries, and each library's own uncertainty policy (ours:
|a - median| / sd; PyC's UncertaintyInterventionPolicy: |logit|).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DATASETS = {"fashion-mnist": {"train": 300, "val": 50, "test": 200},
            "fashion-mnist-composite": {"train": 0, "val": 0, "test": 0}}  # 0: every image


# -- data (conceptlens side) -------------------------------------------------------------------

def encode(dataset: str, sizes: dict, seed: int = 0):
    """(train, val, test) FeatureBundles and the annotations of `dataset` (offline backbone)."""
    from conceptlens.backbones import open_backbone
    from conceptlens.data import few_shot, load_dataset, split_indices
    from conceptlens.features import encode_dataset
    from conceptlens.features.encode import image_cache
    from conceptlens.grounding.evaluate import resolve_annotations

    data = load_dataset(dataset)
    splits = split_indices(data, seed=seed)
    backbone = open_backbone("offline")
    cache = image_cache(backbone, None)
    bundles = []
    for part in ("train", "val", "test"):
        idx = few_shot(data, splits[part], "all" if sizes[part] == 0 else sizes[part], seed)
        bundles.append(encode_dataset(backbone, data.subset(idx), cache, progress=False))
    return (*bundles, resolve_annotations("auto", dataset, data), data)


def label_matrix(annotations, bundle) -> np.ndarray:
    """(n, k) 1 / 0 / NaN labels of the annotated concepts: per image by id, or the class's row."""
    values = np.asarray(annotations.values, dtype=np.float64)
    if annotations.level == "image":
        row = {item: i for i, item in enumerate(annotations.items)}
        return values[[row[i] for i in bundle.ids]]
    return values[[annotations.classes.index(c) for c in bundle.classes]][np.asarray(bundle.labels)]


def prepare(dataset: str, path: Path, sizes: dict | None = None) -> dict:
    """Encode `dataset` once and save features, labels and concept labels to `path` (.npz)."""
    train, val, test, ann, _ = encode(dataset, sizes or DATASETS[dataset])
    parts = {"train": train, "val": val, "test": test}
    C = {k: label_matrix(ann, b) for k, b in parts.items()}
    complete = ~np.isnan(np.concatenate(list(C.values()))).any(0)
    X = {k: (b.features if b.features is not None else b.embedding).astype(np.float64)
         for k, b in parts.items()}
    mean, sd = X["train"].mean(0), X["train"].std(0) + 1e-6
    arrays = {"concepts": np.asarray(ann.concepts)[complete], "classes": np.asarray(train.classes),
              "all_concepts": np.asarray(ann.concepts), "level": np.asarray(ann.level)}
    for k, b in parts.items():
        arrays[f"X_{k}"] = ((X[k] - mean) / sd).astype(np.float32)
        arrays[f"y_{k}"] = np.asarray(b.labels, dtype=np.int64)
        arrays[f"C_{k}"] = C[k][:, complete].astype(np.float32)
        arrays[f"Call_{k}"] = C[k].astype(np.float32)
        arrays[f"ids_{k}"] = np.asarray(b.ids)
    rng = np.random.default_rng(0)
    arrays["order"] = np.argsort(rng.random((len(test), int(complete.sum()))), axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return {"dataset": dataset, "level": ann.level, "sizes": {k: len(b) for k, b in parts.items()},
            "concepts_kept": int(complete.sum()), "concepts_annotated": len(ann.concepts),
            "feature_dim": int(arrays["X_train"].shape[1])}


# -- shared measures (numpy only: both interpreters) ------------------------------------------

def concept_scores(pred: np.ndarray, truth: np.ndarray) -> dict:
    hit = pred == truth
    return {"mean": float(hit.mean(0).mean()), "whole_vector": float(hit.all(1).mean())}


def warm_up() -> None:
    """Pay torch's one-time imports (the first optimiser pulls in torch._dynamo: ~3 s) before any
    fit is timed, in both interpreters."""
    import torch

    w = torch.zeros(2, requires_grad=True)
    for opt in (torch.optim.Adam([w]), torch.optim.LBFGS([w], max_iter=2)):
        def closure(opt=opt):
            opt.zero_grad()
            loss = (w ** 2).sum()
            loss.backward()
            return loss

        opt.step(closure)


def _mask(order: np.ndarray, n: int) -> np.ndarray:
    m = np.zeros(order.shape, bool)
    np.put_along_axis(m, order[:, :n], True, axis=1)
    return m


# -- ours --------------------------------------------------------------------------------------

def run_ours(npz: Path, epochs: int, lr: float, batch: int) -> dict:
    import torch

    from conceptlens.features import FeatureBundle
    from conceptlens.intervene import labelled_intervention_curve
    from conceptlens.intervene.interventions import Reference
    from conceptlens.methods import Context, get_method

    torch.set_num_threads(1)
    warm_up()
    d = np.load(npz)
    concepts, classes = [str(c) for c in d["concepts"]], tuple(str(c) for c in d["classes"])
    k = len(concepts)

    def bundle(part):
        ids = [str(i) for i in d[f"ids_{part}"]]
        return FeatureBundle(ids, d[f"y_{part}"], classes, d[f"X_{part}"], None, "npz")

    train, test = bundle("train"), bundle("test")
    truth_by_id = {str(i): row.astype(np.float64) for part in ("train", "test")
                   for i, row in zip(d[f"ids_{part}"], d[f"C_{part}"], strict=True)}
    ctx = Context(classes, concepts, np.zeros((k, 1)), concept_truth_by_id=truth_by_id)
    configs = {
        "ours_adam": {"mode": "joint", "bottleneck": "sigmoid", "concept_weight": 1.0 / k,
                      "concept_weighting": "none", "optimizer": "adam", "lr": lr, "epochs": epochs,
                      "batch_size": batch, "weight_decay": 0.0},
        "ours_joint": {"mode": "joint"},
        "ours_independent": {"mode": "independent"},
    }
    out = {}
    truth, y = d["C_test"].astype(np.float64), d["y_test"]
    for name, params in configs.items():
        t = time.perf_counter()
        model = get_method("cbm", **params).fit(train, ctx)
        seconds = time.perf_counter() - t
        A = model.transform(test).astype(np.float64)
        ref = Reference(model.transform(train).astype(np.float64))
        values = np.where(truth == 1, ref.high, ref.low)

        def after(mask, A=A, values=values, model=model):
            return (model.head(np.where(mask, values, A)).argmax(1) == y).mean()

        out[name] = {"params": params, "fit_seconds": seconds,
                     "task_accuracy": float((model.predict(test) == y).mean()),
                     "concept_accuracy": concept_scores(model.predict_concepts(test), truth),
                     "curve_random": [float(after(_mask(d["order"], n))) for n in range(k + 1)],
                     "curve_uncertain": labelled_intervention_curve(model, test, truth, policy="uncertain",
                                                                    reference=train)["accuracy"]}
    return out


# -- PyC (run by the PyC interpreter) ----------------------------------------------------------

def run_pyc(npz: Path, epochs: int, lr: float, batch: int, seed: int = 0) -> dict:
    import torch
    import torch_concepts as pyc
    from torch import nn
    from torch_concepts.nn import (
        ConceptBottleneckModel,
        ConceptLoss,
        GroundTruthIntervention,
        InterventionPolicy,
        UncertaintyInterventionPolicy,
        intervention,
    )

    torch.set_num_threads(1)
    warm_up()
    torch.manual_seed(seed)
    d = np.load(npz)
    concepts, classes = [str(c) for c in d["concepts"]], [str(c) for c in d["classes"]]
    k, m = len(concepts), len(classes)
    ann = pyc.Annotations(labels=[*concepts, "task"], types=["binary"] * k + ["categorical"],
                          cardinalities=[1] * k + [m])
    X, y, C = (torch.from_numpy(d[f"{a}_train"]) for a in ("X", "y", "C"))
    t = time.perf_counter()
    model = ConceptBottleneckModel(input_size=X.shape[1], annotations=ann, task_names=["task"])
    space = model.concept_annotations.to_concept_space()
    loss_fn = ConceptLoss(binary=nn.BCEWithLogitsLoss(), categorical=nn.CrossEntropyLoss())
    gt = torch.cat([C, y[:, None].float()], 1)
    model.train()
    first = model(query=model.fully_observed_query(gt[:2]), input=X[:2])  # builds the lazy layers
    del first
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for rows in torch.randperm(len(X), generator=gen).split(batch):
            opt.zero_grad()
            out = model(query=model.fully_observed_query(gt[rows]), input=X[rows])
            loss_fn(out, {"c": pyc.AnnotatedTensor(gt[rows], space)}, model).backward()
            opt.step()
    seconds = time.perf_counter() - t
    model.eval()
    query = {name: None for name in model.fully_observed_query(gt[:1])}

    def logits(x):
        with torch.no_grad():
            out = model(query=query, input=x).logits
        return out[concepts].tensor if hasattr(out[concepts], "tensor") else out[concepts], out["task"]

    Xt, yt, Ct = torch.from_numpy(d["X_test"]), d["y_test"], d["C_test"]
    Lc, Ly = logits(Xt)
    Lc, Ly = torch.as_tensor(Lc).reshape(len(Xt), k), torch.as_tensor(Ly).reshape(len(Xt), m)
    Ltrain = torch.as_tensor(logits(X)[0]).reshape(len(X), k).numpy()
    # the 'truth' value: 95th / 5th percentile of the training concept logits (as ours)
    hi, lo = np.percentile(Ltrain, 95, axis=0), np.percentile(Ltrain, 5, axis=0)
    target = torch.from_numpy(np.where(Ct == 1, hi, lo).astype(np.float32))

    class Ranked(InterventionPolicy):
        """Scores = each concept's rank in a fixed per-image order (lowest intervened first)."""

        def __init__(self, ranks):
            super().__init__()
            self.ranks = ranks

        def forward(self, x, *args, **kwargs):
            return self.ranks.to(x.dtype)

    def accuracy_after(n, policy):
        if n == 0:
            return float((Ly.argmax(1).numpy() == yt).mean())
        # PyC replaces the entries scoring <= the kth smallest, k = 1 + floor(q (K - 1)): q gives n
        q = (n - 1) / (k - 1) if k > 1 else 1.0
        with intervention(model, GroundTruthIntervention(target), policy, concepts, quantile=q), \
                torch.no_grad():
            out = model(query=query, input=Xt).logits
        return float((torch.as_tensor(out["task"]).reshape(len(Xt), m).argmax(1).numpy() == yt).mean())

    ranks = torch.from_numpy(np.argsort(d["order"], axis=1).astype(np.float32))
    return {"pyc": {"params": {"optimizer": "adam", "lr": lr, "epochs": epochs, "batch_size": batch},
                    "fit_seconds": seconds,
                    "task_accuracy": float((Ly.argmax(1).numpy() == yt).mean()),
                    "concept_accuracy": concept_scores((Lc.numpy() > 0).astype(np.float32), Ct),
                    "curve_random": [accuracy_after(n, Ranked(ranks)) for n in range(k + 1)],
                    "curve_uncertain": [accuracy_after(n, UncertaintyInterventionPolicy())
                                        for n in range(k + 1)],
                    "version": pyc.__version__ if hasattr(pyc, "__version__") else None}}


# -- report ------------------------------------------------------------------------------------

def markdown(saved: dict) -> str:
    lines = ["## CBM: conceptlens vs PyC (pytorch-concepts)", "",
             f"Same standardised offline-backbone features and the same concept labels for both; "
             f"PyC {saved['pyc_version']}, torch {saved['torch']['pyc']} (PyC) / {saved['torch']['ours']} "
             f"(ours); one torch thread each; equal budget = Adam, lr {saved['lr']}, batch {saved['batch']}, "
             f"{saved['epochs']} epochs, same objective (CE + mean BCE) and architecture (linear, sigmoid, "
             "linear). Curves: accuracy after correcting n concepts per image with their true label "
             "(95th / 5th percentile of the training activations); 'random' = the same order per image for "
             "both, 'own' = each library's uncertainty policy.", ""]
    for ds, r in saved["datasets"].items():
        info = r["data"]
        lines += [f"### {ds} ({info['level']}-level labels; {info['concepts_kept']} of "
                  f"{info['concepts_annotated']} concepts, those known on every image; train/val/test "
                  f"{info['sizes']['train']}/{info['sizes']['val']}/{info['sizes']['test']})", "",
                  "| model | fit s | task acc % | concept acc % | whole-vector % | +1 random | +3 random | "
                  "all (random) | +1 own | +3 own |", "|---|---|---|---|---|---|---|---|---|---|"]
        for name, v in r["models"].items():
            cr, cu = v["curve_random"], v["curve_uncertain"]

            def at(c, n):
                return f"{100 * c[min(n, len(c) - 1)]:.1f}"

            lines.append(f"| {name} | {v['fit_seconds']:.2f} | {100 * v['task_accuracy']:.1f} | "
                         f"{100 * v['concept_accuracy']['mean']:.1f} | "
                         f"{100 * v['concept_accuracy']['whole_vector']:.1f} | "
                         f"{at(cr, 1)} | {at(cr, 3)} | {at(cr, len(cr))} | {at(cu, 1)} | {at(cu, 3)} |")
        lines.append("")
    lines += [saved.get("verdict", ""), ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pyc-worker", nargs=2, metavar=("NPZ", "OUT"))
    ap.add_argument("--pyc-python", default="/work/pycenv/bin/python")
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--work", default="/tmp/conceptlens-cbm-peer")
    ap.add_argument("--out", default="benchmarks/results/cbm_peer.json")
    args = ap.parse_args()
    if args.pyc_worker:
        npz, out = args.pyc_worker
        Path(out).write_text(json.dumps(run_pyc(Path(npz), args.epochs, args.lr, args.batch)))
        return

    import torch

    from conceptlens._io import write_json, write_text

    work = Path(args.work)
    saved = {"epochs": args.epochs, "lr": args.lr, "batch": args.batch, "datasets": {}}
    for ds in DATASETS:
        npz = work / f"{ds}.npz"
        info = prepare(ds, npz)
        ours = run_ours(npz, args.epochs, args.lr, args.batch)
        pyc_out = work / f"{ds}.pyc.json"
        cmd = [args.pyc_python, __file__, "--pyc-worker", str(npz), str(pyc_out),
               "--epochs", str(args.epochs), "--lr", str(args.lr), "--batch", str(args.batch)]
        subprocess.run(cmd, check=True)
        peer = json.loads(pyc_out.read_text())
        saved["datasets"][ds] = {"data": info, "models": {**peer, **ours}}
        print(ds, json.dumps({n: (round(v["task_accuracy"], 4), round(v["fit_seconds"], 2))
                              for n, v in saved["datasets"][ds]["models"].items()}), flush=True)
    versions = subprocess.run([args.pyc_python, "-c", "import importlib.metadata as m, torch; "
                               "print(m.version('pytorch-concepts'), torch.__version__)"],
                              capture_output=True, text=True, check=True).stdout.split()
    saved["pyc_version"], saved["torch"] = versions[0], {"pyc": versions[1], "ours": torch.__version__}
    saved["verdict"] = verdict(saved)
    write_json(args.out, saved)
    write_text(Path(args.out).with_suffix(".md"), markdown(saved))
    print(markdown(saved))


def verdict(saved: dict) -> str:
    """The issue's goal, checked per dataset: ours no worse than PyC at equal budget, and faster."""
    out = []
    for ds, r in saved["datasets"].items():
        p, a = r["models"]["pyc"], r["models"]["ours_adam"]
        best = max((v for n, v in r["models"].items() if n.startswith("ours")),
                   key=lambda v: v["task_accuracy"])
        out.append(f"{ds}: equal budget, ours {100 * a['task_accuracy']:.1f}% in {a['fit_seconds']:.2f} s "
                   f"vs PyC "
                   f"{100 * p['task_accuracy']:.1f}% in {p['fit_seconds']:.2f} s "
                   f"({'no worse' if a['task_accuracy'] >= p['task_accuracy'] - 0.005 else 'WORSE'}, "
                   f"{'faster' if a['fit_seconds'] < p['fit_seconds'] else 'NOT faster'}); best of ours "
                   f"{100 * best['task_accuracy']:.1f}% in {best['fit_seconds']:.2f} s.")
    return " ".join(out) + " ('no worse': at most 0.5 points below, one seed each.)"


if __name__ == "__main__":
    sys.exit(main())
