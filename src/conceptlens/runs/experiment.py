"""One run: data -> features -> concepts -> methods -> metrics (+ few-shot), recorded."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ..backbones import get_backbone
from ..concepts import ConceptSet, import_concepts
from ..concepts.pipeline import align_classes, run_filters, run_selection
from ..concepts.sources import get_source
from ..data import few_shot, load_dataset, split_indices
from ..evaluation import evaluate, prune_to_nec
from ..features import encode_dataset, encode_texts
from ..features.encode import image_cache
from ..methods import Context, get_method
from .config import RunConfig
from .record import record_run
from .tables import few_shot_table, results_table

log = logging.getLogger("conceptlens")
SPARSE = {"label_free", "posthoc", "posthoc_hybrid"}  # refitted at a target NEC
TEMPLATES = ("a photo of a {}.",)


def build_candidates(cfg: RunConfig, classes) -> ConceptSet:
    out = ConceptSet(classes)
    for name in cfg.concepts.sources:
        result = get_source(name).generate(list(classes))
        if result.unresolved:
            log.warning("[%s] no concepts for: %s", name, ", ".join(result.unresolved))
        out = out.merge(result.concepts)
    if cfg.concepts.file:
        out = out.merge(import_concepts(cfg.concepts.file)[0])
    return out


def build_context(backbone, classes, concepts: ConceptSet | None, cache) -> Context:
    prompts = [t.format(c) for c in classes for t in TEMPLATES]
    class_emb = encode_texts(backbone, prompts, cache).reshape(len(classes), len(TEMPLATES), -1)
    class_emb = class_emb.mean(1)
    class_emb /= np.linalg.norm(class_emb, axis=1, keepdims=True)
    if concepts is None or not len(concepts):
        return Context(tuple(classes), class_embedding=class_emb, backbone_id=backbone.id)
    names = align_classes(concepts, classes)
    return Context(tuple(classes), concepts.texts, encode_texts(backbone, concepts.texts, cache),
                   concepts.class_matrix(names), class_emb, backbone.id)


def fit_and_evaluate(methods: dict, train, val, test, context: Context, nec: int) -> tuple[dict, dict]:
    results, models = {}, {}
    for name, params in methods.items():
        t = time.perf_counter()
        model = get_method(name, **params).fit(train, context, val)
        row = evaluate(model, test)
        row["fit_seconds"] = time.perf_counter() - t
        if nec and model.needs_concepts:
            at = (get_method(name, **{**params, "target_nec": nec}).fit(train, context, val)
                  if name in SPARSE else prune_to_nec(model, nec))
            row["top1_at_nec"] = evaluate(at, test)["top1"]
            row["nec_at_nec"] = at.nec_
        results[name], models[name] = row, model
    return results, models


def _take(data, idx, per_class, seed):
    return few_shot(data, idx, "all" if per_class <= 0 else per_class, seed)


def run_experiment(cfg: RunConfig, write: bool = True) -> dict:
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    options = {"root": cfg.data.data_dir} if cfg.data.dataset == "fashion-mnist" and cfg.data.data_dir \
        else {}
    data = load_dataset(cfg.data.dataset, **options)
    splits = split_indices(data, seed=cfg.data.seed)
    parts = {"train": _take(data, splits["train"], cfg.data.train_per_class, cfg.data.seed),
             "val": _take(data, splits["val"], cfg.data.val_per_class, cfg.data.seed),
             "test": _take(data, splits["test"], cfg.data.test_per_class, cfg.data.seed)}
    backbone = get_backbone(cfg.backbone)
    cache_root = None if cfg.cache_dir is None else Path(cfg.cache_dir) / "features"
    cache = image_cache(backbone, cache_root)
    t = time.perf_counter()
    bundles = {k: encode_dataset(backbone, data.subset(v), cache, progress=cfg.progress)
               for k, v in parts.items()}
    seconds["encode"] = time.perf_counter() - t
    train, val, test = bundles["train"], bundles["val"], bundles["test"]

    t = time.perf_counter()
    needs_concepts = any(get_method(m).needs_concepts for m in cfg.methods)
    candidates = filtered = selected = None
    report = {}
    if needs_concepts:
        candidates = build_candidates(cfg, data.classes)
        filtered = candidates
        if cfg.concepts.filter:
            fr = run_filters(candidates, backbone, list(data.classes), train,
                             activation_quantile=cfg.concepts.activation_quantile, cache=cache_root)
            filtered = fr.concepts
            report["filter"] = fr.report()
        sel = run_selection(filtered, backbone, train, cache=cache_root,
                            per_class=cfg.concepts.per_class, method=cfg.concepts.selection,
                            lam=cfg.concepts.lam, seed=cfg.data.seed)
        selected = sel.concepts
        report["concepts"] = {"candidates": candidates.summary(), "filtered": filtered.summary(),
                              "selected": selected.summary()}
    seconds["concepts"] = time.perf_counter() - t
    context = build_context(backbone, data.classes, selected, cache_root)

    t = time.perf_counter()
    results, models = fit_and_evaluate(cfg.methods, train, val, test, context, cfg.nec)
    seconds["fit"] = time.perf_counter() - t

    if write and context.concepts:
        seconds["report"] = _faithfulness_and_report(cfg, results, models, train, test, data)

    fewshot = None
    if cfg.fewshot.shots:
        t = time.perf_counter()
        fewshot = run_few_shot(cfg, train, val, test, backbone, filtered, cache_root)
        seconds["fewshot"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    out = {"backbone_id": backbone.id, "preprocess": backbone.preprocess_id,
           "sizes": {k: len(v) for k, v in bundles.items()}, "results": results,
           "fewshot": fewshot, "concept_report": report, "seconds": seconds,
           "table": results_table(results, cfg.nec),
           "fewshot_table": few_shot_table(fewshot) if fewshot else None}
    if write:
        out["output_dir"] = str(record_run(cfg, out, selected, models))
    return out


def _faithfulness_and_report(cfg, results, models, train, test, data) -> float:
    """Deletion-curve areas for every concept method, and the HTML report of the first."""
    from ..explain import deletion_curves
    from ..report import write_report

    t = time.perf_counter()
    concept_models = [n for n, m in models.items() if m.needs_concepts]
    for name in concept_models:
        curves = deletion_curves(models[name], test)
        results[name]["deletion_area_top"] = curves["area_top"]
        results[name]["deletion_area_random"] = curves["area_random"]
    index = {item: i for i, item in enumerate(data.ids)}

    def image(item):
        i = index[item]
        return data.images.decode(i, data.images.read(i))

    main = "label_free" if "label_free" in concept_models else concept_models[0]
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    write_report(Path(cfg.output_dir) / "report.html", models[main], results, test, train, image,
                 title=f"conceptlens: {main} on {data.name}")
    return time.perf_counter() - t


def run_few_shot(cfg: RunConfig, train, val, test, backbone, candidates, cache_root) -> dict:
    """LaBo's protocol: k images per class (nested across k), several seeds, every method
    on the same features; concepts are re-selected from each k-shot set, as LaBo does."""
    rows: dict[str, dict[str, list[float]]] = {}
    for seed in cfg.fewshot.seeds:
        for shots in cfg.fewshot.shots:
            idx = few_shot(train, np.arange(len(train)), shots, seed)
            sub = train.rows(idx)
            selected = None
            if candidates is not None:
                selected = run_selection(candidates, backbone, sub, cache=cache_root,
                                         per_class=cfg.concepts.per_class,
                                         method=cfg.concepts.selection, lam=cfg.concepts.lam,
                                         seed=seed).concepts
            context = build_context(backbone, train.classes, selected, cache_root)
            results, _ = fit_and_evaluate(cfg.methods, sub, val, test, context, nec=0)
            for name, row in results.items():
                rows.setdefault(name, {}).setdefault(str(shots), []).append(row["top1"])
    return rows
