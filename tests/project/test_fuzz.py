"""Property-based fuzzing of every reader of untrusted input: the config loader (TOML text), the
manifest reader (CSV / JSONL bytes), the annotation CSV reader, the model folder loader
(model.json), the precomputed-file loader and the service's request bodies. Each ends in a
correct result or a clear error of conceptlens's own (ConceptLensError), never another exception.

Bounded for CI: at most 60 examples a property, no deadline, derandomised (the same examples on
every run); the file takes well under a minute.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from conceptlens.errors import ConceptLensError  # noqa: E402

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True)
           | st.text(max_size=12))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


# -- the config loader --------------------------------------------------------------------------

def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON's escapes are TOML basic-string escapes
    return "[" + ", ".join(_toml_value(x) for x in v) + "]"


SECTIONS = {
    "data": ["dataset", "train_per_class", "val_per_class", "test_per_class", "seed", "on_error",
             "max_pixels", "train_fraction", "val_fraction", "test_fraction", "ray_workers"],
    "concepts": ["per_class", "lam", "selection", "activation_quantile", "global_budget", "filter"],
    "fewshot": ["shots", "seeds", "use_val"],
    "evaluation": ["nec", "nec_protocol"],
    "grounding": ["k", "match_threshold", "embed"],
    "discovery": ["pool_size", "seed", "input", "vocabulary_size"],
    "methods.linear_probe": ["Cs", "seed"], "methods.label_free": ["lam", "seed", "on"],
    "methods.cbm": ["mode", "lr", "epochs", "seed"], "methods.zero_shot": [],
    "output": ["dir", "cache_dir"],
}
toml_scalars = (st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=True)
                | st.sampled_from(["all", "auto", "none", "vlg", "fail", "skip", "joint", "x"]))
toml_values = toml_scalars | st.lists(toml_scalars, max_size=3)


@st.composite
def toml_configs(draw) -> str:
    lines = []
    # few keys: the defaults fill the rest, so many configs are valid but for the drawn values
    for section in draw(st.lists(st.sampled_from(sorted(SECTIONS)), unique=True, max_size=2)):
        lines.append(f"[{section}]")
        keys = draw(st.lists(st.sampled_from(SECTIONS[section] or ["x"]), unique=True, max_size=2))
        lines += [f"{k} = {_toml_value(draw(toml_values))}" for k in keys]
    return "\n".join(lines) + "\n"


@FUZZ
@given(text=toml_configs() | st.text(max_size=80))
def test_fuzz_config_loader(tmp_path_factory, text):
    from conceptlens.runs import load_config

    path = tmp_path_factory.mktemp("cfg") / "run.toml"
    path.write_text(text, encoding="utf-8")
    try:
        cfg = load_config(path)
    except ConceptLensError:
        return
    # accepted: every number in it is finite and every seed one numpy takes
    assert math.isfinite(cfg.concepts.lam) and 0 <= cfg.data.seed < 2**32
    assert all(0 <= s < 2**32 for s in cfg.fewshot.seeds)


# -- the manifest reader ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def manifest_dir(tmp_path_factory):
    from conceptlens.testing import write_png

    root = tmp_path_factory.mktemp("manifest")
    for name in ("a.png", "b.png", "c.png"):
        write_png(root / name, (10, 20, 30))
    return root


cells = st.sampled_from(["a.png", "b.png", "c.png", "gone.png", "cat", "dog", "0", "", "train", "test",
                         "val", "holdout", " a.png ", "x,y", '"q"'])
headers = st.lists(st.sampled_from(["path", "label", "split", "extra", "", " label"]), min_size=1, max_size=4)


@st.composite
def manifests(draw) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(["csv", "jsonl", "raw"]))
    if kind == "raw":
        return draw(st.sampled_from([".csv", ".jsonl"])), draw(st.binary(max_size=200))
    if kind == "csv":
        header = draw(headers)
        rows = draw(st.lists(st.lists(cells, min_size=len(header) - 1, max_size=len(header) + 1), max_size=5))
        text = "\n".join(",".join(r) for r in [header, *rows]) + "\n"
        return ".csv", text.encode(draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16"])))
    rows = draw(st.lists(st.dictionaries(st.sampled_from(["path", "label", "split", "x"]),
                                         cells | json_values, max_size=3), max_size=5))
    lines = [json.dumps(r) for r in rows] + draw(st.lists(st.sampled_from(["{", "[]", "3", '{"a": 1, "a": 2}']),
                                                          max_size=1))
    return ".jsonl", "\n".join(lines).encode()


@FUZZ
@given(manifest=manifests())
def test_fuzz_manifest_reader(manifest_dir, manifest):
    from conceptlens.data import load_manifest

    suffix, content = manifest
    path = manifest_dir / f"m{suffix}"
    path.write_bytes(content)
    try:
        data = load_manifest(path)
    except ConceptLensError:
        return
    if suffix == ".csv":  # a repeated column was read silently (the last one won)
        header = [h.strip() for h in content.decode("utf-8-sig").splitlines()[0].split(",")]
        assert len({h for h in header if h}) == len([h for h in header if h])
    assert len(data) == len(data.labels) == len(data.ids) >= 2 and len(set(data.ids)) == len(data.ids)
    assert all(Path(i).is_file() for i in data.ids) and len(data.classes) >= 2


# -- the annotation CSV reader ------------------------------------------------------------------

ann_cells = st.sampled_from(["1", "0", "", "yes", "0.5", "attribute", "path", "cat", "dog", "Cat", "striped"])


@FUZZ
@given(rows=st.lists(st.lists(ann_cells, min_size=1, max_size=4), max_size=5), level=st.sampled_from(["class", "image"]),
       raw=st.none() | st.binary(max_size=120))
def test_fuzz_annotation_csv_reader(tmp_path_factory, rows, level, raw):
    from conceptlens.annotations.annotations import load_class_csv, load_image_csv

    path = tmp_path_factory.mktemp("ann") / "a.csv"
    first = "attribute" if level == "class" else "path"
    path.write_bytes(raw if raw is not None else "\n".join(",".join(r) for r in [[first, "cat", "dog"], *rows]).encode())
    load = load_class_csv if level == "class" else load_image_csv
    try:
        ann = load(path)
    except ConceptLensError:
        return
    assert np.isin(ann.values[~np.isnan(ann.values)], (0.0, 1.0)).all()


# -- the model folder loader --------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    from conceptlens.features import FeatureBundle
    from conceptlens.methods import Context, get_method

    folder = tmp_path_factory.mktemp("model")
    b = FeatureBundle(["a", "b"], np.array([0, 1]), ("cat", "dog"), np.eye(2, dtype=np.float32), None, "t")
    ctx = Context(("cat", "dog"), ["fur", "bark"], np.eye(2, dtype=np.float32), np.eye(2, dtype=np.float32),
                  np.eye(2, dtype=np.float32), "t", preprocess_id="p")
    get_method("posthoc").fit(b, ctx).save(folder / "model")
    return folder / "model", json.loads((folder / "model" / "model.json").read_text())


@FUZZ
@given(change=st.dictionaries(st.sampled_from(["method", "params", "classes", "concepts", "backbone_id",
                                               "feature_key", "extra", "edit_log", "preprocess_id", "format",
                                               "version"]), json_values, max_size=3),
       drop=st.lists(st.sampled_from(["params", "classes", "concepts", "backbone_id", "feature_key"]), max_size=2),
       raw=st.none() | st.text(max_size=40))
def test_fuzz_model_folder_loader(tmp_path_factory, saved_model, change, drop, raw):
    import shutil

    from conceptlens.methods import Method

    source, meta = saved_model
    folder = tmp_path_factory.mktemp("m") / "model"
    shutil.copytree(source, folder)
    meta = {k: v for k, v in (meta | change).items() if k not in drop}
    (folder / "model.json").write_text(raw if raw is not None else json.dumps(meta))
    try:
        model = Method.load(folder)
    except ConceptLensError:
        return
    assert len(model.classes_) == model.class_weights_.shape[0] and np.isfinite(model.class_weights_).all()


# -- the precomputed-file loader ----------------------------------------------------------------

dims = st.integers(0, 3)
arrays = st.builds(lambda shape, fill: np.full(shape, fill, np.float32),
                   st.lists(dims, min_size=0, max_size=3).map(tuple),
                   st.sampled_from([1.0, 0.0, -2.0, np.nan, np.inf]))
meta_texts = st.sampled_from(['["a", "b"]', '["a"]', '["a", "a"]', "[1]", "3", "{", '"a"', "[]", '["x", "y", "z"]'])


@FUZZ
@given(tensors=st.dictionaries(st.sampled_from(["embedding", "features", "text_embedding", "embedding_norm",
                                                "text_embedding_norm"]), arrays, max_size=4),
       ids=meta_texts, texts=st.none() | meta_texts, npz=st.booleans())
def test_fuzz_precomputed_loader(tmp_path_factory, tensors, ids, texts, npz):
    from safetensors.numpy import save_file

    from conceptlens.backbones import get_backbone

    folder = tmp_path_factory.mktemp("pre")
    if npz:
        path = folder / "f.npz"
        extra = {"ids": np.array(json.loads(ids)) if ids.startswith("[") else np.array(ids)}
        if texts is not None:
            extra["texts"] = np.array(json.loads(texts)) if texts.startswith("[") else np.array(texts)
        np.savez(path, **tensors, **extra)
    else:
        path = folder / "f.safetensors"
        save_file(tensors, str(path), metadata={"ids": ids, **({} if texts is None else {"texts": texts})})
    try:
        bb = get_backbone(f"precomputed:{path}")
        out = bb.lookup_ids(list(bb.row))
        if bb.text_row:
            bb.encode_texts(list(bb.text_row))
    except ConceptLensError:
        return
    assert np.isfinite(out["embedding"]).all() and out["embedding"].shape == (len(bb.row), bb.embed_dim)


# -- the service's request bodies ---------------------------------------------------------------

@pytest.fixture(scope="module")
def client(tmp_path_factory):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from conceptlens.service import create_app
    from conceptlens.testing import TinyBackbone
    from conceptlens.testing import service_model as make_model

    model_dir, images = make_model(tmp_path_factory.mktemp("service"))
    client = TestClient(create_app(model_dir, backbone=TinyBackbone(), images=images))
    image_id = client.post("/predict", content=(images / "cat" / "0.png").read_bytes()).json()["image_id"]
    return client, image_id


bodies = st.dictionaries(st.sampled_from(["image_id", "values", "classes", "top", "concepts_top", "edit",
                                          "concept", "factor", "note", "x"]),
                         json_values | st.just("IMAGE") | st.lists(st.fixed_dictionaries(
                             {"concept": st.sampled_from(["stripes", "blue sky", "nope"]),
                              "factor": st.floats(allow_nan=True)}), max_size=2), max_size=4)


@FUZZ
@given(path=st.sampled_from(["/intervene", "/edit", "/predict"]), body=bodies, raw=st.none() | st.binary(max_size=64))
def test_fuzz_service_request_bodies(client, path, body, raw):
    # TestClient re-raises a server exception: any answer, 2xx or 4xx, means it was handled
    http, image_id = client
    body = {k: image_id if v == "IMAGE" else v for k, v in body.items()}
    if raw is not None:
        r = http.post(path, content=raw, headers={"Content-Type": "application/json"})
    else:
        r = http.post(path, content=json.dumps(body), headers={"Content-Type": "application/json"})
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert r.json()["detail"]
