"""`conceptlens serve`: the HTTP API over a small real model (a PCBM-h on a tiny backbone),
checked against the same model called in-process."""

from __future__ import annotations

import argparse
import io
import json
import struct
import threading
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'conceptlens[serve]')")

from fastapi.testclient import TestClient

from conceptlens.errors import ConfigError
from conceptlens.explain.contributions import contributions
from conceptlens.features import FeatureBundle
from conceptlens.intervene import edit_model, intervene
from conceptlens.methods import Method
from conceptlens.methods.base import softmax
from conceptlens.service import ServerThread, create_app, token_for_host
from conceptlens.testing import SERVICE_CLASSES as CLASSES
from conceptlens.testing import SERVICE_CONCEPTS as CONCEPTS
from conceptlens.testing import TinyBackbone
from conceptlens.testing import decode_png as _pixels
from conceptlens.testing import service_model as make_model

TOKEN = "a-test-token-of-24-chars"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    model_dir, images = make_model(tmp_path_factory.mktemp("service"))
    client = TestClient(create_app(model_dir, backbone=TinyBackbone(), images=images))
    return client, Method.load(model_dir), images, model_dir


def in_process(model, path: Path) -> FeatureBundle:
    out = TinyBackbone().encode_images([_pixels(path)])
    return FeatureBundle(["x"], np.zeros(1, np.int64), model.classes_, out["embedding"], out["features"],
                         "tiny:seed0", embedding_norm=out["embedding_norm"])


def test_predict_matches_the_model_in_process_and_contributions_sum_to_the_logit(served):
    client, model, images, _ = served
    path = images / "dog" / "2.png"
    data = path.read_bytes()
    raw = client.post("/predict", content=data, headers={"Content-Type": "image/png"},
                      params={"classes": list(CLASSES), "top": 0})
    form = client.post("/predict", files={"image": ("x.png", data, "image/png")},
                       params={"classes": list(CLASSES), "top": 0})
    assert raw.status_code == 200 and form.status_code == 200, raw.text
    assert raw.json() == form.json()  # an upload either way is the same image
    answer = raw.json()

    bundle = in_process(model, path)
    logits = model.decision_function(bundle)[0]
    probs = softmax(logits[None].astype(np.float64))[0]
    assert answer["predicted"] == CLASSES[int(logits.argmax())]
    got = {c["class"]: c for c in answer["classes"]}
    assert [c["class"] for c in answer["classes"]] == [CLASSES[i] for i in np.argsort(-probs)]
    for i, cls in enumerate(CLASSES):
        assert got[cls]["logit"] == pytest.approx(logits[i], abs=1e-5)
        assert got[cls]["probability"] == pytest.approx(probs[i], abs=1e-6)
    assert sum(c["probability"] for c in answer["classes"]) == pytest.approx(1.0)

    residual = np.broadcast_to(model.residual(bundle), logits[None].shape)[0]
    assert np.abs(residual).max() > 0.01  # PCBM-h: the residual matters in the sum below
    for ex in answer["explanations"]:
        c = CLASSES.index(ex["class"])
        total = sum(k["contribution"] for k in ex["contributions"]) + ex["others"]
        assert total + ex["intercept"] + ex["residual"] == pytest.approx(logits[c], abs=1e-5)
        assert ex["residual"] == pytest.approx(residual[c], abs=1e-6)
        reference = contributions(model, bundle, c)[0]
        listed = {k["concept"]: k["contribution"] for k in ex["contributions"]}
        # every concept with a non-zero weight is listed, with the library's own contribution
        assert set(listed) == {CONCEPTS[k] for k in np.flatnonzero(model.class_weights_[c])}
        for name, value in listed.items():
            assert value == pytest.approx(reference[CONCEPTS.index(name)], abs=1e-6)
        assert ex["others"] == 0.0
    assert list(answer["activations"]) == CONCEPTS
    np.testing.assert_allclose(list(answer["activations"].values()), model.transform(bundle)[0], atol=1e-6)


def test_predict_defaults_to_the_predicted_class_and_truncates_with_others(served):
    client, _, images, _ = served
    data = (images / "cat" / "0.png").read_bytes()
    answer = client.post("/predict", content=data).json()
    assert [ex["class"] for ex in answer["explanations"]] == [answer["predicted"]]
    short = client.post("/predict", content=data, params={"concepts_top": 1, "top": 1}).json()
    ex, full = short["explanations"][0], answer["explanations"][0]
    assert len(short["classes"]) == 1 and len(ex["contributions"]) == 1
    assert ex["contributions"][0] == full["contributions"][0]  # the largest |contribution| first
    assert ex["contributions"][0]["contribution"] + ex["others"] == pytest.approx(
        sum(k["contribution"] for k in full["contributions"]))


def test_intervene_equals_the_in_process_intervention(served):
    client, model, images, _ = served
    path = images / "cat" / "1.png"
    image_id = client.post("/predict", content=path.read_bytes()).json()["image_id"]
    bundle = in_process(model, path)

    # one concept to one value: conceptlens.intervene with the 'value' strategy
    r = client.post("/intervene", json={"image_id": image_id, "values": {"stripes": 0.8}, "top": 0})
    assert r.status_code == 200, r.text
    _, logits = intervene(model, bundle, concepts=["stripes"], strategy="value", value=0.8)
    got = {c["class"]: c["logit"] for c in r.json()["classes"]}
    for i, cls in enumerate(CLASSES):
        assert got[cls] == pytest.approx(logits[0, i], abs=1e-5)
    assert r.json()["predicted"] == CLASSES[int(logits[0].argmax())]
    assert r.json()["activations"]["stripes"] == 0.8

    # several concepts to different values: the head on hand-set activations
    values = {"reddish fur": -0.5, "blue sky": 0.9, "pointed ears": 0.0}
    answer = client.post("/intervene", json={"image_id": image_id, "values": values, "top": 0,
                                             "classes": list(CLASSES)}).json()
    A = model.transform(bundle).astype(np.float64)
    for name, v in values.items():
        A[0, CONCEPTS.index(name)] = v
    expected = model.head(A, bundle)[0]
    assert {c["class"]: c["logit"] for c in answer["classes"]} == pytest.approx(
        dict(zip(CLASSES, expected.tolist(), strict=True)), abs=1e-5)
    for ex in answer["explanations"]:  # the explanation follows the intervention, still exact
        total = sum(k["contribution"] for k in ex["contributions"]) + ex["intercept"] + ex["residual"]
        assert total == pytest.approx(expected[CLASSES.index(ex["class"])], abs=1e-5)
    assert answer["values"] == values


def test_intervene_with_an_edit_equals_the_edited_model(served):
    client, model, images, _ = served
    path = images / "red fox" / "0.png"
    image_id = client.post("/predict", content=path.read_bytes()).json()["image_id"]
    change = {"concept": "blue sky", "factor": 0.0, "classes": ["red fox"]}
    answer = client.post("/intervene", json={"image_id": image_id, "edit": [change], "top": 0}).json()
    edited = edit_model(model, remove=["blue sky"], classes=["red fox"])
    logits = edited.decision_function(in_process(model, path))[0]
    got = {c["class"]: c["logit"] for c in answer["classes"]}
    assert got == pytest.approx(dict(zip(CLASSES, logits.tolist(), strict=True)), abs=1e-5)
    assert got["red fox"] != pytest.approx(model.decision_function(in_process(model, path))[0][2], abs=1e-3)


def test_edit_downloads_the_edited_model_with_its_log(served, tmp_path):
    client, model, _, _ = served
    body = {"changes": [{"concept": "stripes", "factor": 0, "classes": ["cat"]},
                        {"concept": "green grass", "factor": 2.5}], "note": "from the explorer"}
    r = client.post("/edit", json=body)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    assert 'filename="model-edited.zip"' in r.headers["content-disposition"]
    zipfile.ZipFile(io.BytesIO(r.content)).extractall(tmp_path)
    loaded = Method.load(tmp_path / "model-edited")
    expected = edit_model(edit_model(model, remove=["stripes"], classes=["cat"]),
                          reweight={"green grass": 2.5})
    np.testing.assert_array_equal(loaded.class_weights_, expected.class_weights_)
    log = json.loads((tmp_path / "model-edited" / "edit_log.json").read_text())
    assert [(e["concept"], e["factor"], e["classes"], e["note"]) for e in log] == [
        ("stripes", 0.0, ["cat"], "from the explorer"),
        ("green grass", 2.5, list(CLASSES), "from the explorer")]
    assert loaded.edit_log_ == log
    assert client.get("/model").json()["edit_log"] == []  # the served model is unchanged


def test_long_edits_are_applied_in_one_pass_and_capped(served, monkeypatch):
    import copy
    import types

    from conceptlens.intervene import edits

    client, _, images, _ = served
    copies = []
    monkeypatch.setattr(edits, "copy", types.SimpleNamespace(
        deepcopy=lambda obj: copies.append(1) or copy.deepcopy(obj)))
    changes = [{"concept": "stripes", "factor": [2, 0.5][i % 2], "classes": ["cat"]} for i in range(5000)]
    r = client.post("/edit", json={"changes": changes})
    assert r.status_code == 200, r.text
    assert len(copies) == 1  # the model is copied once for all 5,000 changes, not once per change
    log = json.loads(zipfile.ZipFile(io.BytesIO(r.content)).read("model-edited/edit_log.json"))
    assert len(log) == 5000
    image_id = client.post("/predict", content=(images / "cat" / "0.png").read_bytes()).json()["image_id"]
    too_many = [{"concept": "stripes", "factor": 1}] * 10_001
    for r in (client.post("/edit", json={"changes": too_many}),
              client.post("/intervene", json={"image_id": image_id, "edit": too_many})):
        assert r.status_code == 422 and "10,001 changes in one edit; at most 10,000" in r.json()["detail"]


def test_model_weights_and_images(served):
    client, model, _, _ = served
    info = client.get("/model").json()
    assert info["classes"] == list(CLASSES) and info["concepts"] == CONCEPTS
    assert info["nec"] == pytest.approx(model.nec_) and info["backbone_id"] == "tiny:seed0"
    assert info["method"] == "posthoc_hybrid" and info["images"] == 15
    w = client.get("/weights", params={"class": "dog", "top": 0}).json()
    row = model.class_weights_[1]
    assert [x["weight"] for x in w["weights"]] == pytest.approx(sorted(row[row != 0], key=lambda v: -abs(v)))
    listing = client.get("/images").json()["images"]
    assert listing[0]["name"] == "cat/0.png" and len(listing) == 15
    thumb = client.get("/images/14/thumbnail")
    assert thumb.status_code == 200 and thumb.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.get("/images/15").status_code == 422
    page = client.get("/")
    assert page.status_code == 200 and "/static/explorer.js" in page.text
    assert client.get("/static/explorer.js").status_code == 200
    assert {"/predict", "/intervene", "/model", "/edit"} <= set(client.get("/openapi.json").json()["paths"])


def test_example_images_never_follow_links_out_of_their_folder(served, tmp_path, caplog):
    import shutil

    _, _, images, model_dir = served
    secret = tmp_path / "secret.png"  # an image suffix, but a local secret
    secret.write_bytes(b"SECRET-API-KEY sk-live-0123456789")
    photo = tmp_path / "private" / "photo.png"  # a real image, outside the folder
    photo.parent.mkdir()
    shutil.copy(images / "dog" / "1.png", photo)
    folder = tmp_path / "examples"
    (folder / "cat").mkdir(parents=True)
    shutil.copy(images / "cat" / "0.png", folder / "cat" / "0.png")
    shutil.copy(images / "cat" / "1.png", folder / "cat" / "1.png")
    (folder / "cat" / "leak.png").symlink_to(secret)
    (folder / "cat" / "photo.png").symlink_to(photo)
    (folder / "private").symlink_to(photo.parent, target_is_directory=True)
    with caplog.at_level("WARNING", logger="conceptlens"):
        client = TestClient(create_app(model_dir, backbone=TinyBackbone(), images=folder))
    assert "left out 3 symbolic link(s)" in caplog.text
    assert [i["name"] for i in client.get("/images").json()["images"]] == ["cat/0.png", "cat/1.png"]
    served_bytes = [client.get(f"/images/{i}").content for i in range(3)]
    assert not any(b"SECRET" in b or b == photo.read_bytes() for b in served_bytes)
    assert client.get("/images/0").headers["content-type"] == "image/png"

    # a listed file swapped for a link (or for other content) after the listing is refused too
    (folder / "cat" / "1.png").unlink()
    (folder / "cat" / "1.png").symlink_to(secret)
    for url in ("/images/1", "/images/1/thumbnail"):
        r = client.get(url)
        assert r.status_code == 403 and b"SECRET" not in r.content
        assert "no longer a plain file inside the images folder" in r.json()["detail"]
    (folder / "cat" / "0.png").write_bytes(b"SECRET but not an image")
    r = client.get("/images/0")
    assert r.status_code == 403 and "not an image in a format the explorer shows" in r.json()["detail"]
    assert b"SECRET" not in r.content

    # a model folder whose images folder is a link: refused unless --images names it explicitly
    linked_model = tmp_path / "received-model"
    shutil.copytree(model_dir, linked_model, ignore=shutil.ignore_patterns("images"))
    (linked_model / "images").symlink_to(photo.parent, target_is_directory=True)
    with pytest.raises(ConfigError, match=r"images is a symbolic link.*pass it explicitly: --images"):
        create_app(linked_model, backbone=TinyBackbone())
    explicit = TestClient(create_app(linked_model, backbone=TinyBackbone(), images=photo.parent))
    assert explicit.get("/images/0").content == photo.read_bytes()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels: what a decompression bomb's header says."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_bad_requests_get_4xx_with_a_message_and_the_service_stays_up(served):
    client, _, images, _ = served
    good = (images / "cat" / "0.png").read_bytes()
    image_id = client.post("/predict", content=good).json()["image_id"]
    cases = [
        (client.post("/predict", content=b"this is not an image"), 400, "not an image"),
        (client.post("/predict", content=b""), 400, "No image"),
        (client.post("/predict", files={"other": (None, "text")}), 400, "holds no file"),
        (client.post("/predict", content=_png_header_only(100_000, 100_000)), 413, "decompression bomb"),
        (client.post("/predict", content=good, params={"classes": ["Dog"]}), 422, "Did you mean 'dog'?"),
        (client.post("/intervene", json={"image_id": image_id, "values": {"stripe": 1}}), 422,
         "Unknown concept 'stripe'"),
        (client.post("/intervene", content=f'{{"image_id": "{image_id}", "values": {{"stripes": NaN}}}}',
                     headers={"Content-Type": "application/json"}), 422, "finite"),
        (client.post("/intervene", json={"image_id": "0" * 64, "values": {}}), 404, "/predict first"),
        (client.post("/intervene", json={"values": {}}), 422, "image_id"),
        (client.post("/edit", json={"changes": [{"concept": "blue skies"}]}), 422,
         "Did you mean 'blue sky'?"),
        (client.post("/edit", json={"changes": []}), 422, "at least one change"),
        (client.get("/weights", params={"class": "fox"}), 422, "Unknown class 'fox'"),
    ]
    for response, status, message in cases:
        assert response.status_code == status, (message, response.text)
        assert message in json.dumps(response.json()), response.text
    assert "Did you mean 'red fox'?" in client.get("/weights", params={"class": "red fx"}).json()["detail"]
    assert client.post("/predict", content=good).json()["image_id"] == image_id  # still up


def test_a_postscript_upload_is_refused_without_its_decoder(served, monkeypatch):
    from PIL import EpsImagePlugin

    client = served[0]
    used = []
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", lambda self: used.append("EPS"))
    eps = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%%EndComments\n"
           b"newpath 0 0 moveto 10 10 lineto stroke\nshowpage\n%%EOF\n")
    for r in (client.post("/predict", content=eps, headers={"Content-Type": "image/png"}),
              client.post("/predict", files={"image": ("x.png", eps, "image/png")})):
        assert r.status_code == 415, r.text
        expected = ("The upload holds EPS data (by its content, whatever the file's name), a format "
                    "conceptlens does not decode: it decodes only PNG, JPEG, BMP, GIF, TIFF, WebP or PPM/PGM")
        assert r.json()["detail"].startswith(expected), r.text
    assert used == []  # Pillow's EPS decoder (which runs Ghostscript) never saw the bytes


def test_upload_limit_refuses_big_bodies_before_and_while_reading(served):
    _, _, images, model_dir = served
    client = TestClient(create_app(model_dir, backbone=TinyBackbone(), max_upload_bytes=2000,
                                   max_pixels=100))
    small = (images / "cat" / "0.png").read_bytes()
    assert len(small) < 2000
    r = client.post("/predict", content=b"\0" * 5000)  # Content-Length says it: refused unread
    assert r.status_code == 413 and "limit of 2,000 bytes" in r.json()["detail"]
    r = client.post("/predict", content=iter([b"\0" * 1500, b"\0" * 1500]))  # chunked: no length
    assert r.status_code == 413 and "--max-upload-mb" in r.json()["detail"]
    r = client.post("/predict", content=small)  # 16 x 16 = 256 pixels, over this app's 100
    assert r.status_code == 413 and "256 pixels" in r.json()["detail"]
    with pytest.raises(ConfigError, match="max_upload_bytes must be a positive integer"):
        create_app(model_dir, backbone=TinyBackbone(), max_upload_bytes=0)


@pytest.mark.parametrize("content_type", ["image/png", "multipart/form-data; boundary=xyz"])
def test_a_client_that_disconnects_mid_body_is_one_log_line(served, caplog, content_type):
    # it left a ClientDisconnect traceback in the service log
    import asyncio
    import logging

    app = served[0].app
    chunks = [{"type": "http.request", "body": b"\x89PNG\r\n" if content_type == "image/png" else
               b"--xyz\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\nab",
               "more_body": True}, {"type": "http.disconnect"}]
    sent = []

    async def receive():
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/predict", "raw_path": b"/predict", "query_string": b"",
             "root_path": "", "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
             "headers": [(b"host", b"127.0.0.1"), (b"content-type", content_type.encode()),
                         (b"content-length", b"100000")]}
    with caplog.at_level(logging.INFO):
        asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 400
    assert not [r for r in caplog.records if r.exc_info], "no traceback is logged"
    assert "the client disconnected before sending the whole request body" in caplog.text


def test_the_backbone_must_be_the_models(served):
    model_dir = served[3]
    with pytest.raises(ConfigError, match="fitted on features of 'tiny:seed0'.*'tiny:seed1'"):
        create_app(model_dir, backbone=TinyBackbone(seed=1))


def test_the_backbone_preprocessing_must_be_the_models(served, tmp_path):
    # same id, other image size: every embedding changes, yet the id alone matched
    model_dir = served[3]
    assert Method.load(model_dir).preprocess_id_ == "short8-crop8"
    other = TinyBackbone(size=4)
    assert other.id == TinyBackbone().id
    with pytest.raises(ConfigError, match=r"preprocessed as 'short8-crop8', but the backbone 'tiny:seed0' "
                                          r"preprocesses them as 'short4-crop4'"):
        create_app(model_dir, backbone=other)
    # a model saved before preprocessing was recorded is still served (checked on the id)
    old = tmp_path / "old"
    import shutil

    shutil.copytree(model_dir, old)
    meta = json.loads((old / "model.json").read_text())
    del meta["preprocess_id"]
    (old / "model.json").write_text(json.dumps(meta))
    assert Method.load(old).preprocess_id_ == ""
    create_app(old, backbone=TinyBackbone())


def test_token_required_when_set_and_when_not_on_loopback(served):
    _, _, images, model_dir = served
    client = TestClient(create_app(model_dir, backbone=TinyBackbone(), token=TOKEN))
    assert client.get("/model").status_code == 401
    assert "Authorization: Bearer" in client.get("/model").json()["detail"]
    assert client.get("/model", headers={"Authorization": "Bearer wrong-token"}).status_code == 403
    ok = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/model", headers=ok).status_code == 200
    image = (images / "cat" / "0.png").read_bytes()
    assert client.post("/predict", content=image).status_code == 401
    assert client.post("/predict", content=image, headers=ok).status_code == 200
    assert client.get("/").status_code == 200  # the page holds no data; it asks for the token

    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert token_for_host(host, {}) is None
    for host in ("0.0.0.0", "192.168.1.5", "::", "example.com"):
        with pytest.raises(ConfigError, match=r"exposes the model.*set \$CONCEPTLENS_TOKEN"):
            token_for_host(host, {})
        assert token_for_host(host, {"CONCEPTLENS_TOKEN": TOKEN}) == TOKEN
    with pytest.raises(ConfigError, match="at least 16"):
        token_for_host("0.0.0.0", {"CONCEPTLENS_TOKEN": "short"})
    assert token_for_host("127.0.0.1", {"CONCEPTLENS_TOKEN": TOKEN}) == TOKEN  # set: also on loopback


def test_loopback_service_answers_only_to_loopback_host_names(served):
    from conceptlens.service.app import LOOPBACK_NAMES

    model_dir = served[3]
    app = create_app(model_dir, backbone=TinyBackbone(), allowed_hosts=LOOPBACK_NAMES)
    assert TestClient(app, base_url="http://localhost:8000").get("/model").status_code == 200
    assert TestClient(app, base_url="http://[::1]:8000").get("/model").status_code == 200
    r = TestClient(app, base_url="http://rebound.example").get("/model")
    assert r.status_code == 400 and "not allowed" in r.json()["detail"]


def test_requests_from_another_site_that_cost_work_are_refused(served):
    client, _, images, model_dir = served
    image = (images / "cat" / "0.png").read_bytes()
    image_id = client.post("/predict", content=image).json()["image_id"]  # no Origin (curl): served
    evil = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}
    for r in (client.post("/predict", content=image, headers=evil),
              client.post("/predict", files={"image": ("x.png", image, "image/png")}, headers=evil),
              client.post("/intervene", json={"image_id": image_id, "values": {}}, headers=evil),
              client.post("/edit", json={"changes": [{"concept": "stripes"}]}, headers=evil),
              client.post("/predict", content=image, headers={"Origin": "http://evil.example"}),
              client.post("/predict", content=image, headers={"Sec-Fetch-Site": "cross-site"}),
              client.post("/predict", content=image, headers={"Origin": "null"}),  # a sandboxed page
              # another port of the same host is another site's page (same-site, not same-origin)
              client.post("/predict", content=image, headers={"Origin": "http://testserver:8080",
                                                              "Sec-Fetch-Site": "same-site"})):
        assert r.status_code == 403, r.text
        assert "Refused a POST from another site" in r.json()["detail"]
        assert "start the service with --allow-origin" in r.json()["detail"]
    assert "--allow-origin http://evil.example " in client.post("/predict", headers=evil).json()["detail"]
    same = {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}  # the explorer's own page
    assert client.post("/predict", content=image, headers=same).status_code == 200
    assert client.post("/predict", content=image, headers={"Sec-Fetch-Site": "none"}).status_code == 200
    assert client.get("/model", headers=evil).status_code == 200  # reading is not refused here
    assert client.get("/images/0", headers=evil).status_code == 200
    # an explicitly allowed origin is served, and told so by CORS headers it can read the answer
    allowed = TestClient(create_app(model_dir, backbone=TinyBackbone(),
                                    allowed_origins=["http://evil.example/"]))
    r = allowed.post("/predict", content=image, headers=evil)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://evil.example"
    other_port = {"Origin": "http://evil.example:81"}
    assert allowed.post("/predict", content=image, headers=other_port).status_code == 403
    for bad in ("*", "evil.example", "http://evil.example/path", "ftp://evil.example"):
        with pytest.raises(ConfigError, match=r"--allow-origin .* is not an origin.*scheme://host\[:port\]"):
            create_app(model_dir, backbone=TinyBackbone(), allowed_origins=[bad])


def _serve_parser():
    from conceptlens.cli import serve_commands

    parser = argparse.ArgumentParser(prog="conceptlens")
    serve_commands.add_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def test_serve_command_refuses_a_public_host_without_a_token(tmp_path, monkeypatch):
    monkeypatch.delenv("CONCEPTLENS_TOKEN", raising=False)
    args = _serve_parser().parse_args(["serve", str(tmp_path / "no-model"), "--host", "0.0.0.0"])
    assert (args.host, args.port) == ("0.0.0.0", 8000)
    with pytest.raises(ConfigError, match=r"--host 0.0.0.0 exposes the model"):
        args.func(args)  # before the model or the backbone is even looked at
    args = _serve_parser().parse_args(["serve", str(tmp_path / "no-model"), "--allow-origin", "*"])
    with pytest.raises(ConfigError, match=r"--allow-origin '\*' is not an origin"):
        args.func(args)


@pytest.mark.parametrize("value, message", [("nan", "'nan' is not a finite number"),
                                            ("inf", "'inf' is not a finite number"),
                                            ("0", "'0' must be a number > 0"), ("-1", "'-1' must be a number > 0"),
                                            ("1e300", "'1e300' MiB is over 1 TiB"), ("big", "'big' is not a number")])
def test_serve_max_upload_mb_must_be_a_sensible_size(tmp_path, value, message, capsys):
    # nan and inf were a ValueError / OverflowError traceback
    with pytest.raises(SystemExit) as e:
        _serve_parser().parse_args(["serve", str(tmp_path), f"--max-upload-mb={value}"])
    assert e.value.code == 2 and f"--max-upload-mb: {message}" in capsys.readouterr().err


def test_real_uvicorn_over_http(served):
    import httpx

    client, _, images, _ = served
    data = (images / "dog" / "0.png").read_bytes()
    with ServerThread(client.app) as url:
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
        r = httpx.post(f"{url}/predict", content=data, headers={"Content-Type": "image/png"}, timeout=30)
        assert r.status_code == 200
        assert r.json() == client.post("/predict", content=data).json()
        assert httpx.post(f"{url}/predict", content=b"junk", timeout=30).status_code == 400
        assert httpx.get(f"{url}/model", timeout=30).status_code == 200  # up after the bad request
    with pytest.raises(httpx.ConnectError):  # stopped
        httpx.get(f"{url}/model", timeout=5)


def test_serve_command_binds_loopback_and_serves(served, monkeypatch, capsys):
    """`conceptlens serve` end to end but for the backbone (a stand-in for --backbone) and the
    blocking run (a thread that makes one request, then stops uvicorn)."""
    import httpx
    import uvicorn

    import conceptlens.backbones
    import conceptlens.service.app as service_app

    _, _, images, model_dir = served
    monkeypatch.delenv("CONCEPTLENS_TOKEN", raising=False)
    monkeypatch.setattr(conceptlens.backbones, "get_backbone",
                        lambda spec: TinyBackbone() if spec == "tiny" else None)
    seen = {}

    def run_briefly(app, sock, log_level="info"):
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.02)
        url = service_app.url_of(sock)
        seen["model"] = httpx.get(f"{url}/model", timeout=30)
        seen["images"] = httpx.get(f"{url}/images", timeout=30)
        seen["rebound"] = httpx.get(f"{url}/model", headers={"Host": "evil.example"}, timeout=30)
        seen["cross"] = [httpx.post(f"{url}/predict", headers={"Origin": o}, timeout=30)
                         for o in ("http://evil.example", "https://b.example:8443")]
        server.should_exit = True
        thread.join(30)

    monkeypatch.setattr(service_app, "run", run_briefly)
    args = _serve_parser().parse_args(["serve", str(model_dir), "--port", "0", "--backbone", "tiny",
                                       "--images", str(images), "--allow-origin", "http://a.example",
                                       "--allow-origin", "https://b.example:8443"])
    assert args.allow_origin == ["http://a.example", "https://b.example:8443"]
    assert args.host == "127.0.0.1"  # the default binds loopback only
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "serving model at http://127.0.0.1:" in out and "/docs" in out and ":0/" not in out
    assert seen["model"].json()["classes"] == list(CLASSES)
    assert len(seen["images"].json()["images"]) == 15
    assert seen["rebound"].status_code == 400
    assert [r.status_code for r in seen["cross"]] == [403, 400]  # allowed: on to "No image"
