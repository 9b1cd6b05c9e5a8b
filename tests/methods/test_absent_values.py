"""Each concept's "absent" value (methods/absent.py): what the explorer's "off" sets, recorded at
fit, saved with the model, served at GET /model and used by /intervene."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conceptlens.errors import DataError
from conceptlens.features import FeatureBundle
from conceptlens.intervene import intervene
from conceptlens.methods import Method, get_method
from conceptlens.testing import FAST_PARAMS, TinyBackbone, make_problem
from conceptlens.testing import decode_png as _pixels
from conceptlens.testing import service_model as make_model


@pytest.fixture(scope="module")
def label_free():
    train, _, test, ctx = make_problem()
    return get_method("label_free", **FAST_PARAMS["label_free"]).fit(train, ctx), train, test


def test_label_free_absent_values_are_the_low_percentile_of_its_standardised_training_activations(label_free):
    model, train, _ = label_free
    # independent reference: the concept layer written out (standardised projection), then numpy
    A = (np.asarray(getattr(train, model.input), np.float64) @ model.projection_.T.astype(np.float64)
         - model.mean_) / model.std_
    np.testing.assert_allclose(A.mean(0), 0.0, atol=1e-4)  # standardised: 0 is the average image
    reference = np.percentile(A, 5, axis=0)
    np.testing.assert_allclose(model.absent_values_, reference, rtol=1e-5, atol=1e-5)
    assert (model.absent_values_ < -0.5).all()  # "off" is well below "average", not 0


def test_absent_values_round_trip_and_an_older_folder_loads_without_them(label_free, tmp_path):
    model, _, _ = label_free
    again = Method.load(model.save(tmp_path / "m"))
    np.testing.assert_array_equal(again.absent_values_, model.absent_values_)
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    del meta["absent_values"]  # as an older conceptlens wrote it
    shutil.copytree(tmp_path / "m", tmp_path / "old")
    (tmp_path / "old" / "model.json").write_text(json.dumps(meta))
    old = Method.load(tmp_path / "old")
    assert old.absent_values_ is None
    np.testing.assert_array_equal(old.class_weights_, model.class_weights_)
    k = len(model.concepts_)
    for bad in ([1.0] * (k - 1), ["x"] * k, [True] * k, [float("nan")] * k, "low"):
        (tmp_path / "old" / "model.json").write_text(json.dumps(meta | {"absent_values": bad}))
        with pytest.raises(DataError, match="absent_values"):
            Method.load(tmp_path / "old")


def test_the_truth_intervention_writes_the_same_absent_value(label_free):
    # one definition: a test-time intervention on a false concept, with the training images as its
    # reference, writes the model's recorded absent value
    model, train, test = label_free
    truth = np.zeros((len(test), len(model.concepts_)), bool)
    out, _ = intervene(model, test, concepts=list(model.concepts_), strategy="truth", truth=truth,
                       reference=train)
    np.testing.assert_allclose(out, np.broadcast_to(model.absent_values_, out.shape), rtol=1e-6, atol=1e-6)


def test_served_off_value_is_the_models_and_intervene_uses_it(tmp_path):
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from fastapi.testclient import TestClient

    from conceptlens.service import create_app

    model_dir, images = make_model(tmp_path)
    model = Method.load(model_dir)
    client = TestClient(create_app(model_dir, backbone=TinyBackbone(), images=images))
    described = client.get("/model").json()
    absent = dict(zip(described["concepts"], described["absent"], strict=True))
    assert "percentile" in described["absent_rule"]
    np.testing.assert_array_equal(described["absent"], model.absent_values_)

    path = images / "red fox" / "1.png"
    image_id = client.post("/predict", content=path.read_bytes()).json()["image_id"]
    out = TinyBackbone().encode_images([_pixels(path)])
    bundle = FeatureBundle(["x"], np.zeros(1, np.int64), model.classes_, out["embedding"], out["features"],
                           "tiny:seed0", embedding_norm=out["embedding_norm"])
    for k, concept in enumerate(model.concepts_):
        assert absent[concept] != 0.0
        off = client.post("/intervene", json={"image_id": image_id, "values": {concept: absent[concept]},
                                              "top": 0}).json()
        A = model.transform(bundle).astype(np.float64)
        A[:, k] = absent[concept]
        expected = np.asarray(model.head(A, bundle), np.float64)[0]
        got = {c["class"]: c["logit"] for c in off["classes"]}
        np.testing.assert_allclose([got[c] for c in model.classes_], expected, rtol=1e-5, atol=1e-5)


def test_an_older_model_folder_is_served_with_off_at_zero_and_says_so(tmp_path):
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from fastapi.testclient import TestClient

    from conceptlens.service import create_app

    model_dir, images = make_model(tmp_path)
    meta = json.loads((model_dir / "model.json").read_text())
    del meta["absent_values"]
    (model_dir / "model.json").write_text(json.dumps(meta))
    described = TestClient(create_app(model_dir, backbone=TinyBackbone(), images=images)).get("/model").json()
    assert described["absent"] == [0.0] * len(described["concepts"])
    assert "saved before absent values were recorded" in described["absent_rule"]
