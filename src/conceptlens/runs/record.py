"""What an output folder records, so a result can be reproduced exactly.

A run folder is written whole or not at all: everything goes into a hidden sibling folder
that is renamed into place once complete, so a crash leaves no half run, and a rerun never
mixes its results with an older run's models. An existing non-empty folder is replaced only
with `overwrite`, and only when it looks like a run folder (it holds config.toml or
results.json), so a mistyped --output-dir cannot delete unrelated files.

`splits.json` lists the item ids of the run's train, val and test images (those encoded, in
the order the methods saw them), so `conceptlens report RUN_DIR` scores a run's model on
exactly the run's test images, whatever the CLI's own split would be (`read_split_ids`).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import uuid
from importlib import metadata
from pathlib import Path

from .._io import atomic_write, write_json, write_text
from ..errors import ConfigError, DataError
from .config import RunConfig, to_toml
from .results import RunResult

PACKAGES = ("conceptlens", "torch", "numpy", "scipy", "scikit-learn", "safetensors",
            "transformers", "sentence-transformers", "efficientnet-lite-pytorch", "wn", "onnxruntime")
RUN_MARKERS = ("config.toml", "results.json")
SPLITS_FILE = "splits.json"
SPLIT_NAMES = ("train", "val", "test")


def splits_record(split_ids: dict, dataset: str) -> str:
    """splits.json's text: {"dataset": <[data] dataset>, "train" | "val" | "test": [item ids]}."""
    record = {"dataset": dataset} | {s: [str(i) for i in split_ids[s]] for s in SPLIT_NAMES}
    return json.dumps(record, indent=1, ensure_ascii=False) + "\n"


def read_split_ids(folder: str | Path) -> dict[str, list[str]] | None:
    """The item ids of each split recorded in a run folder's splits.json; None for a run folder
    written before splits.json existed. A damaged file is a DataError naming it."""
    path = Path(folder) / SPLITS_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path} cannot be read ({e}); it lists the run's split. Rerun the run, or "
                        "delete the file to have the split recomputed from config.toml.") from e
    ok = isinstance(record, dict) and all(
        isinstance(record.get(s), list) and all(isinstance(i, str) for i in record[s]) for s in SPLIT_NAMES)
    if not ok:
        raise DataError(f"{path} must hold lists of item ids under {', '.join(SPLIT_NAMES)}; it does not. "
                        "Rerun the run, or delete the file to have the split recomputed from config.toml.")
    return {s: record[s] for s in SPLIT_NAMES}


def is_run_folder(path: str | Path) -> bool:
    """A folder that record_run wrote: config.toml and results.json (models/ where any was fitted)."""
    folder = Path(path)
    return folder.is_dir() and all((folder / m).is_file() for m in RUN_MARKERS)


def environment() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"python": sys.version.split()[0], "platform": platform.platform(),
            "packages": versions, "git_commit": commit}


def check_writable_dir(path: str | Path, what: str, renamed: bool = False) -> None:
    """Refuse (ConfigError) a folder that cannot be created or written: below a file, read-only,
    on a read-only file system. Checked by writing a probe file into `path` or its nearest
    existing ancestor (with `renamed`, a folder put in place by renaming a sibling: from its
    parent), so it holds for root and for mounts alike, before any work is done."""
    folder = Path(path).expanduser().absolute()
    existing = folder.parent if renamed else folder
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():  # a dangling link: mkdir would fail on it
            raise ConfigError(f"{what} {path} cannot be created: {existing} is a link to a missing "
                              f"{os.readlink(existing)}; choose another {what}.")
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{what} {path} cannot be created: {existing} is a file, not a folder; choose "
                          f"another {what}.")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".conceptlens-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(f"{what} {path} is not writable ({existing}: {e.strerror or e}); choose a folder "
                          "you can write to, or change its permissions.") from None


def check_output_dir(output_dir: str | Path, overwrite: bool = False,
                     cache_dir: str | Path | None = None) -> Path:
    """Refuse an output folder that a run cannot own or write (and a cache folder it cannot
    write); called before any work and again just before the run folder is renamed into
    place. Returns the resolved folder."""
    folder = Path(output_dir).expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"Output folder {output_dir} is a file; choose another --output-dir.")
    check_writable_dir(output_dir, "Output folder", renamed=True)
    if cache_dir is not None:
        check_writable_dir(cache_dir, "Cache folder")
    if cache_dir is not None:
        cache = Path(cache_dir).expanduser().resolve()
        if cache == folder or folder in cache.parents:
            raise ConfigError(f"The cache folder {cache_dir} lies inside the output folder {output_dir}, "
                              "which a rerun replaces; put the cache elsewhere.")
    if folder in (Path(folder.anchor), Path.home().resolve(), Path.cwd().resolve()):
        raise ConfigError(f"Output folder {output_dir} is {folder}; a run needs a folder of its own, "
                          "e.g. --output-dir runs/my-run.")
    if folder.is_dir() and any(folder.iterdir()):
        names = sorted(p.name for p in folder.iterdir())
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        if not overwrite:
            raise ConfigError(f"Output folder {output_dir} already exists and is not empty ({shown}); "
                              "writing into it would mix two runs. Pass --overwrite (overwrite=True) "
                              "to replace it, or choose another --output-dir.")
        if not any((folder / m).is_file() for m in RUN_MARKERS):
            raise ConfigError(f"Output folder {output_dir} is not a conceptlens run folder (no "
                              f"{' or '.join(RUN_MARKERS)}; it holds {shown}); refusing to replace it "
                              "even with --overwrite. Choose another --output-dir.")
    return folder


def _typed(out: RunResult | dict) -> RunResult:
    return out if isinstance(out, RunResult) else RunResult.from_dict(out)


def record_run(cfg: RunConfig, out: RunResult, concepts, models: dict,
               files: dict[str, str | bytes] | None = None, overwrite: bool = False) -> Path:
    """Write the run folder (config, environment, concepts, results, models and `files`,
    e.g. {"report.html": html}; bytes are written as they are, e.g. the demo's example images) to a
    temporary sibling, then rename it to cfg.output_dir;
    out.split_ids ({split: item ids}, when given) becomes splits.json. `out` is the run's
    RunResult (a dict in its to_dict() form, with "table" and "split_ids", is read as one).
    The names written (written_files) are set as `out`'s written."""
    result = _typed(out)
    final = check_output_dir(cfg.output_dir, overwrite, cfg.cache_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        write_text(tmp / "config.toml", to_toml(cfg))
        write_json(tmp / "environment.json", environment() | {
            "backbone_id": result.backbone_id, "preprocess": result.preprocess,
            "backbone_spec": result.backbone_spec})
        if concepts is not None:
            concepts.save(tmp / "concepts.json")
        write_json(tmp / "results.json", result.to_dict())
        if result.split_ids:
            write_text(tmp / SPLITS_FILE, splits_record(result.split_ids, cfg.data.dataset))
        write_text(tmp / "results.md", results_markdown(result))
        if result.concept_matches:
            from ..grounding.evaluate import matches_csv

            write_text(tmp / "concept_matches.csv", matches_csv(result.concept_matches))
        for name, content in (files or {}).items():  # a name may hold folders ("images/a/0.png")
            if isinstance(content, bytes):
                atomic_write(tmp / name, lambda p, data=content: p.write_bytes(data))
            else:
                write_text(tmp / name, content)
        for name, model in models.items():
            model.save(tmp / "models" / name)
        result.written = written_files(tmp)  # what the folder holds, for the CLI's "wrote" line
        if isinstance(out, dict):
            out["written"] = result.written
        check_output_dir(cfg.output_dir, overwrite, cfg.cache_dir)  # it may have appeared meanwhile
        _move_into_place(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Path(cfg.output_dir)


def written_files(folder: Path) -> list[str]:
    """The names at the top of a run folder, sorted, folders with a slash ("models/"): what a run
    wrote, so a discovery-only run (no concepts.json) or one without a report lists neither."""
    return sorted(p.name + ("/" if p.is_dir() else "") for p in Path(folder).iterdir())


def results_markdown(out: RunResult) -> str:
    """results.md: the results table, how grounding was measured, the few-shot table and the
    confounded-shift table, whichever the run has."""
    result = _typed(out)
    text = "## Results\n\n" + result.table + "\n"
    g = result.grounding
    if g:
        how = ("normalised text only" if g["embed"] == "none" else
               f"normalised text, then {g['embed']} text embeddings at cosine >= {g['match_threshold']:g}")
        listed = " (concept_matches.csv)" if result.concept_matches else ""
        text += (f"\nConcept AUROC: mean over the concepts matched to an annotated attribute (n: how many "
                 f"have both present and absent test images); precision@{g['k']}: share of each class's "
                 f"top-{g['k']} positive-weight concepts annotated true of it (negative side in "
                 f"results.json). Annotations: {g['annotations']} ({g['level']} level, {g['n_attributes']} "
                 f"attributes); matching: {how}{listed}.\n")
    if result.fewshot_table:
        title = ("Few-shot (top-1 %, concept grounding)" if result.fewshot_grounding
                 else "Few-shot (top-1 %)")
        text += f"\n## {title}\n\n" + result.fewshot_table + "\n"
    if result.confounded:
        text += "\n## Confounded shift (top-1 %)\n\n" + result.confounded["table"] + "\n"
    return text


def _move_into_place(tmp: Path, final: Path) -> None:
    if not final.exists():
        os.rename(tmp, final)
        return
    # move the old run aside first, so the folder is never half old, half new
    old = final.parent / f".{final.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    os.rename(final, old)
    try:
        os.rename(tmp, final)
    except BaseException:
        os.rename(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)
