"""LaBo's per-class submodular selection: conceptlens against apricot, side by side.

    .venv/bin/python benchmarks/bench_selection.py [--classes 200] [--out benchmarks/results/selection.json]

Data: LaBo's published CUB candidates (../shared/data/concepts/labo/CUB.class2concepts.json,
91,452 sentences for 200 classes), embedded by the offline sentence encoder (cached after
the first run). CUB images are not available offline, so each class's "images" are five
noisy copies of its class-name embedding; MI is computed from them as LaBo does.
apricot is configured exactly as LaBo's `submodular_select`: MixtureSelection of a
CustomSelection (sum of MI * 1e7) and a cosine FacilityLocationSelection (weight 0.1) over
[MI * 1e7, text embedding], naive greedy, 50 per class. Both selections are scored with
the same objective: LaBo's as apricot evaluates it (see conceptlens.concepts.selection,
coverage="reference").
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from conceptlens._io import write_json
from conceptlens.backbones.text_encoder import encode_sentences, sentence_encoder_fingerprint
from conceptlens.cache import FeatureCache, cached_texts
from conceptlens.concepts.importers import import_labo
from conceptlens.concepts.selection import (
    class_similarity,
    coverage_matrix,
    facility_objective,
    greedy_submodular,
    mi_score,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "concepts" / "labo"


def cached_sentences(texts: list[str]) -> np.ndarray:
    cache = FeatureCache(None, encoder=f"all-MiniLM-L6-v2@{sentence_encoder_fingerprint()}",
                         kind="sentence")
    return cached_texts(cache, texts, encode_sentences, 4096)


class _MixedSign(np.ndarray):
    """apricot 0.6.1 refuses features with both signs (text embeddings have both), a check
    LaBo's call must have met too; this view only answers that check and changes no value."""

    def min(self, *args, **kwargs):
        return 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--classes", type=int, default=200)
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--score-weight", type=float, default=1e7)
    ap.add_argument("--lam", type=float, default=0.1)
    ap.add_argument("--file", default=str(SHARED / "CUB.class2concepts.json"))
    ap.add_argument("--out", default="benchmarks/results/selection.json")
    args = ap.parse_args()

    raw = json.loads(Path(args.file).read_text())
    concepts, _ = import_labo(args.file)
    classes = concepts.classes[: args.classes]
    emb = cached_sentences(concepts.texts)
    rng = np.random.default_rng(0)
    class_emb = cached_sentences(classes)
    images = np.repeat(class_emb, 5, axis=0) + 0.05 * rng.normal(size=(5 * len(classes), emb.shape[1]))
    labels = np.repeat(np.arange(len(classes)), 5)
    scores = mi_score(class_similarity(images, labels, emb, len(classes)))
    groups = [np.asarray(concepts.for_class(c)) for c in classes]

    def ours():
        picks = []
        for idx in groups:
            modular = args.score_weight * scores[idx]
            sim = coverage_matrix(modular, emb[idx], "reference")
            picks.append(greedy_submodular(modular, sim, args.per_class, args.lam))
        return picks

    def apricot_labo():
        from apricot import CustomSelection, FacilityLocationSelection, MixtureSelection

        picks = []
        for idx in groups:
            k = args.per_class
            feats = np.hstack([args.score_weight * scores[idx][:, None], emb[idx]]).astype(np.float64)
            sel = MixtureSelection(k, functions=[CustomSelection(k, lambda X: X[:, 0].sum()),
                                                 FacilityLocationSelection(k, metric="cosine")],
                                   # a float64 array: apricot 0.6 passes copy=False, which numpy 2 refuses
                                   weights=np.array([1.0, args.lam]), optimizer="naive", verbose=False)
            picks.append(sel.fit(feats.view(_MixedSign)).ranking.tolist())
        return picks

    def objective(picks):
        total = 0.0
        for idx, p in zip(groups, picks, strict=True):
            modular = args.score_weight * scores[idx]
            sim = coverage_matrix(modular, emb[idx], "reference")
            total += modular[p].sum() + args.lam * facility_objective(sim, p)
        return total

    apricot_labo_warm = apricot_labo  # numba compiles on first use: warm it on one class
    groups_all, groups = groups, groups[:1]
    apricot_labo_warm()
    groups = groups_all
    t = time.perf_counter()
    ours_picks = ours()
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    ap_picks = apricot_labo()
    t_ap = time.perf_counter() - t
    o_ours, o_ap = objective(ours_picks), objective(ap_picks)
    result = {
        "candidates": sum(len(v) for v in list(raw.values())[: args.classes]),
        "class_candidate_pairs_after_merging": int(sum(len(g) for g in groups)),
        "classes": len(classes), "per_class": args.per_class,
        "conceptlens_seconds": round(t_ours, 3), "apricot_seconds": round(t_ap, 3),
        "speedup": round(t_ap / t_ours, 1),
        "objective_conceptlens": o_ours, "objective_apricot": o_ap,
        "relative_objective_difference": abs(o_ours - o_ap) / abs(o_ap),
        "same_selection_classes": int(sum(sorted(a) == sorted(b) for a, b in zip(ours_picks, ap_picks,
                                                                                  strict=True))),
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    main()
