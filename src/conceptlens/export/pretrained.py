"""`save_pretrained(model, folder)` / `from_pretrained(folder)`: a saved model folder (the package's
own format, methods/base.py: `model.json` + `weights.safetensors`, no pickle) with a model card
(`README.md`: classes, concepts, the backbone's spec, metrics and grounding measures when known),
`card.json` (what the card says, for programs) and, optionally, `model.onnx` (the whole model).

The folder is written to a temporary sibling and renamed into place, so a reader never sees half a
folder; an existing folder is replaced only with overwrite=True (and only once the new one is
complete). `from_pretrained` is `Method.load`: every check of a saved model applies.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from .._io import check_edit_destination, write_json, write_text
from .._version import __version__
from ..errors import ConfigError, DataError
from ..methods import Method
from ..methods.protocols import Exportable

__all__ = ["CARD", "CARD_DATA", "from_pretrained", "model_card", "read_card", "save_pretrained"]

CARD = "README.md"
CARD_DATA = "card.json"
ONNX_FILE = "model.onnx"
TOP = 5  # concepts per class in the card's table


def _scalars(d: dict | None, prefix: str = "") -> dict[str, float | str]:
    """A flat {name: number or text} of a (nested) metrics dict; lists and None are left out."""
    out: dict[str, float | str] = {}
    for k, v in (d or {}).items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_scalars(v, f"{name}."))
        elif isinstance(v, bool):
            out[name] = str(v).lower()
        elif isinstance(v, int | float | np.integer | np.floating):
            if math.isfinite(float(v)):
                out[name] = float(v)
        elif isinstance(v, str):
            out[name] = v
    return out


def _card_data(model, metrics, grounding, backbone, title) -> dict:
    W = np.asarray(model.class_weights_, dtype=np.float64)
    top = {}
    for c, cls in enumerate(model.classes_):
        order = [j for j in np.argsort(-np.abs(W[c]), kind="stable")[:TOP] if W[c, j] != 0]
        top[cls] = [[model.concepts_[j], round(float(W[c, j]), 4)] for j in order]
    spec = getattr(model, "backbone_spec_", "") or getattr(backbone, "spec", "")
    return {
        "title": title or f"conceptlens {model.name} model", "method": model.name,
        "conceptlens": __version__, "classes": list(model.classes_), "concepts": list(model.concepts_),
        "nec": float(model.nec_), "input": model.feature_key_,
        "backbone": {"spec": spec, "id": model.backbone_id_,
                     "preprocess": getattr(model, "preprocess_id_", "")},
        "exportable": isinstance(model, Exportable), "top_concepts": top,
        "metrics": _scalars(metrics), "grounding": _scalars(grounding),
    }


def _table(rows: dict) -> str:
    if not rows:
        return ""
    lines = ["| measure | value |", "| --- | --- |"]
    for k, v in rows.items():
        lines.append(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |")
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def model_card(data: dict, onnx: bool = False) -> str:
    """The README.md of a save_pretrained folder, from its card data (`_card_data`)."""
    bb = data["backbone"]
    tags = ["conceptlens", "concept-bottleneck-model", "interpretable-ml", "image-classification",
            f"conceptlens-{data['method']}"]
    front = "\n".join(["---", "library_name: conceptlens", "pipeline_tag: image-classification", "tags:",
                       *[f"- {t}" for t in tags], "---", ""])
    concepts = data["concepts"]
    shown = ", ".join(f"`{_md(c)}`" for c in concepts[:50]) + (f", ... ({len(concepts) - 50} more in "
                                                                  "model.json)" if len(concepts) > 50 else "")
    rows = [f"| {_md(cls)} | " + "; ".join(f"{_md(c)} ({w:+.3g})" for c, w in pairs) + " |"
            for cls, pairs in data["top_concepts"].items()]
    metrics = _table(data["metrics"]) or "Not measured when the model was saved.\n"
    grounding = _table(data["grounding"]) or ("Not measured (no concept annotations were given when the "
                                               "model was saved).\n")
    spec = bb["spec"] or "(not recorded: pass the backbone the model was fitted with)"
    files = ["- `model.json`, `weights.safetensors`: the model (conceptlens' own format; no pickle)",
             f"- `{CARD}` (this card) and `{CARD_DATA}` (the same, for programs)"]
    if onnx:
        files.append(f"- `{ONNX_FILE}`: the whole model (backbone image tower, concepts, final layer) for "
                     "ONNX Runtime: input `pixels` (n, 3, s, s), the backbone's prepared images; outputs "
                     "`probabilities`, `logits`, `concepts`")
    return f"""{front}
# {_md(data["title"])}

An interpretable image classifier made with conceptlens: a
concept bottleneck model (method `{data["method"]}`) that scores {len(concepts)} human-readable concepts
on an image, then predicts one of {len(data["classes"])} classes from a sparse linear combination of those
scores (NEC {data["nec"]:.3g}: non-zero concept weights per class).

## Use

```python
from conceptlens.backbones import open_backbone
from conceptlens.export import export_torch, from_pretrained

model = from_pretrained("path/to/this/folder")          # a conceptlens Method
backbone = open_backbone(model.backbone_spec_)          # the backbone it was fitted with
module = export_torch(model, backbone)                  # torch.nn.Module: pixels -> logits, concepts
```

## Backbone

- spec: `{spec}`
- id: `{bb["id"]}`
- preprocessing: `{bb["preprocess"] or "(not recorded)"}`
- the model reads the backbone's `{data["input"]}`

## Classes

{", ".join(f"`{_md(c)}`" for c in data["classes"])}

## Concepts

{shown}

The concepts each class weighs most (weight in brackets):

| class | top concepts |
| --- | --- |
{chr(10).join(rows)}

## Metrics

{metrics}
## Grounding

Whether the concepts are what the model sees (conceptlens' grounding measures against annotations):

{grounding}
## Files

{chr(10).join(files)}

Made with conceptlens {data["conceptlens"]}.
"""


def _swap_into_place(tmp: Path, final: Path, overwrite: bool) -> None:
    if not final.exists():
        os.replace(tmp, final)
        return
    if not overwrite:
        raise ConfigError(f"{final} exists; pass overwrite=True to replace it.")
    old = final.parent / f".{final.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(old, final)  # put the old folder back
        raise
    shutil.rmtree(old, ignore_errors=True)


def save_pretrained(model, folder: str | Path, *, metrics: dict | None = None, grounding: dict | None = None,
                    backbone=None, onnx: bool = False, title: str | None = None,
                    overwrite: bool = False) -> Path:
    """Write a fitted `model` to `folder` with its model card. `metrics` / `grounding`: dicts of
    measures (nested dicts are flattened, e.g. a run's results.json entry); `backbone` (the one the
    model was fitted with) is needed only for `onnx=True`, which adds `model.onnx`. Atomic; an existing
    folder is replaced only with overwrite=True. Returns the folder."""
    if not isinstance(model, Method):
        raise ConfigError(f"save_pretrained takes a fitted conceptlens model; got {type(model).__name__}.")
    model.check_fitted()
    final = Path(folder)
    if final.exists() and not overwrite:
        raise ConfigError(f"{final} exists; pass overwrite=True to replace it.")
    if final.exists() and not final.is_dir():
        raise ConfigError(f"{final} is a file, not a model folder.")
    check_edit_destination(final, getattr(model, "derived_from_", None))
    if onnx and backbone is None:
        raise ConfigError("save_pretrained(onnx=True) needs the backbone the model was fitted with "
                          "(backbone=...): the ONNX file holds its image tower.")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        model.save(tmp)
        data = _card_data(model, metrics, grounding, backbone, title)
        if onnx:
            from .onnx_export import export_onnx

            export_onnx(model, backbone, tmp / ONNX_FILE)
        write_json(tmp / CARD_DATA, data)
        write_text(tmp / CARD, model_card(data, onnx=onnx))
        _swap_into_place(tmp, final, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def from_pretrained(folder: str | Path) -> Method:
    """The model of a save_pretrained folder (or any saved model folder): `Method.load`, so a damaged,
    tampered or inconsistent folder raises DataError naming the file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder; from_pretrained reads a save_pretrained folder ("
                          "download "
                          "a Hub repository first, e.g. huggingface_hub.snapshot_download).")
    return Method.load(folder)


def read_card(folder: str | Path) -> dict:
    """The card data (`card.json`) of a save_pretrained folder."""
    path = Path(folder) / CARD_DATA
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a readable model card ({e}).") from e
    if not isinstance(data, dict):
        raise DataError(f"{path}: not a model card (expected a JSON object).")
    return data
