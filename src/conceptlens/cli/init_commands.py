"""`conceptlens init FOLDER`: a starter run config for your own images.

It reads the folder (one subfolder per class) or manifest, and writes a commented config with
the classes found, per-class sizes that fit the smallest class of each split, and concept
sources that suit the class names: WordNet when it knows the names and its concepts tell the
classes apart, otherwise the `vocabulary` source (global concepts that do not depend on
class names), with a note on the discovery methods. The config is checked by `load_config`
before it is written, and an existing file is only replaced with --overwrite.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .._io import write_text
from ..concepts.sources import get_source
from ..data import load_dataset, split_indices
from ..errors import ConfigError, DataError

# Imports of the packages that load torch or scikit-learn (backbones, features, methods, runs,
# evaluation, grounding, explain, report, demo) stay inside the commands that need them, so
# that `conceptlens --help` and argument errors answer at once.

# a run's defaults ([data] in runs/config.py): the starter config never asks for more
DEFAULT_SIZES = {"train": 300, "val": 50, "test": 200}


def fitting_sizes(dataset, seed: int = 0) -> tuple[dict[str, int], dict[str, int]]:
    """({split: per-class size}, {split: smallest class count}) that the default split of
    `dataset` can give: the run default, or the smallest class's count when that is less."""
    splits = split_indices(dataset, seed=seed)
    sizes, smallest = {}, {}
    for name, idx in splits.items():
        counts = np.bincount(dataset.labels[idx], minlength=len(dataset.classes))
        smallest[name] = int(counts.min()) if len(counts) else 0
        sizes[name] = min(DEFAULT_SIZES[name], smallest[name])
    return sizes, smallest


def suggest_sources(classes: list[str]) -> tuple[list[str], str]:
    """(sources, why): wordnet when it resolves at least half the class names and its concepts
    separate the classes, else the vocabulary source."""
    from ..concepts.pipeline import separability_warning

    result = get_source("wordnet").generate(classes)
    resolved = len(classes) - len(result.unresolved)
    if resolved * 2 < len(classes):
        return ["vocabulary"], (f"WordNet knows {resolved} of {len(classes)} class names, so concepts come "
                                "from a word vocabulary that does not depend on them")
    if separability_warning(result.concepts, classes):
        return ["vocabulary"], ("WordNet's concepts for these class names do not tell all the classes "
                                "apart, so concepts come from a word vocabulary that does not depend on them")
    return ["wordnet"], f"WordNet knows {resolved} of {len(classes)} class names"


WORD_ASSOCIATION_NOTE = (
    "# NOTE: the 'vocabulary' source links no concept to any class: its concepts are word\n"
    "# associations, not evidence, and a model's top concepts are no reasons (the run and the\n"
    "# report say so). For explanations a person can trust, give concepts written for your\n"
    "# classes ([concepts.sources.llm] or a file of class,concept rows) or concept annotations.\n")


def methods_block(linked: bool, train_per_class: int = 300) -> str:
    """[methods]: every concept head class-consistent (methods/class_consistent.py) when the concepts
    are linked to classes; without links that option cannot apply, and the note says why. KnoBo's
    grounding holds out int(0.1 x a side's images) per side and needs min_val of them (10, the
    reference's, needs 100 training images of a class): lowered to what the data allow."""
    if not linked:
        return (WORD_ASSOCIATION_NOTE + "[methods.zero_shot]\n[methods.linear_probe]\n[methods.labo]\n"
                "[methods.label_free]\n")
    return ("# class_consistent: a class weighs only concepts its source links to it, with weights >= 0, and\n"
            "# only concepts whose activation is evidence of their classes on validation images\n"
            "[methods.zero_shot]\n[methods.linear_probe]\n"
            "[methods.labo]\nclass_consistent = true\n"
            "[methods.label_free]\nclass_consistent = true\n"
            "# KnoBo grounds each concept on the backbone's layer features: accurate where the backbone's\n"
            "# text side cannot score concepts (the offline default)\n"
            "[methods.knobo]\nclass_consistent = true\non = \"auto\"\n"
            + (f"min_val = {max(1, train_per_class // 10)}             # the reference's 10 needs 100 "
               "training images per class\n" if train_per_class < 100 else ""))


def starter_config(spec: str, classes: list[str], sizes: dict[str, int], sources: list[str], why: str,
                   output_dir: str) -> str:
    """The commented TOML text (see the module docstring)."""
    def q(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    shown = ", ".join(classes[:12]) + (f", ... ({len(classes)} in all)" if len(classes) > 12 else "")
    global_line = ('global_budget = "auto"          # global concepts kept: per_class x classes\n'
                   if "vocabulary" in sources else "")
    methods = methods_block("vocabulary" not in sources, sizes["train"])
    return f"""# conceptlens run config written by `conceptlens init` for {spec}
# classes ({len(classes)}): {shown}
# Run it with:  conceptlens run <this file>
# Every key has a default; see `runs/config.py` for all of them.

[data]
dataset = {q(spec)}
# images per class of each split (0 = every image of the split); these fit the smallest class
train_per_class = {sizes['train']}
val_per_class = {sizes['val']}
test_per_class = {sizes['test']}
# how images without a given split are divided, per class (they must sum to 1); a manifest's
# `split` column (train/val/test) is kept unless use_given_split = false
train_fraction = 0.7
val_fraction = 0.1
test_fraction = 0.2
seed = 0
on_error = "fail"                # or "skip": leave out unreadable images

[backbone]
spec = "offline"                 # or hf:<model id>, open_clip:<arch>:<tag>, precomputed:<file>

[concepts]
# {why}.
# Other sources: "imagenet" (ImageNet descriptions, matched through WordNet), "llm" (any
# OpenAI-compatible endpoint), "file" (your own list). Give a source options in its own table:
#   [concepts.sources.llm]       model = "gpt-4o-mini", base_url = "http://localhost:8000/v1",
#                                prompts = ["labo"]
#   [concepts.sources.file]      path = "my_concepts.txt"
#   [concepts.sources.wordnet]   relations = ["gloss", "hypernym", "part"]
# Methods that find their own concepts in the images need no source: add [methods.dn_cbm]
# or [methods.v2c] (see [discovery] in runs/config.py).
sources = [{", ".join(map(q, sources))}]
per_class = 20                   # concepts selected per class
{global_line}
{methods}
[output]
dir = {q(output_dir)}
"""


def cmd_init(args) -> int:
    from ..runs.config import load_config

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise ConfigError(f"{out} already exists; pass --overwrite to replace it, or choose another --out.")
    path = Path(args.folder)
    from ..data.catalog import parse_spec  # cifar10:DIR, cub:DIR, imagenet:DIR, hf:... (#25)

    if not path.exists() and parse_spec(args.folder) is None:
        raise DataError(f"{args.folder}: no such folder or manifest. Give a folder with one subfolder of "
                        "images per class, or a .csv/.jsonl manifest (path,label[,split]).")
    data = load_dataset(args.folder)
    sizes, smallest = fitting_sizes(data)
    empty = [s for s, n in smallest.items() if n == 0 and s != "train"]
    if empty:
        raise DataError(f"{args.folder}: some class has no image in the {' and '.join(empty)} split(s) "
                        f"(smallest class per split: {smallest}). Add images, or give the manifest a split "
                        "column.")
    sources, why = suggest_sources(list(data.classes))
    text = starter_config(args.folder, list(data.classes), sizes, sources, why, args.output_dir)
    write_text(out, text)
    try:
        load_config(out)  # what we wrote must be a config a run accepts
    except ConfigError:
        out.unlink()
        raise
    print(f"{len(data.classes)} classes, {len(data)} images; per class: train {sizes['train']}, "
          f"val {sizes['val']}, test {sizes['test']}; sources {sources} ({why}).")
    if "vocabulary" in sources:
        from ..concepts.pipeline import WORD_ASSOCIATIONS

        print("warning: " + WORD_ASSOCIATIONS.format(n="run's", sources="the vocabulary source"))
    print(f"-> {out}\nNext: conceptlens run {out}")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser(
        "init", help="write a starter run config for a folder of images (or a manifest)",
        description="Read FOLDER (one subfolder of images per class, or a .csv/.jsonl manifest) and "
                    "write a commented run config: the classes, per-class sizes that fit the data, and "
                    "concept sources that suit the class names.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("folder", help="a folder with one subfolder per class, or a manifest")
    p.add_argument("--out", default="conceptlens.toml", help="the config file to write")
    p.add_argument("--output-dir", default="runs/latest", help="where the run will write its results")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_init)
