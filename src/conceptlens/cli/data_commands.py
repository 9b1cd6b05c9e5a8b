"""CLI commands for data, features and the demo."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .._io import save_tensors
from ..data import load_dataset, load_fashion_mnist, split_indices
from ..data.images import DEFAULT_MAX_PIXELS
from . import arg_types

# Imports of the packages that load torch or scikit-learn (backbones, features, methods, runs,
# evaluation, grounding, explain, report, demo) stay inside the commands that need them, so
# that `conceptlens --help` and argument errors answer at once.

OVERWRITE_HELP = ("replace an existing run folder at --output-dir (refused otherwise, so two runs "
                  "never mix); the old one is removed only once the new one is complete")


def add_encode_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", default="offline",
                   help="offline[:opts] | hf:<id or folder> | open_clip:<arch>:<tag> | "
                        "precomputed:<file> (default: offline)")
    p.add_argument("--cache-dir", help="feature cache root (default: $CONCEPTLENS_CACHE or "
                                       "~/.cache/conceptlens)")
    add_run_options(p)


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    p.add_argument("--workers", type=int, default=2, help="image decoding threads")
    p.add_argument("--no-progress", action="store_true")


def add_ray_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("distributed encoding (needs pip install 'conceptlens[ray]')")
    g.add_argument("--ray", metavar="auto|local|ADDRESS",
                   help="encode on a Ray cluster: 'auto' (the one `ray start` began here, or "
                        "$RAY_ADDRESS), 'local' (a cluster on this machine for this run), or "
                        "HOST:6379. --cache-dir and the images must be on a filesystem every node "
                        "sees at the same path")
    g.add_argument("--ray-workers", type=int, default=2, metavar="N",
                   help="Ray actors, each with its own copy of the backbone (default 2)")
    g.add_argument("--ray-gpus-per-worker", type=arg_types.finite_float, default=0, metavar="G",
                   help="GPUs per actor (default 0: CPU actors; 0.5 puts two actors on a GPU)")
    g.add_argument("--ray-cpus-per-worker", type=arg_types.finite_float, default=1, metavar="C",
                   help="CPUs per actor: decoding threads and torch threads (default 1; give GPU "
                        "actors several, decoding feeds the GPU)")


def cmd_demo(args) -> int:
    from ..demo import demo_config, run_demo
    from ..runs.record import check_output_dir

    check_output_dir(args.output_dir, args.overwrite, args.cache_dir)  # before any download
    if args.download:
        load_fashion_mnist(args.data_dir, download=True)
    cfg = demo_config(args.train_per_class, args.val_per_class, args.test_per_class, args.seed,
                      args.backbone, args.cache_dir, args.data_dir, args.output_dir,
                      not args.no_progress, batch_size=args.batch_size, workers=args.workers)
    print_run(run_demo(cfg, overwrite=args.overwrite))
    return 0


def cmd_run(args) -> int:
    from ..report import run_report
    from ..runs import load_config, run_experiment

    cfg = load_config(args.config)
    if args.output_dir:
        cfg.output_dir = args.output_dir
    if args.cache_dir:
        cfg.cache_dir = args.cache_dir
    if args.allow_non_ascii:
        cfg.data.allow_non_ascii = True
    if args.on_error:
        cfg.data.on_error = args.on_error
    if args.max_pixels is not None:
        cfg.data.max_pixels = args.max_pixels
    cfg.progress = not args.no_progress
    cfg.batch_size, cfg.workers = args.batch_size, args.workers
    # checks the overridden config again; report.html is written by the report layer's run_report
    print_run(run_experiment(cfg, overwrite=args.overwrite, report=run_report))
    return 0


def print_run(out: dict) -> None:
    print(f"backbone {out['backbone_id']}")
    print("images   " + ", ".join(f"{k} {v}" for k, v in out["sizes"].items()))
    for key, text in out["concept_report"].get("concepts", {}).items():
        if key != "warning":  # warnings are printed below, and only when there is one
            print(f"concepts {key}: {text}")
    for text in out["concept_report"].get("warnings", []):
        print("warning  " + text.replace("\n", "\n         "))
    print()
    print(out["table"])
    if out.get("fewshot_table"):
        what = "top-1 (%) and concept grounding" if out.get("fewshot_grounding") else "top-1 (%)"
        print(f"\nfew-shot {what}:\n" + out["fewshot_table"])
    if out.get("confounded"):
        print("\nconfounded shift (top-1 %, in-distribution vs reversed nuisance):\n"
              + out["confounded"]["table"])
    if out.get("report_method"):
        shown = out["report_method"]
        print(f"\nreport   {shown['method']} ({shown['chosen_by']})")
        for name, why in (shown.get("passed_over") or {}).items():
            print(f"         passed over: {name}: {why}")
    print("\ntime     " + ", ".join(f"{k} {v:.1f}s" for k, v in out["seconds"].items()))
    if out.get("stages"):  # per stage: wall time and the process's peak RSS after it (#23)
        print("stages   " + ", ".join(
            f"{k} {v['seconds']:.1f}s" + ("" if v.get("peak_rss_mb") is None else f" ({v['peak_rss_mb']:.0f} MiB)")
            for k, v in out["stages"].items()))
    if "output_dir" in out:  # only what record_run wrote (runs/record.py written_files)
        print(f"wrote    {out['output_dir']}/ ({', '.join(out.get('written') or [])})")


def cmd_encode(args) -> int:
    import numpy as np

    from ..features import encode_dataset
    from ..runs.experiment import open_backbone

    data = load_dataset(args.dataset, allow_non_ascii=args.allow_non_ascii,
                        max_pixels=args.max_pixels or None)
    if args.split:
        if data.split is None:
            data = data.subset(split_indices(data, seed=args.seed)[args.split])
        else:
            data = data.subset([i for i, s in enumerate(data.split) if s == args.split])
    if args.limit:
        data = data.subset(range(min(args.limit, len(data))))
    backbone = open_backbone(args.backbone, args.cache_dir)
    cache = None if args.cache_dir is None else Path(args.cache_dir) / "features"
    if args.ray:  # the same cache shards, written by a pool of Ray actors
        from ..features.ray_encode import encode_dataset_ray

        bundle = encode_dataset_ray(args.backbone, data, cache, address=args.ray,
                                    workers=args.ray_workers, batch_size=args.batch_size,
                                    num_gpus=args.ray_gpus_per_worker,
                                    cpus_per_worker=args.ray_cpus_per_worker,
                                    on_error=args.on_error, progress=not args.no_progress,
                                    text_cache_dir=args.cache_dir, backbone=backbone)
    else:
        bundle = encode_dataset(backbone, data, cache, batch_size=args.batch_size,
                                workers=args.workers, on_error=args.on_error,
                                progress=not args.no_progress)
    tensors = {"embedding": bundle.embedding, "labels": bundle.labels.astype(np.int64)}
    if bundle.features is not None:
        tensors["features"] = bundle.features
    if bundle.embedding_norm is not None:  # raw norms, for LaBo's reference similarity
        tensors["embedding_norm"] = bundle.embedding_norm
    meta = {"ids": json.dumps(bundle.ids), "classes": json.dumps(list(bundle.classes)),
            "backbone": bundle.backbone_id, "skipped": json.dumps(bundle.skipped)}
    save_tensors(args.out, tensors, meta)  # with a checksum that `precomputed:` verifies
    print(f"encoded {len(bundle)} images ({len(bundle.skipped)} skipped) with {bundle.backbone_id}"
          f" -> {args.out}")
    return 0


def cmd_backbones(args) -> int:
    from ..backbones import BACKBONES

    for name in BACKBONES.names():
        print(name)
    return 0


def cmd_dataset(args) -> int:
    data = load_dataset(args.dataset)
    print(f"{data.name}: {len(data)} images, {len(data.classes)} classes")
    for name, count in data.class_counts().items():
        print(f"  {count:7d}  {name}")
    for name, idx in split_indices(data, seed=args.seed).items():
        print(f"split {name}: {len(idx)}")
    return 0


def add_commands(sub) -> None:

    p = sub.add_parser("demo", help="Fashion-MNIST end to end on the offline default")
    add_encode_options(p)
    p.add_argument("--train-per-class", type=int, default=300)
    p.add_argument("--val-per-class", type=int, default=50)
    p.add_argument("--test-per-class", type=int, default=200, help="0 = the full test set")
    p.add_argument("--seed", type=arg_types.seed, default=0)
    p.add_argument("--data-dir", help="folder with the Fashion-MNIST IDX files")
    p.add_argument("--download", action="store_true",
                   help="download Fashion-MNIST (checksums verified) if it is not found")
    p.add_argument("--output-dir", default="runs/demo")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("run", help="run an experiment described by a TOML config")
    p.add_argument("config")
    p.add_argument("--output-dir", help="override [output] dir")
    p.add_argument("--cache-dir", help="override [output] cache_dir")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.add_argument("--on-error", choices=["fail", "skip"],
                   help="override [data] on_error: what to do with a corrupt image")
    p.add_argument("--allow-non-ascii", action="store_true",
                   help="set [data] allow_non_ascii: accept non-ASCII class names")
    p.add_argument("--max-pixels", type=int, help="override [data] max_pixels: refuse larger images "
                                                   "as corrupt (0 = no cap)")
    add_run_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("encode", help="encode a dataset's images to a safetensors file")
    p.add_argument("dataset", help="'fashion-mnist', an image folder, or a .csv/.jsonl manifest")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--split", choices=["train", "val", "test"])
    p.add_argument("--limit", type=int, help="encode only the first N images")
    p.add_argument("--seed", type=arg_types.seed, default=0)
    p.add_argument("--on-error", choices=["fail", "skip"], default="fail",
                   help="what to do with a corrupt image (default: fail, naming it)")
    p.add_argument("--allow-non-ascii", action="store_true")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help=f"refuse larger images as corrupt (default {DEFAULT_MAX_PIXELS:,}; 0 = no cap)")
    add_encode_options(p)
    add_ray_options(p)
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("backbones", help="list the registered backbones")
    p.set_defaults(func=cmd_backbones)

    p = sub.add_parser("dataset", help="show a dataset's classes and splits")
    p.add_argument("dataset")
    p.add_argument("--seed", type=arg_types.seed, default=0)
    p.set_defaults(func=cmd_dataset)


def add_matching_options(p) -> None:
    """How free-text concepts are matched to annotated attributes (concepts evaluate, report)."""
    p.add_argument("--match-threshold", type=arg_types.finite_float, default=0.7,
                   help="cosine above which a concept matches an attribute by embedding (default 0.7)")
    p.add_argument("--embed", default="sentence", choices=["sentence", "backbone", "none"],
                   help="text encoder for matching: the offline sentence encoder (default), the "
                        "backbone's text side, or none (normalised text only)")
