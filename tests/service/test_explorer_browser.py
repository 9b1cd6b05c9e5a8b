"""The explorer page in a real browser: headless Debian Chromium driven by selenium, against a
live uvicorn on loopback. It uploads an image, moves a concept with the keyboard and switches one
off (to its served "absent" value), and checks that the prediction the page shows is the one the
API gives for the same values."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'conceptlens[serve]')")
pytest.importorskip("selenium", reason="selenium is not installed (pip install selenium)")


from conceptlens.service import ServerThread, create_app
from conceptlens.testing import SERVICE_CONCEPTS as CONCEPTS
from conceptlens.testing import TinyBackbone
from conceptlens.testing import service_model as make_model

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1000"]


def _text(pred: dict) -> str:
    """What explorer.js's predictionText shows for an API answer."""
    return f"{pred['predicted']} \u2014 {100 * pred['probability']:.1f}%"


@pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                    reason="Debian's chromium is not installed with its driver "
                           "(apt-get install chromium chromium-driver)")
def test_explorer_upload_move_a_concept_and_switch_one_off(tmp_path):
    import httpx
    from PIL import Image
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    model_dir, images = make_model(tmp_path)
    upload = tmp_path / "upload.png"  # not among the examples: the page must send it itself
    rng = np.random.default_rng(7)
    pixels = np.clip(np.array([40, 60, 210]) + rng.normal(0, 30, (20, 20, 3)), 0, 255)
    Image.fromarray(pixels.astype(np.uint8)).save(upload)

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})

    app = create_app(model_dir, backbone=TinyBackbone(), images=images)
    with ServerThread(app) as url:
        api = httpx.Client(base_url=url, timeout=30)
        driver = webdriver.Chrome(options=options, service=Service(DRIVER))
        try:
            wait = WebDriverWait(driver, 30)
            driver.get(url + "/")
            wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "ok")
            shown = driver.find_element(By.ID, "prediction")
            # the first example is classified on load, as the API classifies it
            first = api.post("/predict", content=(images / "cat" / "0.png").read_bytes()).json()
            wait.until(lambda d: shown.text == _text(first))
            assert len(driver.find_elements(By.CSS_SELECTOR, "#gallery button")) == 15

            driver.find_element(By.ID, "upload").send_keys(str(upload))
            wait.until(lambda d: d.find_element(By.ID, "preview").get_attribute("alt") == "upload.png")
            base = api.post("/predict", content=upload.read_bytes()).json()
            wait.until(lambda d: shown.text == _text(base)
                       and "upload.png" in d.find_element(By.ID, "status").text)
            rows = driver.find_elements(By.CSS_SELECTOR, "#concepts .concept")
            assert rows and {r.get_attribute("data-concept") for r in rows} == set(CONCEPTS)

            # move the concept that contributes most against the predicted class, with the keyboard
            # (Home / End: the slider's minimum / maximum)
            row = rows[0]
            concept = row.get_attribute("data-concept")
            top = base["explanations"][0]["contributions"][0]
            assert concept == top["concept"]
            slider = row.find_element(By.CSS_SELECTOR, "input[type=range]")
            slider.send_keys(Keys.HOME if top["weight"] > 0 else Keys.END)
            value = float(slider.get_attribute("value"))
            # (the browser snaps the value to its step, in the last digits)
            assert value == pytest.approx(float(slider.get_attribute("min" if top["weight"] > 0 else "max")))
            moved = api.post("/intervene", json={"image_id": base["image_id"],
                                                 "values": {concept: value}}).json()
            assert _text(moved) != _text(base)  # the move matters, so the check below can fail
            wait.until(lambda d: shown.text == _text(moved))
            assert "1 concept value(s) set" in driver.find_element(By.ID, "intervention-note").text

            # then switch a second concept off on top of the first: "off" sets the concept's
            # absent value that GET /model serves (not 0), and the page says which
            described = api.get("/model").json()
            absent = dict(zip(described["concepts"], described["absent"], strict=True))
            other = rows[1].get_attribute("data-concept")
            assert absent[other] != 0.0
            assert described["absent_rule"] in driver.find_element(By.ID, "off-note").text
            assert f"off = {absent[other]:.3f}" in rows[1].text
            rows[1].find_element(By.CSS_SELECTOR, "input[type=checkbox]").click()
            both = api.post("/intervene", json={"image_id": base["image_id"],
                                                "values": {concept: value, other: absent[other]}}).json()
            zeroed = api.post("/intervene", json={"image_id": base["image_id"],
                                                  "values": {concept: value, other: 0.0}}).json()
            assert both["explanations"][0]["logit"] != zeroed["explanations"][0]["logit"]
            wait.until(lambda d: shown.text == _text(both)
                       and "2 concept value(s) set" in d.find_element(By.ID, "intervention-note").text)
            # the value the page sent is the one the service used: its answer's activation
            assert rows[1].find_element(By.TAG_NAME, "output").text == f"{absent[other]:.3f}"
            assert both["activations"][other] == absent[other]

            driver.find_element(By.ID, "reset").click()
            wait.until(lambda d: shown.text == _text(base))

            shot = tmp_path / "explorer.png"
            assert driver.save_screenshot(str(shot))
            print(f"explorer screenshot: {shot}")
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
            errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
            assert errors == []  # no console errors, no failed requests
        finally:
            driver.quit()
            api.close()
