"""`conceptlens explain | intervene | edit | report`: working with a saved model.

`report` takes a run folder (RUN_DIR) or a bare saved model (MODEL --dataset ...). A run
folder is reported on the run's own test split (the ids in its splits.json; recomputed from its
config.toml for a folder written before splits.json existed) with the run's other methods as
baselines, so its top-1 is the run's; a bare model gets the CLI's own split, and says so.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from .._io import write_text
from ..concepts import ConceptSet
from ..data import ImageDataset, load_dataset
from ..data.images import FileImages
from ..data.splits import take_splits
from ..data.video import VideoDataset, VideoSampling
from ..errors import ConfigError, DataError, UsageError, closest
from . import arg_types
from .data_commands import add_encode_options, add_matching_options

# Imports of the packages that load torch or scikit-learn (backbones, features, methods, runs,
# evaluation, grounding, explain, report, demo) stay inside the commands that need them, so
# that `conceptlens --help` and argument errors answer at once.


def _load_model(path: str, command: str):
    """The saved model at `path`, or, for a run folder (runs.folder.RunFolder), the model its
    report.html shows (said on stderr)."""
    from ..methods import Method
    from ..runs.folder import RunFolder
    from ..runs.record import is_run_folder

    if not is_run_folder(path):
        return Method.load(path)
    run = RunFolder.load(path)
    name = run.report_model_name()
    print(f"note: {path} is a run folder; {command} uses its {name!r} model (the one its report shows; "
          f"give {run.model_dir(name).parent}/<method> for another)", file=sys.stderr)
    return run.model(name)


def _load(args, command: str = "this command"):
    from ..backbones import open_backbone

    model = _load_model(args.model, command)
    backbone = open_backbone(_backbone_spec(args, model), args.cache_dir)
    model.check_backbone(backbone, "pass the backbone it was fitted with (--backbone)")
    return model, backbone


def _backbone_spec(args, model, fallback: str | None = None) -> str:
    """--backbone when given, else the backbone the model records (its full spec: an hf: folder as an
    absolute path), else `fallback` (a run's config), else offline."""
    return args.backbone or getattr(model, "backbone_spec_", "") or fallback or "offline"


def _cache(args):
    return None if args.cache_dir is None else Path(args.cache_dir) / "features"


def _split(args, backbone, data, split, per_class):
    from ..features import encode_split

    return encode_split(backbone, data, split, per_class, args.seed, cache=_cache(args),
                        batch_size=args.batch_size, workers=args.workers,
                        progress=not args.no_progress)


def _dataset(args, model):
    data = load_dataset(args.dataset)
    if tuple(data.classes) != tuple(model.classes_):
        raise ConfigError(f"The dataset's classes {list(data.classes)[:5]} differ from the "
                          f"model's {list(model.classes_)[:5]}.")
    return data


def _class_index(model, name: str) -> int:
    if name in model.classes_:
        return model.classes_.index(name)
    shown = ", ".join(model.classes_[:40]) + (f", ... ({len(model.classes_)} in all)"
                                              if len(model.classes_) > 40 else "")
    raise UsageError(f"--target {name!r} is not one of the model's classes.{closest(name, model.classes_)} "
                     f"Classes: {shown}.")


def _model_folder_above(path: Path) -> Path | None:
    """The saved model folder (one with model.json) that `path` is or lies inside, if any."""
    for folder in (path, *path.parents):
        if (folder / "model.json").is_file():
            return folder
    return None


# the video containers `conceptlens explain` reads as videos (any other file is an image)
EXPLAIN_VIDEO_SUFFIXES = (".mp4", ".webm", ".avi", ".mkv", ".mov")


def _explain_videos(args, model, backbone, paths: list[Path], target) -> list[str]:
    """Per video file: the prediction and the top concepts per window (a motif model), with the
    window sampling the model was fitted with."""
    import sys

    from ..features.video_encode import encode_videos
    from ..methods.motif import explain_video, video_as_text
    from ..methods.protocols import VideoModel

    if not isinstance(model, VideoModel):
        raise ConfigError(f"{paths[0]} is a video, but the model in {args.model} is a {model.name!r} "
                          "model, which explains images only; explain videos with a model fitted by "
                          "the 'motif' method.")
    sampling = model.video_sampling()
    if sampling is None:  # fitted on images: each window is one image, cut as the reference does
        sampling = VideoSampling()
        print(f"note: the model was not fitted on videos; cutting windows of {sampling.window} frames "
              "(the reference's default)", file=sys.stderr)
    data = VideoDataset("videos", model.classes_, np.zeros(len(paths), dtype=np.int64),
                        tuple(str(p) for p in paths), tuple(paths))
    feats = encode_videos(backbone, data, sampling, _cache(args), batch_size=args.batch_size,
                          workers=args.workers, progress=not args.no_progress)
    return [video_as_text(explain_video(model, feats, i, target=target, top=args.top), top=args.top)
            for i in range(len(feats))]


def _write_heatmaps(args, model, backbone, data, bundle, explained) -> None:
    """--heatmap: integrated-gradient heat maps of each image's top concepts (the union over the
    images, at most --top) through the backbone and the model, as one HTML page."""
    from ..explain.attribution import attribute
    from ..report.heatmaps import heatmap_section

    concepts = list(dict.fromkeys(c.concept for e in explained for c in e["top"]))[: args.top]
    index = {item: i for i, item in enumerate(data.ids)}
    images = [data.images.decode(index[i], data.images.read(index[i])) for i in bundle.ids]
    maps = attribute(backbone, model, images, concepts, n_steps=args.heatmap_steps)
    labels = [f"{Path(i).name}: {e['predicted']}" for i, e in zip(bundle.ids, explained, strict=True)]
    body = heatmap_section(images, maps, maps.targets, labels=labels,
                           title=f"Where the concepts of {getattr(model, 'name', 'the model')} look")
    write_text(args.heatmap, "<!doctype html><html><head><meta charset='utf-8'><title>conceptlens "
               f"heat maps</title></head><body>{body}</body></html>")
    print(f"heat maps -> {args.heatmap}", file=sys.stderr)


def cmd_explain(args) -> int:
    from ..explain.contributions import as_text, explain_image
    from ..features import encode_dataset

    model, backbone = _load(args, "explain")
    paths = [Path(p) for p in args.images]
    is_video = [p.suffix.lower() in EXPLAIN_VIDEO_SUFFIXES for p in paths]
    target = None if args.target is None else _class_index(model, args.target)
    images = [p for p, v in zip(paths, is_video, strict=True) if not v]
    texts: list[str] = []
    if images:
        data = ImageDataset("images", model.classes_, np.zeros(len(images), dtype=np.int64),
                            tuple(str(p) for p in images), FileImages(images))
        bundle = encode_dataset(backbone, data, _cache(args), batch_size=args.batch_size,
                                workers=args.workers, progress=not args.no_progress)
        explained = [explain_image(model, bundle, i, target=target, top=args.top) for i in range(len(bundle))]
        texts = [as_text(e) for e in explained]
        if args.heatmap:
            from ..explain.attribution import captum_missing

            why = captum_missing()
            if why:  # the explanations are still worth printing
                print(f"warning: --heatmap skipped: {why}.", file=sys.stderr)
            else:
                _write_heatmaps(args, model, backbone, data, bundle, explained)
    videos = [p for p, v in zip(paths, is_video, strict=True) if v]
    video_texts = _explain_videos(args, model, backbone, videos, target) if videos else []
    # in the order the files were given
    for v in is_video:
        print((video_texts if v else texts).pop(0))
    return 0


def cmd_intervene(args) -> int:
    from ..intervene import intervention_curve
    from ..intervene.interventions import class_level_truth

    model, backbone = _load(args)
    data = _dataset(args, model)
    concepts = ConceptSet.load(args.concepts)
    prior = concepts.subset([concepts.index(c) for c in model.concepts_]).class_matrix(model.classes_)
    train = _split(args, backbone, data, "train", args.images_per_class)
    test = _split(args, backbone, data, "test", args.images_per_class)
    truth = class_level_truth(model, test.labels, prior)
    print(f"accuracy after 0..{args.steps} interventions per image ({args.strategy} values; "
          "concept truth = generated for the image's class)")
    for policy in args.policy or ["random", "uncertain", "contribution"]:
        curve = intervention_curve(model, test, truth, args.steps, policy, args.strategy, train)
        print(f"  {policy:12s} " + " ".join(f"{100 * a:5.1f}" for a in curve))
    return 0


def cmd_edit(args) -> int:
    from ..intervene import edit_model
    from ..intervene.edits import check_edit_destination
    from ..methods import Method

    check_edit_destination(args.out, args.model)
    out = Path(args.out).resolve()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {args.out} is a file; give a folder for the edited model.")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise ConfigError(f"--out {args.out} already exists and is not empty; pass --overwrite to "
                          "replace the model there, or choose a new folder.")
    if out.is_dir() and any(out.iterdir()) and not (out / "model.json").is_file():
        raise ConfigError(f"--out {args.out} holds files but no saved model (model.json); refusing "
                          "to write a model into it even with --overwrite. Choose a new folder.")
    model = Method.load(args.model)
    reweight = {}
    for item in args.reweight or []:
        concept, _, factor = item.rpartition("=")
        try:
            reweight[concept] = float(factor)
        except ValueError:
            raise UsageError(f"--reweight takes CONCEPT=FACTOR; got {item!r}.") from None
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    edited = edit_model(model, remove=args.remove or [], reweight=reweight, classes=classes,
                        note=args.note or "")
    edited.save(args.out)
    for e in edited.edit_log_[len(getattr(model, "edit_log_", [])):]:
        print(f"{e['concept']!r} x {e['factor']:g} for {', '.join(e['classes'])}")
    print(f"-> {args.out} (the original {args.model} is unchanged)")
    return 0


def _check_report_out(args) -> None:
    out = Path(args.out).resolve()
    inside = _model_folder_above(out.parent) or (out if (out / "model.json").is_file() else None)
    if inside is not None:
        raise ConfigError(f"--out {args.out} lies inside the saved model folder {inside}; writing "
                          "there could replace the model's files. Write the report elsewhere.")
    if out.is_dir():
        raise ConfigError(f"--out {args.out} is a folder; give a file name, e.g. report.html.")
    if out.exists() and not args.overwrite:
        raise ConfigError(f"--out {args.out} already exists; pass --overwrite to replace it, or "
                          "choose another file name.")


def _image_reader(data):
    index = {item: i for i, item in enumerate(data.ids)}

    def image(item):
        return data.images.decode(index[item], data.images.read(index[item]))

    return image


def _measure_grounding(args, model, test, data, dataset: str, backbone):
    """--annotations' grounding measures of `model` on `test` (None without annotations)."""
    from ..grounding import evaluate_grounding, matching_embedder, resolve_annotations

    annotations = resolve_annotations(args.annotations, dataset, data)
    if annotations is None:
        return None
    embed = matching_embedder(args.embed, backbone, _cache(args))
    return evaluate_grounding(model, test, annotations, embed, k=args.k, threshold=args.match_threshold,
                              class_ids=list(data.ids), class_labels=data.labels)


def _run_model_hint(model_path: Path) -> str:
    """' It belongs to the run <dir>: ...' when a bare model lies in a run folder's models/."""
    from ..runs.record import is_run_folder

    folder = model_path.resolve().parent.parent
    if model_path.resolve().parent.name == "models" and is_run_folder(folder):
        return (f" This model belongs to the run {folder}: `conceptlens report {folder} --method "
                f"{model_path.resolve().name}` reports it on that run's split, with its baselines.")
    return " For a run's model, `conceptlens report RUN_DIR` uses the run's split and baselines."


def cmd_report(args) -> int:
    from ..runs.record import is_run_folder

    if args.k < 1:
        raise UsageError(f"--k must be a positive integer (top concepts per class); got {args.k}.")
    if not -1 <= args.match_threshold <= 1:
        raise UsageError(f"--match-threshold is a cosine similarity in [-1, 1]; got {args.match_threshold}.")
    if is_run_folder(args.model):
        return _report_run(args, Path(args.model))
    if not (Path(args.model) / "model.json").is_file():
        raise ConfigError(f"{args.model} is neither a run folder (config.toml and results.json, as "
                          "`conceptlens run` writes) nor a saved model folder (model.json); give one of "
                          "them.")
    return _report_model(args)


def _report_model(args) -> int:
    """A bare saved model on the CLI's own split of --dataset (not any run's)."""
    from ..evaluation import evaluate
    from ..report import write_report

    if args.method is not None:
        raise ConfigError("--method picks one of a run folder's models; "
                          f"{args.model} is a single saved model. Leave --method out.")
    if args.dataset is None:
        raise ConfigError(f"{args.model} is a saved model, not a run folder: pass --dataset (the images to "
                          "report it on), or give the run folder it came from.")
    per_class = "50" if args.images_per_class is None else args.images_per_class
    seed = args.seed = 0 if args.seed is None else args.seed
    args.annotations = args.annotations or "auto"
    _check_report_out(args)  # before the images are encoded
    model, backbone = _load(args)
    data = _dataset(args, model)
    train = _split(args, backbone, data, "train", per_class)
    test = _split(args, backbone, data, "test", per_class)
    print(f"note: the split is the CLI's own ({len(test)} test images: --images-per-class {per_class} of "
          f"{args.dataset}'s test split, --seed {seed}), not any run's, so top-1 can differ from a run's "
          f"results.json.{_run_model_hint(Path(args.model))}")
    grounding = _measure_grounding(args, model, test, data, args.dataset, backbone)
    write_report(args.out, model, {model.name: evaluate(model, test)}, test, train, _image_reader(data),
                 title=f"conceptlens: {model.name} on {data.name} (the CLI's own split: {len(test)} test "
                       f"images, seed {seed})", grounding=grounding)
    print(f"-> {args.out}")
    return 0


def _pick_run_method(args, run, models: dict) -> dict:
    """--method, else what the run's report showed (results.json report_method), else the run's
    rule (stages.choose_report_method) on its recorded validation top-1 (a run folder from
    before val_top1 was recorded has none, though it had validation images). `run`: a RunFolder."""
    from ..runs.stages import NO_VALIDATION, choose_report_method, has_concepts

    results = run.result.results
    if args.method is not None:
        if args.method not in results:
            raise ConfigError(f"--method {args.method!r} is not one of the run's methods "
                              f"({', '.join(results)}).{closest(args.method, list(results))}")
        if args.method not in models:
            why = results[args.method].failed or "its model is not in the run folder's models/"
            raise ConfigError(f"--method {args.method!r}: the run has no model of it ({why}).")
        if not has_concepts(models[args.method]):
            names = [n for n, m in models.items() if has_concepts(m)]
            listed = ", ".join(names) or "none: the run fitted no concept bottleneck"
            raise ConfigError(f"--method {args.method!r} is not a concept bottleneck (no concepts to "
                              f"report); choose one of {listed}.")
        return {"method": args.method, "chosen_by": "--method"}
    recorded = run.result.report_method
    if recorded and recorded.get("method") in models:
        return recorded
    chosen = choose_report_method("auto", {n: r.to_dict() for n, r in results.items()}, models)
    if chosen is None:
        raise ConfigError("The run fitted no concept bottleneck, so there is no model to report; its results "
                          "are in results.md.")
    if chosen["chosen_by"] == NO_VALIDATION and run.result.sizes.get("val", 0):
        chosen["chosen_by"] = ("the first concept bottleneck in the config; the run recorded no "
                               "validation top-1")
    return chosen


def _report_run(args, folder: Path) -> int:
    """A run's model (--method, or the one its report shows) on the run's own test split, with the
    run's other methods as baselines (their numbers from results.json)."""
    from ..backbones import open_backbone
    from ..evaluation import evaluate
    from ..features import encode_dataset
    from ..features.encode import image_cache
    from ..methods.tags import get_tags
    from ..report import RunContext, write_report
    from ..runs.folder import RunFolder
    from ..runs.stages import dataset_options, report_title

    given = [flag for flag, v in (("--dataset", args.dataset), ("--images-per-class", args.images_per_class),
                                  ("--seed", args.seed)) if v is not None]
    if given:
        raise ConfigError(f"{folder} is a run folder: it is reported on the run's own data and test split, "
                          f"so {', '.join(given)} do(es) not apply; leave them out (or give a bare model "
                          "folder to report it on the CLI's own split).")
    _check_report_out(args)  # before the images are encoded
    run = RunFolder.load(folder)
    recorded = run.result
    results = recorded.results
    models = run.models()
    chosen = _pick_run_method(args, run, models)
    name = chosen["method"]
    model = models[name]
    data_cfg = run.data_config
    spec = _backbone_spec(args, model, run.backbone_spec)
    args.cache_dir = args.cache_dir or run.cache_dir  # the run's features
    backbone = open_backbone(spec, args.cache_dir)
    model.check_backbone(backbone, f"the backbone {spec!r} is not the run's; pass --backbone with the "
                                   "run's backbone")
    data = load_dataset(data_cfg.dataset, **dataset_options(data_cfg))
    if tuple(data.classes) != tuple(model.classes_):
        raise ConfigError(f"The run's dataset {data_cfg.dataset!r} now has classes {list(data.classes)[:5]}, "
                          f"the model {list(model.classes_)[:5]}: the data changed since the run.")
    parts, on_error = _run_split(folder, data, data_cfg, run.split_ids)
    cache = image_cache(backbone, _cache(args))
    train, test = (encode_dataset(backbone, data.subset(parts[s]), cache, batch_size=args.batch_size,
                                  workers=args.workers, on_error=on_error, progress=not args.no_progress)
                   for s in ("train", "test"))
    row = evaluate(model, test)
    was = results[name].top1
    print(f"{name} ({chosen['chosen_by']}): top-1 {100 * row['top1']:.1f}% on the run's {len(test)} test "
          f"images (the run recorded {'-' if was is None else f'{100 * was:.1f}%'}); baselines from "
          f"{folder / 'results.json'}: {', '.join(n for n in results if n != name) or 'none'}")
    if was is not None and abs(row["top1"] - was) > 1e-9:
        print(f"warning: top-1 on the run's test split is {row['top1']:.4f}, the run recorded {was:.4f}: the "
              "features differ from the run's (another backbone version, or changed images).",
              file=sys.stderr)
    shown = {n: (r.to_dict() | row if n == name else r) for n, r in results.items()}
    if args.annotations is not None:  # measured now; otherwise the run's own measures
        grounding = _measure_grounding(args, model, test, data, data_cfg.dataset, backbone)
    else:
        grounding = ((recorded.grounding or {}).get("methods") or {}).get(name)
    r = results[name]
    faithfulness = ({"area_top": r.get("deletion_area_top"), "area_random": r.get("deletion_area_random")}
                    if r.get("deletion_area_top") is not None else None)
    discovered = {n: m for n, m in models.items() if get_tags(m).discovers_concepts}
    context = RunContext(faithfulness=faithfulness, grounding=grounding, discovered=discovered,
                         concept_labels=recorded.concept_labels, backbone=backbone, chosen=chosen,
                         warnings=recorded.concept_report.get("warnings"))
    write_report(args.out, model, shown, test, train, _image_reader(data),
                 title=report_title(name, data.name, chosen) + f", run {folder.resolve().name}", run=context)
    print(f"-> {args.out}")
    return 0


def _run_split(folder: Path, data, data_cfg, ids: dict | None) -> tuple[dict, str]:
    """The run's train and test indices into `data`: from splits.json's ids (`ids`; every one must
    still be there; encoded with on_error "fail", as the run read them all), or, for a run folder
    written before splits.json (`ids` None), recomputed from [data] (its seed, fractions and sizes)."""
    if ids is None:
        print(f"note: {folder} has no splits.json (written by an older conceptlens); the split is "
              "recomputed from its config.toml [data] (same seed, fractions and sizes).", file=sys.stderr)
        return take_splits(data, data_cfg), data_cfg.on_error
    index = {item: i for i, item in enumerate(data.ids)}
    out = {}
    for split in ("train", "test"):
        missing = [i for i in ids[split] if i not in index]
        if missing:
            raise DataError(f"{len(missing)} of the run's {split} images are no longer in "
                            f"{data_cfg.dataset!r} (e.g. {missing[0]!r}): the data changed since the run, "
                            "so its split cannot be reproduced. Rerun the run on the data as it is now.")
        out[split] = np.asarray([index[i] for i in ids[split]], dtype=np.int64)
    return out, "fail"


def add_commands(sub) -> None:
    def common(p, data=True, model_help="a saved model folder", data_required=True):
        p.add_argument("model", help=model_help)
        if data:
            p.add_argument("--dataset", required=data_required)
            # report: None = not given (a run folder refuses them; a bare model gets 50 and 0)
            p.add_argument("--images-per-class", default="50" if data_required else None)
            p.add_argument("--seed", type=arg_types.seed, default=0 if data_required else None)
        add_encode_options(p)
        # None: the backbone the model records (methods' backbone_spec_), else offline
        p.set_defaults(backbone=None)
        p._option_string_actions["--backbone"].help = (
            "offline[:opts] | hf:<id or folder> | open_clip:<arch>:<tag> | precomputed:<file> (default: "
            "the backbone the model records, else offline)")

    p = sub.add_parser("explain", help="why a saved model classifies images (or videos: a motif model, "
                       "top concepts per window) as it does")
    common(p, data=False, model_help="a saved model folder, or a run folder (its report's model)")
    p.add_argument("images", nargs="+",
                   help=f"image files, or video files ({', '.join(EXPLAIN_VIDEO_SUFFIXES)})")
    p.add_argument("--target", help="explain this class's score (default: the prediction)")
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--heatmap", metavar="OUT.html",
                   help="also write heat maps of where each image's top concepts look (integrated "
                        "gradients through the backbone; needs a differentiable backbone and captum)")
    p.add_argument("--heatmap-steps", type=int, default=32, help="integrated-gradient steps (default 32)")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("intervene", help="accuracy after test-time concept interventions")
    common(p)
    p.add_argument("--concepts", required=True, help="the concept set the model was built on")
    p.add_argument("--policy", action="append", choices=["random", "uncertain", "contribution"])
    p.add_argument("--strategy", default="truth", choices=["truth", "mean", "clamp"])
    p.add_argument("--steps", type=int, default=10)
    p.set_defaults(func=cmd_intervene, policy=None)

    p = sub.add_parser("edit", help="remove or reweight concepts; writes a new model")
    p.add_argument("model")
    p.add_argument("--out", required=True)
    p.add_argument("--remove", action="append")
    p.add_argument("--reweight", action="append", help="CONCEPT=FACTOR")
    p.add_argument("--classes", help="comma-separated; default: every class")
    p.add_argument("--note")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a saved model already at --out (never the input model)")
    p.set_defaults(func=cmd_edit)

    p = sub.add_parser("report", help="write the HTML report of a run's model (RUN_DIR: the run's split "
                       "and baselines) or of a saved model (MODEL --dataset: the CLI's own split)")
    common(p, model_help="a run folder (as `conceptlens run` writes: its model is reported on the run's "
                         "own test split, with the run's other methods as baselines) or a saved model "
                         "folder (needs --dataset; the CLI's own split)", data_required=False)
    p.add_argument("--method", help="RUN_DIR only: which of the run's methods to report (default: the "
                                    "one the run's report.html shows, [report] method)")
    p.add_argument("--out", required=True, help="the .html file to write (not inside a model folder)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--annotations",
                   help="concept annotations for the grounding section: auto (built-in for the dataset; "
                        "the default for a saved model), none, fashion-mnist, or a class-level / per-image "
                        "CSV (a run folder: default the run's own grounding measures)")
    p.add_argument("--k", type=int, default=5, help="top concepts per class for explanation precision@k")
    add_matching_options(p)
    # a run folder's backbone is in its config.toml unless --backbone is given
    p.set_defaults(func=cmd_report, backbone=None)
