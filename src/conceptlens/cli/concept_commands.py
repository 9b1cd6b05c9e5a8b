"""`conceptlens concepts generate | import | filter | select | show | cav | evaluate | judge`.

Each step writes a concept set file (conceptlens JSON) that the next one reads; `cav` writes
concept activation vectors (Post-hoc CBM) learnt from example images; `evaluate` scores a saved
model's concepts (or the backbone's raw concept similarities) against human annotations. No
command replaces an existing output file unless given `--overwrite`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .._io import write_json, write_text
from ..cache import content_key
from ..concepts import ConceptSet, import_concepts
from ..concepts.importers import empty_classes
from ..concepts.sources import get_source
from ..data import load_dataset
from ..errors import ConfigError, DataError, UsageError
from . import arg_types
from .data_commands import add_encode_options, add_matching_options
from .model_commands import _dataset, _load, _split

# Imports of the packages that load torch or scikit-learn (backbones, features, methods, runs,
# evaluation, grounding, explain, report, demo) stay inside the commands that need them, so
# that `conceptlens --help` and argument errors answer at once.


def _classes(args) -> list[str]:
    if args.classes:
        return [c.strip() for c in args.classes.split(",") if c.strip()]
    if args.classes_file:
        return [ln.strip() for ln in Path(args.classes_file).read_text().splitlines() if ln.strip()]
    if args.dataset:
        return list(load_dataset(args.dataset).classes)

    raise ConfigError("Give the classes: --classes 'a,b,c', --classes-file FILE or --dataset SPEC.")


def _refuse_overwrite(args, *paths) -> None:
    """Stop before any work when an output exists and --overwrite was not given."""
    if getattr(args, "overwrite", False):
        return
    for p in paths:
        if p is not None and Path(p).exists():
            raise ConfigError(f"{p} already exists; pass --overwrite to replace it, or choose "
                              "another output path.")


def _cache(args):
    return None if args.cache_dir is None else Path(args.cache_dir) / "features"


def _per_class(value: str) -> int | str:
    """--images-per-class: a positive integer, or 0 / 'all' for every training image (as runs'
    [data] train_per_class, where 0 = all)."""
    text = str(value).strip().lower()
    if text in ("all", "0"):
        return "all"
    if not text.isdigit():
        raise UsageError(f"--images-per-class must be a positive integer, 0 or 'all'; got {value!r}.")
    return int(text)


def _train(args, backbone):
    from ..features import encode_split

    data = load_dataset(args.dataset)
    return encode_split(backbone, data, "train", _per_class(args.images_per_class), args.seed,
                        cache=_cache(args), batch_size=args.batch_size, workers=args.workers,
                        progress=not args.no_progress)


def cmd_generate(args) -> int:
    _refuse_overwrite(args, args.out)
    classes = _classes(args)
    merged = ConceptSet(classes)
    for name in args.source:
        options = {}
        if name == "llm":
            options = dict(model=args.model, base_url=args.base_url, api_key_env=args.api_key_env,
                           prompts=tuple(args.prompt or ["labo"]), n=args.n, samples=args.samples,
                           concurrency=args.concurrency)
        elif name == "file":
            options = dict(path=args.file)
        elif name == "vocabulary":
            options = dict(size=args.vocabulary_size)
        source = get_source(name, **options)
        result = (source.generate(classes, allow_partial=args.allow_partial) if name == "llm"
                  else source.generate(classes))
        print(f"[{name}] {result.report()}")
        merged = merged.merge(result.concepts)
    from ..concepts.pipeline import drop_blocked

    merged = drop_blocked(merged)  # slurs, obscenities, sensitive words (concepts/blocklist.py)
    merged.save(args.out)
    print(f"{merged.summary()} -> {args.out}")
    return 0


def cmd_import(args) -> int:
    _refuse_overwrite(args, args.out)
    concepts, rejected = import_concepts(args.file, args.kind)
    for r in rejected[:20]:
        print(f"rejected {r.text[:60]!r} ({r.reason}) for {list(r.classes)}")
    empty = empty_classes(concepts)
    if empty:
        _print_warning(f"{len(empty)} class(es) have no concept in {args.file}: "
                       f"{', '.join(map(repr, empty[:10]))}{' ...' if len(empty) > 10 else ''}. A run "
                       "needs concepts for every class; add some, or combine with another source.")
    kinds = sorted({p.get("source", "?") for c in concepts for p in c.provenance})
    print(f"read {args.file} as {', '.join(kinds) or args.kind}")
    concepts.save(args.out)
    print(f"{concepts.summary()}; {len(rejected)} rejected -> {args.out}")
    return 0


def cmd_filter(args) -> int:
    from ..concepts.pipeline import run_filters
    from ..runs.experiment import open_backbone

    _refuse_overwrite(args, args.out, args.dropped)
    concepts = ConceptSet.load(args.concepts)
    backbone = open_backbone(args.backbone, getattr(args, "cache_dir", None))
    train = None if args.no_activation or not args.dataset else _train(args, backbone)
    result = run_filters(concepts, backbone, concepts.classes, train, args.max_chars,
                         args.class_cutoff, args.duplicate_cutoff, args.activation_cutoff,
                         args.activation_quantile, cache=_cache(args),
                         source_max_chars={} if args.one_length_cap else None)
    print(result.report())
    if args.dropped:
        write_json(args.dropped, [d.__dict__ for d in result.dropped])
    result.concepts.save(args.out)
    print(f"-> {args.out}")
    return 0


def _print_warning(text: str | None) -> None:
    import sys

    if text:
        print(f"warning: {text}", file=sys.stderr)


def cmd_select(args) -> int:
    from ..concepts.pipeline import run_selection, separability_warning
    from ..runs.experiment import open_backbone

    if not args.dataset:
        raise UsageError("concepts select needs training images to score concepts on: give "
                         "--dataset SPEC ('fashion-mnist', a folder with one subfolder per class, "
                         "or a .csv/.jsonl manifest).")
    budget = args.global_budget
    if budget != "auto":
        if not str(budget).isdigit():
            raise UsageError(f"--global-budget must be 'auto' or an integer >= 0; got {budget!r}.")
        budget = int(budget)
    _refuse_overwrite(args, args.out)
    concepts = ConceptSet.load(args.concepts)
    backbone = open_backbone(args.backbone, getattr(args, "cache_dir", None))
    sel = run_selection(concepts, backbone, _train(args, backbone), cache=_cache(args),
                        per_class=args.per_class, method=args.method, lam=args.lam,
                        score_weight=args.score_weight, coverage=args.coverage,
                        global_budget=budget, seed=args.seed)
    sel.concepts.save(args.out)
    print(sel.report())
    _print_warning(separability_warning(sel.concepts))
    print(f"selected {sel.concepts.summary()} (objective {sel.objective:.6g}) -> {args.out}")
    return 0


def cmd_show(args) -> int:
    """Print a concept set: a summary, each class's concepts, then the global ones (tied to no
    class). --json prints the whole set as JSON and nothing else. A closed pipe (`| head`)
    ends it quietly."""
    import os
    import sys

    concepts = ConceptSet.load(args.concepts)
    try:
        if args.json:
            print(json.dumps(concepts.to_dict(), indent=2, ensure_ascii=False))
            return 0
        print(concepts.summary())
        classes = [args.class_name] if args.class_name else concepts.classes
        for cls in classes:
            _show_list(concepts, f"{cls}", concepts.for_class(cls), args.limit)
        if not args.class_name:
            glob = [i for i, c in enumerate(concepts.concepts) if not c.classes]
            if glob:
                _show_list(concepts, "global concepts (tied to no class)", glob, args.limit)
        sys.stdout.flush()
    except BrokenPipeError:
        # the reader went away (`| head`): send what Python still flushes at exit to /dev/null
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 0


def _show_list(concepts, title: str, idx: list[int], limit: int) -> None:
    print(f"\n{title} ({len(idx)})")
    for i in idx[:limit]:
        c = concepts.concepts[i]
        sources = sorted({p.get("source", "?") for p in c.provenance})
        print(f"  - {c.text}  [{', '.join(sources)}]"
              + (f"  (also {len(c.classes) - 1} other classes)" if len(c.classes) > 1 else ""))
    if len(idx) > limit:
        print(f"  ... {len(idx) - limit} more (--limit N to show more)")


def _encode_folder(args, backbone, folder: str, what: str):
    """Encode an image folder (one subfolder per concept): (dataset, bundle, X (n, d))."""
    from ..features import encode_dataset

    if not Path(folder).is_dir():
        raise ConfigError(f"{what} {folder} is not a folder; expected {folder}/<concept>/<image>.")
    data = load_dataset(folder)
    bundle = encode_dataset(backbone, data, _cache(args), batch_size=args.batch_size,
                            workers=args.workers, on_error=args.on_error,
                            progress=not args.no_progress)
    X = getattr(bundle, args.on)
    if X is None:
        raise ConfigError(f"Backbone {backbone.id} gives no image '{args.on}'; use --on embedding.")
    return data, bundle, np.asarray(X, np.float32)


def cav_examples(args, backbone) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{concept: (positives, negatives)} from --images and --negatives (see `cmd_cav`)."""
    data, bundle, X = _encode_folder(args, backbone, args.images, "--images")
    labels = np.asarray(bundle.labels)
    examples = {}
    if args.negatives:
        ndata, nbundle, NX = _encode_folder(args, backbone, args.negatives, "--negatives")
        index = {c.casefold(): i for i, c in enumerate(ndata.classes)}
        missing = [c for c in data.classes if c.casefold() not in index]
        if missing:
            raise DataError(f"--negatives {args.negatives} has no subfolder for concept(s) {missing}; "
                            f"it has {list(ndata.classes)}. Give every concept in --images a "
                            "negatives subfolder of the same name, or leave out --negatives to "
                            "draw negatives from the other concepts' images.")
        nlabels = np.asarray(nbundle.labels)
        for c, name in enumerate(data.classes):
            examples[name] = (X[labels == c], NX[nlabels == index[name.casefold()]])
        return examples
    # no negatives folder: as the reference's CUB loader (images without the concept), the
    # other concepts' images, minus any with the same bytes as one of this concept's images
    row = {item: i for i, item in enumerate(data.ids)}
    keys = np.array([content_key(data.images.read(row[item])) for item in bundle.ids])
    for c, name in enumerate(data.classes):
        own = set(keys[labels == c])
        neg = (labels != c) & ~np.isin(keys, list(own))
        examples[name] = (X[labels == c], X[neg])
    return examples


def cmd_cav(args) -> int:
    """Post-hoc CBM's concept activation vectors: a linear SVM per concept folder."""
    from ..methods.posthoc import learn_cav_bank
    from ..runs.experiment import open_backbone

    _refuse_overwrite(args, args.out)
    backbone = open_backbone(args.backbone, getattr(args, "cache_dir", None))
    examples = cav_examples(args, backbone)
    meta = {"backbone": backbone.id, "on": args.on, "images": str(args.images),
            "negatives": str(args.negatives) if args.negatives else None}
    bank = learn_cav_bank(examples, C=args.C, n_samples=args.n_samples, seed=args.seed, meta=meta)
    bank.save(args.out)
    width = max(len(c) for c in bank.concepts)
    print(f"{'concept':{width}}  positives  negatives  train acc  val acc")
    for i, name in enumerate(bank.concepts):
        pos, neg = examples[name]
        print(f"{name:{width}}  {len(pos):9d}  {len(neg):9d}  {bank.train_accuracy[i]:9.3f}  "
              f"{bank.val_accuracy[i]:7.3f}")
    replaced = bank.meta["sampled_with_replacement"]
    if replaced:
        print(f"note: fewer than 2 x --n-samples ({2 * args.n_samples}) images for {len(replaced)} "
              f"concept(s) ({', '.join(replaced[:5])}{' ...' if len(replaced) > 5 else ''}): drawn with "
              "replacement, as the reference does, so their validation accuracy is optimistic.")
    print(f"{len(bank.concepts)} CAVs (mean val accuracy {bank.val_accuracy.mean():.3f}) -> {args.out}")
    return 0


def _raw_activations(backbone, bundle, concepts: list[str], cache) -> np.ndarray:
    """The backbone's raw concept scores: cosine of each image and concept text embedding."""
    from ..grounding import text_embedder

    text = text_embedder(backbone, cache)(concepts)
    return np.asarray(bundle.embedding, dtype=np.float64) @ text.T  # image rows are unit length


def grounding_inputs(args):
    """(model or None, backbone, dataset, bundle of the --split images) for `concepts evaluate`."""
    if args.model is None:
        if not args.raw:
            raise UsageError("concepts evaluate needs a saved model folder (MODEL), or --raw to score the "
                             "backbone's raw concept similarities for the annotated attributes.")
        from ..runs.experiment import open_backbone

        model, backbone = None, open_backbone(args.backbone, args.cache_dir)
        data = load_dataset(args.dataset)
    else:
        model, backbone = _load(args)
        from ..methods.tags import get_tags
        if not get_tags(model).needs_concepts and not args.raw:
            raise ConfigError(f"{args.model} is a {model.name!r} model, which has no concepts to ground; "
                              "give a concept model, or --raw to score the backbone's raw similarities.")
        data = _dataset(args, model)
    return model, backbone, data, _split(args, backbone, data, args.split, args.images_per_class)


def judged_models(path: str) -> dict:
    """{name: model} of a saved model folder, or of every concept model in a run folder's models/."""
    from ..methods import Method

    folder = Path(path)
    if (folder / "model.json").is_file():
        model = Method.load(folder)
        return {model.name: model}
    if (folder / "models").is_dir():
        models = {}
        for sub in sorted(p for p in (folder / "models").iterdir() if (p / "model.json").is_file()):
            model = Method.load(sub)
            from ..methods.tags import get_tags
            if get_tags(model).needs_concepts or get_tags(model).discovers_concepts:
                models[sub.name] = model
        if models:
            return models
    raise ConfigError(f"{path}: neither a saved model folder (model.json) nor a run folder with concept "
                      "models in models/; give one of those.")


def cmd_judge(args) -> int:
    """The sheet a person marks: each class's top-k concepts of a model or of a run's models."""
    from ..grounding.judgements import judgement_sheet, read_judgements

    if args.k < 1:
        raise UsageError(f"--k must be a positive integer (top concepts per class); got {args.k}.")
    _refuse_overwrite(args, args.out)
    known = read_judgements(args.prefill) if args.prefill else None
    models = judged_models(args.model)
    text = judgement_sheet(models, args.k, known)
    write_text(args.out, text)
    n = text.count("\n") - 1
    print(f"{n} (class, concept) pairs from the top-{args.k} of {', '.join(models)} -> {args.out}\n"
          "Mark the judgement column: 1 (true of the class), 0 (false), blank (cannot say); then "
          f"`conceptlens concepts evaluate {args.model} --judgements {args.out}`.")
    return 0


def evaluate_judgements(args) -> int:
    """`concepts evaluate MODEL_OR_RUN --judgements FILE`: precision@k against a person's marks."""
    from ..grounding.judgements import MIN_COVERAGE, judged_precision, read_judgements

    judgements = read_judgements(args.judgements)
    out = {}
    print(f"precision@{args.k} against {len(judgements)} judged (class, concept) pairs in {args.judgements}")
    for name, model in judged_models(args.model).items():
        r = judged_precision(model, judgements, args.k)
        out[name] = r
        value = ("not measurable" if r["precision"] is None else f"{r['precision']:.2f}")
        on = "" if r["precision_on_judged"] is None else f", {r['precision_on_judged']:.2f} on the judged pairs"
        print(f"  {name}: {value} (coverage {r['coverage']:.2f}: {r['n_judged']} of {r['n_pairs']} top-"
              f"{args.k} pairs judged{on})" + ("" if r["coverage"] >= MIN_COVERAGE else
                                              f"; below {MIN_COVERAGE}, judge the blank rows"))
        wrong = [f"{c}: {e['concept']}" for c, items in r["per_class"].items() for e in items
                 if e["judgement"] == 0]
        if wrong:
            print("    judged false: " + "; ".join(wrong))
    if args.json:
        write_json(args.json, out)
        print(f"-> {args.json}")
    return 0


def cmd_evaluate(args) -> int:
    """Concept AUROC (and, for a model, explanation precision@k) against annotations."""
    from ..grounding import class_level, grounding_measures, matching_embedder, resolve_annotations
    from ..runs.tables import DASH

    if args.judgements is not None:
        if args.model is None:
            raise UsageError("--judgements scores a model or a run folder: give MODEL (a saved model or run "
                             "folder).")
        if args.k < 1:
            raise UsageError(f"--k must be a positive integer (top concepts per class); got {args.k}.")
        _refuse_overwrite(args, args.json)
        return evaluate_judgements(args)
    if args.dataset is None:
        raise UsageError("concepts evaluate needs --dataset (the images to score on), or --judgements FILE "
                         "to score against a person's judgements.")
    if args.k < 1:
        raise UsageError(f"--k must be a positive integer (top concepts per class); got {args.k}.")
    if not -1 <= args.match_threshold <= 1:
        raise UsageError(f"--match-threshold is a cosine similarity in [-1, 1]; got {args.match_threshold}.")
    _refuse_overwrite(args, args.json)
    model, backbone, data, bundle = grounding_inputs(args)
    annotations = resolve_annotations(args.annotations, args.dataset, data)
    if annotations is None:
        raise ConfigError(f"no concept annotations for dataset {args.dataset!r}: give --annotations "
                          "fashion-mnist or the path of a class-level or per-image CSV.")
    cache = _cache(args)
    embed = matching_embedder(args.embed, backbone, cache)
    classes = data.classes
    if model is None:
        concepts, weights = list(annotations.concepts), None
        what = f"raw {backbone.id} concept similarity"
    elif args.raw:
        concepts, weights = list(model.concepts_), None
        what = f"raw {backbone.id} similarity to {model.name}'s concepts"
    else:
        concepts, weights = list(model.concepts_), model.class_weights_
        what = f"{model.name} ({args.model})"
    activations = (_raw_activations(backbone, bundle, concepts, cache) if args.raw
                   else model.transform(bundle))
    from ..methods.protocols import HasBottleneck
    kept = (None if model is None or args.raw or not isinstance(model, HasBottleneck)
            else model.bottleneck_)
    if kept is not None:  # a bottleneck that dropped concepts (KnoBo): score what it kept, as runs do
        kept = np.asarray(kept, dtype=np.int64)
        activations, concepts = activations[:, kept], [concepts[j] for j in kept]
        weights = np.asarray(weights)[:, kept]
    g = grounding_measures(activations, concepts, classes, bundle.labels, annotations, ids=list(bundle.ids),
                           class_weights=weights, embed=embed, k=args.k, threshold=args.match_threshold,
                           class_annotations=class_level(annotations, classes, data.ids, data.labels))
    print(f"{what} on {len(bundle)} {args.split} images of {args.dataset}; annotations "
          f"{annotations.provenance} ({annotations.level} level, {len(annotations.concepts)} attributes)")
    rows = [("concept", "matched attribute", "how", "similarity", "AUROC")]
    for m in g["matches"]:
        auc = g["concept_auroc_per_concept"].get(m["text"])
        attribute = m["match"] or (f"{DASH} (nearest: {m['nearest']})" if m["nearest"] else DASH)
        rows.append((m["text"], attribute, m["how"] or "unmatched",
                     "" if m["similarity"] is None else f"{m['similarity']:.3f}",
                     DASH if auc is None else f"{auc:.3f}"))
    widths = [min(40, max(len(r[i]) for r in rows)) for i in range(5)]
    for r in rows:
        print("  ".join(c[:40].ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    mean = g["concept_auroc"]
    print(f"\nmean concept AUROC {DASH if mean is None else f'{mean:.3f}'} over {g['concept_auroc_n']} "
          f"concepts ({g['n_annotated_concepts']} of {g['n_concepts']} matched to an annotated attribute)")
    if weights is not None:
        def p(v):
            return DASH if v is None else f"{v:.3f}"
        n = g["n_classes_scored"]
        print(f"precision@{args.k} {p(g['precision_at_k'])} (top-{args.k} positive-weight concepts annotated "
              f"true; {n['positive']} classes scored), negative precision@{args.k} "
              f"{p(g['negative_precision_at_k'])} ({n['negative']} classes)")
        for c in g["per_class"]:
            wrong = [item["concept"] for item in c["positive"] if item["truth"] == "false"]
            if wrong:
                print(f"  {c['class']}: top concepts annotated false: {', '.join(wrong)}")
    if args.json:
        write_json(args.json, g)
        print(f"-> {args.json}")
    return 0


def add_commands(sub) -> None:
    concepts = sub.add_parser("concepts", help="generate, import, filter, select, show concepts")
    csub = concepts.add_subparsers(dest="concepts_command", required=True)

    def class_options(p):
        p.add_argument("--classes", help="comma-separated class names")
        p.add_argument("--classes-file", help="one class name per line")
        p.add_argument("--dataset", help="take the class names from this dataset")

    p = csub.add_parser("generate", help="concepts for classes from one or more sources")
    class_options(p)
    p.add_argument("--source", action="append", required=True,
                   choices=["llm", "wordnet", "imagenet", "file", "vocabulary"])
    p.add_argument("--out", required=True)
    p.add_argument("--model", default="gpt-4o-mini")
    p.add_argument("--base-url", help="any OpenAI-compatible endpoint (vLLM, Ollama, ...)")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY",
                   help="name of the environment variable holding the key")
    p.add_argument("--prompt", action="append",
                   choices=["labo", "important", "superclass", "around", "knobo"])
    p.add_argument("--n", type=int, default=20, help="concepts asked for per prompt")
    p.add_argument("--samples", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--allow-partial", action="store_true")
    p.add_argument("--file", help="for --source file")
    p.add_argument("--vocabulary-size", type=int, default=20000)
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_generate)

    p = csub.add_parser("import", help="read LaBo / Label-free CBM / text / CSV concept files")
    p.add_argument("file")
    p.add_argument("--kind", default="auto",
                   choices=["auto", "labo", "label_free", "lines", "csv", "conceptlens"])
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_import)

    def image_options(p):
        p.add_argument("--dataset", help="training images (for activation / MI)")
        p.add_argument("--images-per-class", "--train-per-class", dest="images_per_class", default="50",
                       help="training images per class to encode, as runs' [data] train_per_class "
                            "(0 or 'all' = every training image; default 50)")
        p.add_argument("--seed", type=arg_types.seed, default=0)
        add_encode_options(p)

    p = csub.add_parser("filter", help="Label-free CBM's filters")
    p.add_argument("concepts")
    p.add_argument("--out", required=True)
    p.add_argument("--dropped", help="write what was dropped, and why, as JSON")
    p.add_argument("--max-chars", type=int, default=30,
                   help="length cap (Label-free CBM's 30); wordnet and imagenet phrases get 60 and "
                        "annotated attributes none, unless --one-length-cap")
    p.add_argument("--one-length-cap", action="store_true",
                   help="apply --max-chars to every concept, whatever its source (the reference)")
    p.add_argument("--class-cutoff", type=arg_types.finite_float, default=0.85)
    p.add_argument("--duplicate-cutoff", type=arg_types.finite_float, default=0.9)
    p.add_argument("--activation-cutoff", type=arg_types.finite_float, default=0.25)
    p.add_argument("--activation-quantile", type=arg_types.finite_float,
                   help="drop concepts below this quantile of activation instead")
    p.add_argument("--no-activation", action="store_true")
    p.add_argument("--overwrite", action="store_true", help="replace --out / --dropped if they exist")
    image_options(p)
    p.set_defaults(func=cmd_filter)

    p = csub.add_parser("select", help="LaBo's submodular selection (or top_k / random)")
    p.add_argument("concepts")
    p.add_argument("--out", required=True)
    p.add_argument("--per-class", type=int, default=50)
    p.add_argument("--method", default="submodular", choices=["submodular", "top_k", "random"])
    p.add_argument("--lam", type=arg_types.finite_float, default=0.1)
    p.add_argument("--score-weight", type=arg_types.finite_float, default=1e7)
    p.add_argument("--coverage", default="facility", choices=["facility", "reference"])
    p.add_argument("--global-budget", default="auto",
                   help="global concepts (tied to no class) to keep: 'auto' = per-class x classes "
                        "(default), or an integer (0 = none)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    image_options(p)
    p.set_defaults(func=cmd_select)

    p = csub.add_parser("show", help="print a concept set")
    p.add_argument("concepts")
    p.add_argument("--class", dest="class_name")
    p.add_argument("--limit", type=int, default=10)
    p.add_argument("--json", action="store_true", help="print the whole set as JSON, nothing else")
    p.set_defaults(func=cmd_show)

    p = csub.add_parser(
        "cav", help="learn concept activation vectors (Post-hoc CBM) from example images",
        description="One linear SVM per concept (sklearn SVC, linear kernel) separating that "
                    "concept's images from negatives, as Post-hoc CBM's learn_concepts_dataset.py. "
                    "Writes vectors, intercepts and train/val accuracies to a safetensors file for "
                    "posthoc / posthoc_hybrid's `cavs` parameter.")
    p.add_argument("--images", required=True,
                   help="folder with one subfolder per concept holding example images")
    p.add_argument("--negatives",
                   help="folder with one subfolder per concept holding its negative images (as "
                        "Broden's <concept>/negatives); default: the other concepts' images")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--C", type=arg_types.finite_float, default=0.1, help="SVM regularisation (default 0.1)")
    p.add_argument("--n-samples", type=int, default=50,
                   help="images per side to train on; as many more validate (default 50)")
    p.add_argument("--seed", type=arg_types.seed, default=1)
    p.add_argument("--on", choices=["embedding", "features"], default="embedding",
                   help="learn on the text-space embedding (default) or the backbone's features")
    p.add_argument("--on-error", choices=["fail", "skip"], default="fail")
    add_encode_options(p)
    p.set_defaults(func=cmd_cav)

    p = csub.add_parser(
        "evaluate", help="concept AUROC and explanation precision@k against concept annotations",
        description="Match the model's concepts to annotated attributes (normalised text, then the "
                    "backbone's text embeddings above --match-threshold), then print per concept how well "
                    "its activation separates images where the attribute holds from those where it does "
                    "not (AUROC), and the share of each class's top-k positive-weight concepts annotated "
                    "true of it (precision@k). --raw scores the backbone's raw concept similarity instead.")
    p.add_argument("model", nargs="?", help="a saved model folder, or with --judgements a run folder "
                                           "(optional with --raw)")
    p.add_argument("--judgements", help="a sheet from `concepts judge`, marked by a person: score precision@k "
                                        "against it (no images needed)")
    p.add_argument("--annotations", default="auto",
                   help="'fashion-mnist', a class-level or per-image CSV, or 'auto' (default: the "
                        "dataset's own: fashion-mnist, fashion-mnist-composite)")
    p.add_argument("--dataset", help="the dataset to score on (required without --judgements)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--images-per-class", default="200", help="images per class of the split (or 'all')")
    p.add_argument("--seed", type=arg_types.seed, default=0)
    p.add_argument("--k", type=int, default=5, help="top concepts per class for precision@k (default 5)")
    add_matching_options(p)
    p.add_argument("--raw", action="store_true",
                   help="score the backbone's raw concept similarity (cosine of image and concept text "
                        "embeddings): the model's concepts, or the annotated attributes without MODEL")
    p.add_argument("--json", help="also write every measure and match to this JSON file")
    p.add_argument("--overwrite", action="store_true", help="replace --json if it exists")
    add_encode_options(p)
    p.set_defaults(func=cmd_evaluate)

    p = csub.add_parser(
        "judge", help="write each class's top-k concepts as a CSV for a person to mark",
        description="One row per (class, concept) that a model (or any concept model of a run folder) ranks "
                    "among a class's top-k positive-weight concepts, with the models and ranks that put it "
                    "there. Mark the `judgement` column 1 (true of the class), 0 (false) or blank, then "
                    "score it with `concepts evaluate MODEL_OR_RUN --judgements FILE`.")
    p.add_argument("model", help="a saved model folder or a run folder")
    p.add_argument("--out", required=True, help="the CSV to write")
    p.add_argument("--k", type=int, default=5, help="top concepts per class (default 5)")
    p.add_argument("--prefill", help="an earlier marked sheet whose judgements are copied into this one")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_judge)
