"""Where concepts look (Furby et al. 2024): the share of a concept's input attribution that falls in
the region holding it, for a `cbm` trained on per-image concept labels of the composite dataset
(2 x 2 grids of Fashion-MNIST items, regions known), the offline backbone, integrated gradients.

    .venv/bin/python benchmarks/fig_attribution.py [--cache-dir DIR] [--quick]
    # -> benchmarks/results/attribution.json, attribution.md, attribution.png

Two sweeps, each a fresh cbm (mode 'independent': the concept head learns from the concept labels
alone; all annotated concepts; on the backbone's 1,280-d features) per setting:

- `cooccurrence` q of the dataset (0, 0.5, 0.9, 1): how often the companions of 'has laces'
  ('is worn on the feet', 'has a sole', ...) appear without it. Companions are carried by the same
  item as the concept (a sneaker has laces and a sole), so q moves what a concept can be confused
  with inside a region (a sandal's sole), not which region holds it.
- `agreement` a (0.5, 0.75, 0.9, 1): the fraction of training images in which 'has laces' and
  'has a handle' are both present or both absent (the default rules' four classes resampled:
  a/2 each of 'laces and a handle' and 'neither', (1-a)/2 each of the two others). These two are
  carried by different items, so in different regions: a = 0.5 is decorrelated, a = 1 is the
  paper's "concepts that always co-occur". Measured on the same test images of class 'laces and a
  handle' at every a: the share in the concept's own region(s) and in its partner's.

Share = positive attribution mass in the region(s) whose item has the concept (per-region truth) /
all positive mass; chance is the regions' area fraction (0.25 for one region of four). Means over
the test images that have the concept; each heat map is integrated gradients from a black image.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from conceptlens._io import write_json, write_text
from conceptlens.backbones.offline import OfflineBackbone
from conceptlens.data.composite import make_composite
from conceptlens.data.fashion_mnist import load_fashion_mnist
from conceptlens.explain.attribution import attribute, grid_masks, region_share
from conceptlens.features.encode import encode_dataset
from conceptlens.methods import get_method
from conceptlens.methods.base import Context
from conceptlens.methods.cbm import concept_accuracy, truth_by_id

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
LACES, HANDLE = "has laces", "has a handle"
Q_CONCEPTS = (LACES, HANDLE, "is worn on the feet", "has a sole")
Q_VALUES = (0.0, 0.5, 0.9, 1.0)
AGREEMENTS = (0.5, 0.75, 0.9, 1.0)


def encode(bb, comp, split: str, cache):
    idx = np.flatnonzero(np.asarray(comp.dataset.split) == split)
    return idx, encode_dataset(bb, comp.dataset.subset(idx), cache, progress=False)


def fit_cbm(comp, bundle, rows):
    """A cbm on the per-image concept labels of `rows` of the composite (indices into its dataset)."""
    ann = comp.annotations
    values = np.asarray(ann.values)[rows]
    # a concept needs both values among the known training labels to be learnable
    keep = [c for j, c in enumerate(ann.concepts)
            if {0.0, 1.0} <= set(values[:, j][~np.isnan(values[:, j])].tolist())]
    ctx = Context(classes=comp.dataset.classes, concepts=keep,
                  # cbm reads concept labels, not text embeddings; the contract wants the array
                  concept_embedding=np.zeros((len(keep), 1), np.float32),
                  concept_truth_by_id=truth_by_id(ann, keep))
    # max_iter 100, not cbm's 500: L-BFGS on separable concepts otherwise spends minutes growing weights
    return get_method("cbm", mode="independent", max_iter=100).fit(bundle, ctx), keep


def shares_for(bb, model, comp, rows, concepts, n_steps, partner=None):
    """Per concept: own-region (and partner-region) positive-mass shares over images `rows`."""
    col = {c: j for j, c in enumerate(comp.concepts)}
    masks = None
    out = {}
    for c in concepts:
        holds = comp.region_values[:, :, col[c]] == 1  # (n, 4)
        use = [i for i in rows if 0 < holds[i].sum() < 4]
        if not use:
            continue
        h = attribute(bb, model, [comp.dataset.images.array[i] for i in use], [c], n_steps=n_steps)
        own, other, chance = [], [], []
        for m, i in zip(h.maps, use, strict=True):
            masks = grid_masks(*m.shape[1:]) if masks is None else masks
            s = region_share(m[0], masks)
            own.append(float(s[holds[i]].sum()))
            chance.append(float(holds[i].mean()))
            if partner is not None:
                p = (comp.region_values[i, :, col[partner[c]]] == 1) & ~holds[i]
                other.append(float(s[p].sum()))
        out[c] = {"own_share": float(np.mean(own)), "chance": float(np.mean(chance)), "images": len(use),
                  "completeness_gap": float(np.median(np.abs(h.delta)))}
        if partner is not None:
            out[c]["partner_share"] = float(np.mean(other))
            out[c]["partner"] = partner[c]
    return out


def concept_acc(model, bundle, comp, rows, concepts):
    by_id = truth_by_id(comp.annotations, model.concepts_)
    t = np.stack([by_id[comp.dataset.ids[i]] for i in rows])
    acc = concept_accuracy(model.predict_concepts(bundle), t)
    return {c: acc["per_concept"][model.concepts_.index(c)] for c in concepts if c in model.concepts_}


def q_sweep(src, bb, cache, args):
    out = {}
    for q in args.q_values:
        t0 = time.perf_counter()
        comp = make_composite(src, n={"train": args.train, "test": args.test}, seed=0, cooccurrence=q)
        tr_idx, train = encode(bb, comp, "train", cache)
        te_idx, test = encode(bb, comp, "test", cache)
        model, _ = fit_cbm(comp, train, tr_idx)
        rows = te_idx[: args.images]
        shares = shares_for(bb, model, comp, rows, [c for c in Q_CONCEPTS if c in model.concepts_],
                            args.n_steps)
        acc = concept_acc(model, test, comp, te_idx, Q_CONCEPTS)
        for c in shares:
            shares[c]["concept_accuracy"] = acc.get(c)
        task = float((model.predict(test) == test.labels).mean())
        out[str(q)] = {"concepts": shares, "task_accuracy": task,
                       "overall_own_share": _overall(shares), "seconds": round(time.perf_counter() - t0, 1)}
        print(f"q={q}: {out[str(q)]['overall_own_share']:.3f} ({out[str(q)]['seconds']} s)", flush=True)
    return out


def _overall(shares: dict) -> float:
    """Mean over (image, concept) pairs of the own-region share."""
    n = sum(v["images"] for v in shares.values())
    return float(sum(v["own_share"] * v["images"] for v in shares.values()) / max(n, 1))


def agreement_sweep(src, bb, cache, args):
    comp = make_composite(src, n={"train": args.pool, "test": args.test}, seed=1, cooccurrence=1.0)
    tr_idx, train_all = encode(bb, comp, "train", cache)
    te_idx, test = encode(bb, comp, "test", cache)
    classes = comp.dataset.classes  # both, laces only, handle only, neither (default rules' order)
    labels = comp.dataset.labels
    both = te_idx[labels[te_idx] == 0][: args.images]
    rng = np.random.default_rng(0)
    n = args.agreement_train
    out = {}
    for a in args.agreements:
        t0 = time.perf_counter()
        want = [round(a * n / 2), round((1 - a) * n / 2), round((1 - a) * n / 2), round(a * n / 2)]
        pick = []
        for y, k in enumerate(want):
            pool = np.flatnonzero(labels[tr_idx] == y)
            if k > len(pool):
                raise SystemExit(f"agreement {a}: {k} images of {classes[y]!r} wanted, {len(pool)} drawn; "
                                 "raise --pool.")
            pick.extend(rng.choice(pool, k, replace=False).tolist())
        pick = np.sort(np.array(pick))
        model, _ = fit_cbm(comp, train_all.rows(pick), tr_idx[pick])
        shares = shares_for(bb, model, comp, both, [LACES, HANDLE], args.n_steps,
                            partner={LACES: HANDLE, HANDLE: LACES})
        acc = concept_acc(model, test, comp, te_idx, [LACES, HANDLE])
        for c in shares:
            shares[c]["concept_accuracy"] = acc.get(c)
        lab = train_all.labels[pick]
        out[str(a)] = {"concepts": shares, "measured_agreement": float(np.isin(lab, (0, 3)).mean()),
                       "task_accuracy": float((model.predict(test) == test.labels).mean()),
                       "overall_own_share": _overall(shares), "seconds": round(time.perf_counter() - t0, 1)}
        print(f"a={a}: {out[str(a)]['overall_own_share']:.3f} ({out[str(a)]['seconds']} s)", flush=True)
    return out


def markdown(res: dict) -> str:
    s = res["settings"]
    lines = [
        "# Where concepts look: attribution mass in the concept's region",
        "",
        f"cbm (independent) on per-image concept labels of `fashion-mnist-composite`, offline backbone at "
        f"{s['image_size']} px, integrated gradients ({s['n_steps']} steps, black baseline); share = "
        "positive attribution mass in the region(s) whose item has the concept; chance = their area "
        f"(0.25 for one of four regions). Up to {s['images']} test images per setting. "
        f"Total {res['seconds']:.0f} s. Written by `benchmarks/fig_attribution.py`.",
        "",
        "## Sweep 1: the dataset's `cooccurrence` q (companions of 'has laces' without it: 1 - q)",
        "",
        "| q | " + " | ".join(f"{c} (acc)" for c in Q_CONCEPTS) + " | overall | task acc |",
        "|---|" + "---|" * (len(Q_CONCEPTS) + 2),
    ]
    for q, r in res["cooccurrence"].items():
        cells = []
        for c in Q_CONCEPTS:
            v = r["concepts"].get(c)
            cells.append("—" if v is None else f"{v['own_share']:.2f} ({v['concept_accuracy']:.2f})")
        lines.append(f"| {q} | " + " | ".join(cells)
                     + f" | {r['overall_own_share']:.2f} | {r['task_accuracy']:.2f} |")
    lines += [
        "",
        "## Sweep 2: agreement a of 'has laces' and 'has a handle' (different items, different regions)",
        "",
        "Test images of class 'laces and a handle' (both present, in different regions); own = the "
        "concept's region, partner = the other concept's.",
        "",
        "| a (measured) | laces: own / partner | handle: own / partner | overall own "
        "| concept acc laces / handle |",
        "|---|---|---|---|---|",
    ]
    for a, r in res["agreement"].items():
        lc, hc = r["concepts"].get(LACES), r["concepts"].get(HANDLE)

        def pair(v):
            return "—" if v is None else f"{v['own_share']:.2f} / {v['partner_share']:.2f}"

        def acc(v):
            return "—" if v is None or v["concept_accuracy"] is None else f"{v['concept_accuracy']:.2f}"

        lines.append(f"| {a} ({r['measured_agreement']:.2f}) | {pair(lc)} | {pair(hc)} | "
                     f"{r['overall_own_share']:.2f} | {acc(lc)} / {acc(hc)} |")
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    qs = [float(q) for q in res["cooccurrence"]]
    for c in Q_CONCEPTS:
        ys = [r["concepts"].get(c, {}).get("own_share", np.nan) for r in res["cooccurrence"].values()]
        ax1.plot(qs, ys, "o-", label=c)
    ax1.axhline(0.25, color="grey", ls=":", lw=1, label="chance (one region)")
    ax1.set(xlabel="dataset cooccurrence q", ylabel="attribution share in the concept's region",
            title="companions within one item", ylim=(0, 1))
    ax1.legend(fontsize=7)
    xs = [float(a) for a in res["agreement"]]
    for c, colour in ((LACES, "tab:blue"), (HANDLE, "tab:orange")):
        own = [r["concepts"].get(c, {}).get("own_share", np.nan) for r in res["agreement"].values()]
        other = [r["concepts"].get(c, {}).get("partner_share", np.nan) for r in res["agreement"].values()]
        ax2.plot(xs, own, "o-", color=colour, label=f"{c}: own region")
        ax2.plot(xs, other, "s--", color=colour, label=f"{c}: partner's region")
    ax2.axhline(0.25, color="grey", ls=":", lw=1)
    ax2.set(xlabel="agreement of 'has laces' and 'has a handle' in training",
            title="two concepts in different regions")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache-dir", default=None, help="feature cache root (default: the user cache)")
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--n-steps", type=int, default=8)
    p.add_argument("--images", type=int, default=12, help="test images per concept and setting")
    p.add_argument("--train", type=int, default=400, help="training images per q setting")
    p.add_argument("--test", type=int, default=48)
    p.add_argument("--pool", type=int, default=800, help="training images drawn for the agreement sweep")
    p.add_argument("--agreement-train", type=int, default=300)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="a smoke run: tiny sizes, two settings each")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args()
    args.q_values, args.agreements = Q_VALUES, AGREEMENTS
    if args.quick:
        args.images, args.n_steps, args.train, args.test = 2, 2, 80, 16
        args.pool, args.agreement_train = 160, 60
        args.q_values, args.agreements = (0.0, 1.0), (0.5, 1.0)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    src = load_fashion_mnist()
    bb = OfflineBackbone(image_size=args.image_size)
    cache = None if args.cache_dir is None else Path(args.cache_dir) / "features"
    keys = ("image_size", "n_steps", "images", "train", "test", "pool", "agreement_train", "quick")
    res = {"settings": {k: getattr(args, k) for k in keys}, "backbone": bb.id}
    res["cooccurrence"] = q_sweep(src, bb, cache, args)
    res["agreement"] = agreement_sweep(src, bb, cache, args)
    res["seconds"] = time.perf_counter() - t0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "attribution.json", res)
    write_text(out / "attribution.md", markdown(res))
    plot(res, out / "attribution.png")
    print((out / "attribution.md").read_text())


if __name__ == "__main__":
    main()
