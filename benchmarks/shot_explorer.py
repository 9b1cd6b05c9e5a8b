"""A screenshot of the explorer for the README, taken in headless Debian Chromium (selenium).

    .venv/bin/python benchmarks/shot_explorer.py [--model runs/demo/models/label_free]
        [--backbone offline] [--images FOLDER] [--out benchmarks/results/explorer.png]

Serves the model on 127.0.0.1 (a free port) with example images (default: the run folder's
images/, which `conceptlens demo` writes; else two Fashion-MNIST test images per class, written to
a temporary folder named by class), opens the page, picks an
example, switches off the concept that contributes most to its prediction, and saves the page.
Needs `apt-get install chromium chromium-driver` and `pip install selenium`.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np


def example_images(folder: Path, per_class: int = 2) -> Path:
    from PIL import Image

    from conceptlens.data import load_fashion_mnist

    data = load_fashion_mnist(split="test")
    labels = np.asarray(data.labels)
    for c, name in enumerate(data.classes):
        for j, i in enumerate(np.flatnonzero(labels == c)[:per_class]):
            path = folder / name.replace("/", "-") / f"{j}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(data.images.decode(int(i), data.images.read(int(i)))).save(path)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="runs/demo/models/label_free")
    ap.add_argument("--backbone", default="offline")
    ap.add_argument("--cache-dir")
    ap.add_argument("--images", help="example images (default: Fashion-MNIST test images)")
    ap.add_argument("--pick", type=int, default=2, help="which example to show")
    ap.add_argument("--out", default="benchmarks/results/explorer.png")
    args = ap.parse_args()

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from conceptlens.service import ServerThread, create_app
    from conceptlens.service.app import default_images

    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_path:
        raise SystemExit("needs Debian's chromium and its driver: apt-get install chromium chromium-driver")
    with tempfile.TemporaryDirectory() as tmp:
        # the run's own examples where the model is a demo run's (runs/demo/images), else our own
        images = (Path(args.images) if args.images else None if default_images(Path(args.model))
                  else example_images(Path(tmp) / "fashion-mnist-test"))
        app = create_app(args.model, backbone=args.backbone, images=images, cache_dir=args.cache_dir)
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1150", "--hide-scrollbars",
                     f"--user-data-dir={Path(tmp) / 'profile'}"):
            options.add_argument(flag)
        with ServerThread(app) as url:
            driver = webdriver.Chrome(options=options, service=Service(driver_path))
            try:
                wait = WebDriverWait(driver, 120)
                driver.get(url + "/")
                wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "ok")
                buttons = driver.find_elements(By.CSS_SELECTOR, "#gallery button")
                if buttons:
                    button = buttons[min(args.pick, len(buttons) - 1)]
                    name = button.get_attribute("title")
                    button.click()
                    wait.until(lambda d: d.find_element(By.ID, "status").text.startswith(name + ":"))
                before = driver.find_element(By.ID, "prediction").text
                rows = driver.find_elements(By.CSS_SELECTOR, "#concepts .concept")
                if rows:  # show an intervention: the top concept switched off
                    rows[0].find_element(By.CSS_SELECTOR, "input[type=checkbox]").click()
                    wait.until(lambda d: "set by you" in d.find_element(By.ID, "intervention-note").text)
                print(f"prediction {before!r} -> {driver.find_element(By.ID, 'prediction').text!r}")
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(args.out)
                print(f"-> {args.out}")
            finally:
                driver.quit()


if __name__ == "__main__":
    main()
