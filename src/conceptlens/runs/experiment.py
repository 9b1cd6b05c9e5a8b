"""One run: data -> features -> concepts -> methods -> metrics (+ few-shot), recorded.

Where concept annotations are known ([grounding]), every concept method is also scored on how
well its concepts mean what they say (concept AUROC, explanation precision@k; grounding/), beside
accuracy in results.json, results.md, the few-shot table and the report, and the run's concepts
are matched to the annotated attributes (concept_matches.csv) to fill Context.class_truth.

The whole config is checked and the output folder claimed before any image is read; the run
folder (report included) is written to a temporary sibling and renamed into place at the end
(see record.py).

The run is a chain of stages (load, encode, concepts, fit, ground, report, fewshot, confounded:
`STAGES`) over one typed `RunState`, each a small function here, built from the stage functions
of runs/stages.py (which the confounded protocol reuses); each stage's wall time and the peak RSS
after it go to results.json "stages". `run_experiment` returns a typed `RunResult`
(runs/results.py). report.html is written by the caller's `report` function
(conceptlens.report.run_report, which the CLI and the demo pass): runs never import the report.

Methods trained on concept labels (cbm, ecbm: `concept_labelled`) need annotations ([grounding];
refused before any image is read without them). Class-level annotations reach them as
Context.class_truth (each image takes its class's row); per-image ones (the composite dataset's)
also as Context.concept_truth_by_id, every annotated image of every split by id, each run concept
taking its matched attribute's column. The run then records, per such method, concept accuracy on
the test images (per concept, mean, whole vector; unknown labels never counted) and the
intervention curve (accuracy after correcting 0..k concepts per image with their true labels,
known labels only; ECBM, which re-infers at every step, the first 10) under "concept_labels" in
results.json, and as a table in results.md.

Methods that find their own concepts (dn_cbm, v2c: `discovers_concepts`) get an unlabelled image
pool, a vocabulary and what is built from them ([discovery], runs/discovery.py) in
Context.discovery, built once: the same for every few-shot k and every confounded pair (none of
it sees a label). Their concepts are their own (`concepts_`: latent names, V2C tokens), so they
are grounded, reported and tabled like any other concept method; results.json records what
discovery built under "discovery".

report.html shows one concept bottleneck, [report] method: "auto" picks the one with the best
top-1 on the validation split (`val_top1`, recorded per method; never the test split) among those
whose explanations pass the truth floor (grounding/truth.py: coverage-aware precision@k on
validation annotations where they cover the explanations, else the share of top-k pairs linked
and evidenced on validation images; `truth` in each results row), or the first in [methods]
order when there is no validation split; results.json records which and why under
"report_method", with the models passed over and why, and the report's title says it. splits.json records each split's ids, so
`conceptlens report RUN_DIR` reproduces the run's test split (record.py).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..backbones import open_backbone
from ..concepts import ConceptSet
from ..concepts.pipeline import FilterResult
from ..data import few_shot, load_dataset
from ..data.splits import take_splits
from ..features import encode_dataset
from ..features.encode import image_cache
from ..grounding.evaluate import Grounding, matching_embedder
from ..methods.tags import get_tags
from ..progress import set_progress
from .config import RunConfig, validate_config
from . import confounded as confounded_protocol
from .discovery import build_discovery
from .record import check_output_dir, record_run
from .results import RunResult
from .stages import (  # noqa: F401  (re-exported: the names callers and tests know from here)
    NO_VALIDATION,
    REINFER_STEPS,
    TEMPLATES,
    _take,
    build_candidates,
    build_context,
    check_concept_labels,
    check_report_method,
    check_truth,
    choose_report_method,
    concept_methods,
    concepts_from,
    dataset_options,
    evaluate_at_nec,
    fit_and_evaluate,
    ground_models,
    has_concepts,
    image_concept_truth,
    labelled_methods,
    model_concept_warnings,
    open_grounding,
    report_title,
    score_concept_labels,
    text_filters,
    uses_run_concepts,
    warn_if_inseparable,
)
from .tables import concept_label_table, few_shot_table, results_table

log = logging.getLogger("conceptlens")

# report.html's HTML from the finished main run (conceptlens.report.run_report; the CLI and the demo
# pass it to run_experiment, which cannot import the report layer)
ReportWriter = Callable[["RunState"], str]


def peak_rss_mb() -> float | None:
    """The process's peak resident memory so far, in MiB (resource's ru_maxrss; psutil's current RSS
    where resource is missing, e.g. Windows; None without either)."""
    try:
        import resource
    except ImportError:
        try:
            import psutil
        except ImportError:
            return None
        return psutil.Process().memory_info().rss / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB elsewhere


@dataclass
class RunState:
    """Everything a run has built so far; each stage reads what the ones before it left and adds its
    own (see run_experiment for the order)."""

    cfg: RunConfig
    write: bool = True
    # load
    data: object = None
    parts: dict = field(default_factory=dict)
    annotations: object = None
    class_annotations: object = None
    labelled: bool = False
    backbone: object = None
    cache: object = None
    cache_root: Path | None = None
    grounding: Grounding | None = None
    # encode
    bundles: dict = field(default_factory=dict)
    # concepts
    discovery: object = None
    discovery_record: dict = field(default_factory=dict)
    texts: FilterResult | None = None
    selected: ConceptSet | None = None
    concept_report: dict = field(default_factory=dict)
    context: object = None
    # fit and evaluate
    results: dict[str, dict] = field(default_factory=dict)
    models: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    concept_labels: dict | None = None
    # ground
    details: dict = field(default_factory=dict)
    matches: list | None = None
    # report
    report_method: dict | None = None
    curves: dict = field(default_factory=dict)
    files: dict[str, str | bytes] = field(default_factory=dict)  # written into the run folder
    # few-shot, confounded
    fewshot: dict | None = None
    fewshot_grounding: dict | None = None
    fewshot_failures: dict[str, list[str]] = field(default_factory=dict)
    confounded: dict | None = None
    # timing: seconds (results.json "seconds", as ever) and per stage wall time and peak RSS
    seconds: dict[str, float] = field(default_factory=dict)
    stages: dict[str, dict] = field(default_factory=dict)

    @property
    def train(self):
        return self.bundles["train"]

    @property
    def test(self):
        return self.bundles["test"]

    @property
    def val(self):
        """The validation bundle, None when the run has no validation split."""
        val = self.bundles.get("val")
        return val if val is not None and len(val) else None

    def image(self, item):
        """The decoded image of the dataset item `item` (the report's image reader)."""
        i = self._index[item]
        return self.data.images.decode(i, self.data.images.read(i))

    @property
    def _index(self) -> dict:
        if getattr(self, "_ids", None) is None:
            self._ids = {item: i for i, item in enumerate(self.data.ids)}
        return self._ids


def timed(state: RunState, name: str, stage: Callable[[RunState], object]) -> None:
    """Run `stage(state)` and record its wall time and the peak RSS after it in state.stages."""
    t = time.perf_counter()
    stage(state)
    rss = peak_rss_mb()
    state.stages[name] = {"seconds": time.perf_counter() - t,
                          "peak_rss_mb": None if rss is None else round(rss, 1)}


# -- the stages ---------------------------------------------------------------------------------

def load_stage(state: RunState) -> None:
    """The dataset, its splits, the annotations (checked against the classes), the backbone and the
    caches; a wrong confounded class or a concept-labelled method without annotations fails here,
    before any image is encoded."""
    cfg = state.cfg
    state.data = data = load_dataset(cfg.data.dataset, **dataset_options(cfg.data))
    if cfg.confounded is not None:
        confounded_protocol.check_confounded_classes(cfg.confounded, data)  # a wrong class name fails before encoding
    state.parts = take_splits(data, cfg.data)  # [data] fractions and per-class sizes
    state.annotations, state.class_annotations = open_grounding(cfg, data, state.parts["train"])
    check_concept_labels(cfg.methods, state.annotations)
    state.labelled = bool(labelled_methods(cfg.methods))
    state.backbone = open_backbone(cfg.backbone, cfg.cache_dir)
    state.cache_root = None if cfg.cache_dir is None else Path(cfg.cache_dir) / "features"
    state.cache = image_cache(state.backbone, state.cache_root)
    if state.annotations is not None:
        embed = matching_embedder(cfg.grounding.embed, state.backbone, state.cache_root)
        state.grounding = Grounding(state.annotations, state.class_annotations, embed, cfg.grounding.k,
                                    cfg.grounding.match_threshold)


def encode_stage(state: RunState) -> None:
    t = time.perf_counter()
    state.bundles = encode_parts(state.cfg, state.backbone, state.data, state.parts, state.cache)
    state.seconds["encode"] = time.perf_counter() - t


def concepts_stage(state: RunState) -> None:
    """Discovery's inputs (dn_cbm, v2c), the run's concepts (candidates, filters, selection on the
    training images) and the Context every method is fitted with."""
    cfg, data = state.cfg, state.data
    t = time.perf_counter()
    state.discovery = build_discovery(cfg, state.backbone, state.cache, state.cache_root, state.train,
                                      cfg.methods, state.discovery_record)
    if state.discovery is not None:
        state.seconds["discovery"] = time.perf_counter() - t
    t = time.perf_counter()
    report = state.concept_report
    if uses_run_concepts(cfg.methods):
        candidates = build_candidates(cfg, data.classes)
        state.texts = text_filters(cfg, candidates, state.backbone, data.classes, state.cache_root)
        filtered, state.selected = concepts_from(cfg, state.texts, state.backbone, state.train,
                                                 state.cache_root, cfg.data.seed)
        if cfg.concepts.filter:
            report["filter"] = filtered.report()
        report["concepts"] = {"candidates": candidates.summary(), "filtered": filtered.concepts.summary(),
                              "selected": state.selected.summary(),
                              "warning": warn_if_inseparable(state.selected, data.classes)}
    state.seconds["concepts"] = time.perf_counter() - t
    state.context = build_context(state.backbone, data.classes, state.selected, state.cache_root,
                                  state.grounding, state.discovery, state.labelled)


def fit_stage(state: RunState) -> None:
    """Every method fitted and evaluated; the concept warnings, the concept-label measures (cbm,
    ecbm) and each concept model's truth check."""
    cfg = state.cfg
    t = time.perf_counter()
    state.results, state.models = fit_and_evaluate(cfg.methods, state.train, state.val, state.test,
                                                   state.context, cfg.nec, cfg.nec_protocol, cfg.nec_curve)
    state.seconds["fit"] = time.perf_counter() - t
    warnings = [w for w in [state.concept_report.get("concepts", {}).get("warning")] if w]
    warnings += list(model_concept_warnings(state.models, state.data.classes).values())
    if warnings:
        state.concept_report["warnings"] = warnings
    state.warnings = warnings
    if state.labelled:
        t = time.perf_counter()
        state.concept_labels = {"policy": "uncertain", "strategy": "truth", "reference": "train",
                                "level": state.annotations.level,
                                "methods": score_concept_labels(state.results, state.models, state.train,
                                                                state.test, state.context)}
        state.seconds["concept_labels"] = time.perf_counter() - t
    held = state.val if state.val is not None else state.train
    check_truth(state.results, state.models, held, state.context, state.grounding, cfg.grounding.k,
                on="validation" if state.val is not None else "training")


def ground_stage(state: RunState) -> None:
    """The grounding measures on the test images, and the concepts matched to the annotations."""
    t = time.perf_counter()
    grounding = state.grounding
    state.details = ground_models(state.results, state.models, state.test, grounding)
    # the run's concepts and every discovering method's own (latent names, V2C tokens), once each
    own = [c for m in state.models.values() if get_tags(m).discovers_concepts for c in m.concepts_]
    matched = list(dict.fromkeys([*state.context.concepts, *own]))
    state.matches = grounding.match(matched) if grounding is not None and matched else None
    if grounding is not None:
        state.seconds["grounding"] = time.perf_counter() - t


def report_stage(state: RunState, report: ReportWriter | None = None) -> None:
    """For a recorded run: which model the report shows ([report] method), every concept model's
    deletion curves (into its row), and report.html from `report` (none without it)."""
    if not state.write:
        return
    state.report_method = choose_report_method(state.cfg.report.method, state.results, state.models)
    if state.report_method is None:
        return
    from ..explain import deletion_curves

    t = time.perf_counter()
    for name, model in state.models.items():
        if has_concepts(model):
            state.curves[name] = curve = deletion_curves(model, state.test)
            state.results[name]["deletion_area_top"] = curve["area_top"]
            state.results[name]["deletion_area_random"] = curve["area_random"]
    if report is not None:
        state.files["report.html"] = report(state)
    state.seconds["report"] = time.perf_counter() - t


def fewshot_stage(state: RunState) -> None:
    cfg = state.cfg
    if not cfg.fewshot.shots:
        return
    t = time.perf_counter()
    state.fewshot_grounding = {} if state.grounding is not None else None
    state.fewshot = run_few_shot(state)
    state.seconds["fewshot"] = time.perf_counter() - t


def confounded_stage(state: RunState) -> None:
    cfg = state.cfg
    if cfg.confounded is None:
        return
    t = time.perf_counter()
    # the pool and SAE see no label, so every pair reuses them
    state.confounded = confounded_protocol.run_confounded(cfg.confounded, cfg, state.data, state.backbone,
                                                          state.cache, state.cache_root, state.grounding,
                                                          state.discovery)
    state.seconds["confounded"] = time.perf_counter() - t


def run_result(state: RunState) -> RunResult:
    """The typed result of the finished stages (what results.json records)."""
    cfg, annotations, fewshot = state.cfg, state.annotations, state.fewshot
    table = results_table(state.results, cfg.nec, cfg.nec_protocol, cfg.grounding.k)
    if state.concept_labels:
        table += "\n\n" + concept_label_table(state.concept_labels)
    return RunResult(
        backbone_id=state.backbone.id, preprocess=state.backbone.preprocess_id,
        backbone_spec=getattr(state.backbone, "spec", ""),
        sizes={k: len(v) for k, v in state.bundles.items()}, results=state.results,
        nec=cfg.nec, nec_protocol=cfg.nec_protocol,
        fewshot=fewshot, fewshot_validation=cfg.fewshot.use_val if fewshot else None,
        concept_report=state.concept_report, seconds=state.seconds, stages=state.stages,
        grounding=None if state.grounding is None else {
            "annotations": annotations.provenance, "level": annotations.level,
            "n_attributes": len(annotations.concepts), "k": cfg.grounding.k,
            "match_threshold": cfg.grounding.match_threshold, "embed": cfg.grounding.embed,
            "methods": state.details},
        concept_matches=state.matches, fewshot_grounding=state.fewshot_grounding, confounded=state.confounded,
        discovery=state.discovery_record or None, concept_labels=state.concept_labels,
        report_method=state.report_method, fewshot_failures=state.fewshot_failures or None,
        fewshot_table=(few_shot_table(fewshot, state.fewshot_grounding, cfg.grounding.k, state.fewshot_failures)
                       if fewshot else None),
        table=table, split_ids={k: list(v.ids) for k, v in state.bundles.items()})  # record_run: splits.json


STAGES = (("load", load_stage), ("encode", encode_stage), ("concepts", concepts_stage), ("fit", fit_stage),
          ("ground", ground_stage), ("report", report_stage), ("fewshot", fewshot_stage),
          ("confounded", confounded_stage))


def run_experiment(cfg: RunConfig, write: bool = True, overwrite: bool = False,
                   report: ReportWriter | None = None,
                   extra_files: Callable[[RunState], dict[str, str | bytes]] | None = None) -> RunResult:
    """Run `cfg`. With `write`, record it in cfg.output_dir, which must not exist or be empty
    unless `overwrite` (then a previous run folder there is replaced once this one is done).

    The stages (STAGES: load, encode, concepts, fit, ground, report, fewshot, confounded) run in
    order over one RunState; each one's wall time and the peak RSS after it are recorded under
    "stages" in results.json. `report` (conceptlens.report.run_report: the CLI and the demo pass
    it) writes report.html from the finished main run; None: the run folder has no report.html
    (the deletion curves are still measured). `extra_files(state)`, where given, returns more
    files for the run folder from the finished run ({relative name: text or bytes}; the demo's
    example images)."""
    validate_config(cfg)
    check_report_method(cfg.report.method, cfg.methods)
    if write:
        check_output_dir(cfg.output_dir, overwrite, cfg.cache_dir)
    t0 = time.perf_counter()
    state = RunState(cfg, write)
    # progress = false: no stage draws a bar (progress.py's one switch, restored after the run);
    # true leaves them to the terminal and $CONCEPTLENS_PROGRESS
    previous = None if cfg.progress else set_progress(False)
    try:
        for name, stage in STAGES:
            timed(state, name, (lambda s: stage(s, report)) if stage is report_stage else stage)
        if write and extra_files is not None:
            state.files.update(extra_files(state))
    finally:
        if not cfg.progress:
            set_progress(previous)
    state.seconds["total"] = time.perf_counter() - t0
    result = run_result(state)
    if write:
        result.output_dir = str(record_run(cfg, result, state.selected, state.models, state.files, overwrite))
    return result


def encode_parts(cfg: RunConfig, backbone, data, parts: dict, cache) -> dict:
    """Each split's FeatureBundle: encoded here, or on a Ray cluster when [data] ray is set
    (features/ray_encode.py: the same cache shards, so either way resumes the other)."""
    if not cfg.data.ray:
        return {k: encode_dataset(backbone, data.subset(v), cache, batch_size=cfg.batch_size,
                                  workers=cfg.workers, on_error=cfg.data.on_error, progress=cfg.progress)
                for k, v in parts.items()}
    from ..features.ray_encode import connect, encode_dataset_ray

    started = connect(cfg.data.ray)  # once, so "local" does not start a cluster per split
    try:
        return {k: encode_dataset_ray(cfg.backbone, data.subset(v), cache, address=cfg.data.ray,
                                      workers=cfg.data.ray_workers, batch_size=cfg.batch_size,
                                      num_gpus=cfg.data.ray_gpus_per_worker,
                                      cpus_per_worker=cfg.data.ray_cpus_per_worker,
                                      on_error=cfg.data.on_error, progress=cfg.progress,
                                      text_cache_dir=cfg.cache_dir, backbone=backbone)
                for k, v in parts.items()}
    finally:
        if started:
            import ray

            ray.shutdown()


def run_few_shot(state: RunState) -> dict:
    """LaBo's protocol on the run's `state` (its train, val and test features, backbone, text-filtered
    candidates, grounding and discovery inputs): k images per class (nested across k), several
    seeds, every method on the same features, on equal terms:
    - concepts are filtered (activation filter) and selected from the k-shot images alone;
      state.texts holds the candidates after the text-only filters, which see no image;
    - every method gets the same validation split at every k (cfg.fewshot.use_val), or none
      does; a method that can use it (`uses_validation`) does;
    - methods that discover concepts get the same discovery inputs (pool, SAE, vocabulary) at
      every k: they are built without labels, from the full pool.
    Returns {method: {shots: [top-1 per seed]}}; with grounding, state.fewshot_grounding (a dict)
    is filled with {method: {shots: {"concept_auroc" | "precision_at_k" | "negative_precision_at_k":
    [per seed, None where undefined or the method has no concepts]}}}. A method that cannot be
    fitted at some k and seed (fit_and_evaluate) has None there, and state.fewshot_failures is
    filled with {method: ["<k>-shot seed <s>: <why>", ...]}.
    """
    cfg, train, test, backbone, texts = state.cfg, state.train, state.test, state.backbone, state.texts
    cache_root, grounding, discovery = state.cache_root, state.grounding, state.discovery
    measures, failures = state.fewshot_grounding, state.fewshot_failures
    val = state.val if cfg.fewshot.use_val else None
    rows: dict[str, dict[str, list[float | None]]] = {}
    for seed in cfg.fewshot.seeds:
        for shots in cfg.fewshot.shots:
            idx = few_shot(train, np.arange(len(train)), shots, seed)
            sub = train.rows(idx)
            selected = None
            if texts is not None:
                selected = concepts_from(cfg, texts, backbone, sub, cache_root, seed)[1]
            context = build_context(backbone, train.classes, selected, cache_root, grounding, discovery,
                                    bool(labelled_methods(cfg.methods)))
            results, models = fit_and_evaluate(cfg.methods, sub, val, test, context, nec=0)
            ground_models(results, models, test, grounding)
            for name, row in results.items():
                # a method that failed at this k and seed (see fit_and_evaluate) gives None there
                rows.setdefault(name, {}).setdefault(str(shots), []).append(row.get("top1"))
                if "failed" in row:
                    failures.setdefault(name, []).append(f"{shots}-shot seed {seed}: {row['failed']}")
                if grounding is not None and measures is not None:
                    cell = measures.setdefault(name, {}).setdefault(str(shots), {})
                    for key in ("concept_auroc", "precision_at_k", "negative_precision_at_k",
                                "precision_at_k_coverage"):
                        cell.setdefault(key, []).append(row.get(key))
    return rows
