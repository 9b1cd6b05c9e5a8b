"""The explorer: a plain HTML and JavaScript page (static/, no build step) served at `/`.

Pick an example image (thumbnails) or upload one, see the prediction and the concept bars, move a
concept's value or switch it off and watch the prediction change (POST /intervene), browse each
class's weights, and apply an edit (intervene/edits.py) to download the edited model with its log.
This module adds the page's routes to the app: the page and its files, the example images and
their thumbnails, `/weights` and `/edit` (a zip of the edited model folder and its edit log).

The example images may come with a model folder received from someone else, so they must not
expose local files: symbolic links in the folder are never followed (left out of the listing,
and refused if one replaces a listed file later), a file is served only while it resolves inside
the folder, and only when its content is one of the decoded image formats (data/images.py).
"""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations at runtime
import io
import json
import logging
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Annotated

from ..data.images import IMAGE_SUFFIXES, image_format
from ..errors import ConfigError, DataError

log = logging.getLogger("conceptlens")
STATIC = Path(__file__).parent / "static"
MAX_IMAGES = 1000  # the page lists them all as thumbnails
THUMBNAIL = 112  # pixels, the longer side


class ExampleRefused(DataError):
    """A listed example that is no longer a plain image file inside the images folder."""

    status = 403


def find_images(root: Path) -> list[Path]:
    """The image files under `root` (sorted; hidden files and folders left out), at most MAX_IMAGES.
    Symbolic links (to files or folders) are left out with a warning: they could point anywhere."""
    if not root.is_dir():
        raise ConfigError(f"--images {root} is not a folder; give a folder of example images.")
    found, links = [], []
    for folder, subfolders, files in os.walk(root):  # never descends into a linked folder
        links += [Path(folder, d) for d in subfolders if Path(folder, d).is_symlink()]
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        for name in files:
            path = Path(folder, name)
            if name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if path.is_symlink():
                links.append(path)
            elif path.is_file():
                found.append(path)
    found.sort()
    if links:
        log.warning("%s: left out %d symbolic link(s), e.g. %s: the explorer serves only files inside "
                    "the folder; copy the images in instead.", root, len(links), links[0].relative_to(root))
    if len(found) > MAX_IMAGES:
        log.warning("%s holds %d images; the explorer lists the first %d.", root, len(found), MAX_IMAGES)
    return found[:MAX_IMAGES]


def edited_zip(service, changes: list[dict], note: str = "") -> tuple[bytes, str]:
    """(zip bytes, file name): the edited model's folder (model.json with its edit log,
    weights.safetensors) and edit_log.json, under one folder named after the model."""
    edited = service.edited(changes, note)
    # a plain file name: it goes into a Content-Disposition header
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", service.model_dir.name).strip("._") or "model"
    name = f"{name}-edited"
    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory() as tmp:
        folder = edited.save(Path(tmp) / name)
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(folder.iterdir()):
                z.write(f, f"{name}/{f.name}")
            z.writestr(f"{name}/edit_log.json", json.dumps(edited.edit_log_, indent=2))
    return buffer.getvalue(), f"{name}.zip"


def add_explorer(app, service, auth: list, change_model) -> None:
    """Add the explorer's routes to `app` (`auth`: the API's dependencies; `change_model`: the
    pydantic model of one edit change)."""
    from fastapi import Path as PathParam
    from fastapi import Query
    from fastapi.responses import HTMLResponse, Response
    from fastapi.staticfiles import StaticFiles
    from pydantic import BaseModel, ConfigDict, Field
    from starlette.concurrency import run_in_threadpool

    thumbnails: dict[int, bytes] = {}

    class EditRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        changes: list[change_model] = Field(description="applied in order; at most 10,000")
        note: str = Field("", description="recorded in the edit log of every change")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "explorer.html").read_text(encoding="utf-8"))

    def example(index: int) -> Path:
        if not 0 <= index < len(service.images):
            raise ConfigError(f"No example image {index}; there are {len(service.images)} "
                              "(GET /images lists them).")
        return service.images[index]

    @app.get("/images", dependencies=auth, summary="The example images the explorer offers")
    def images() -> dict:
        root = service.images_root
        return {"folder": None if root is None else root.name,
                "images": [{"index": i, "name": str(p.relative_to(root))}
                           for i, p in enumerate(service.images)]}

    def example_bytes(index: int) -> tuple[bytes, str]:
        """(file bytes, MIME type) of example `index`, checked again now: the folder may have
        changed since it was listed."""
        path = example(index)
        root = service.images_root.resolve()
        if path.is_symlink() or not path.resolve().is_relative_to(root) or not path.is_file():
            raise ExampleRefused(f"Example image {index} ({path.name}) is no longer a plain file inside "
                                 "the images folder (a symbolic link, or moved); it is not served.")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ExampleRefused(f"Example image {index} cannot be read: {e.strerror or e}.") from e
        try:
            return data, image_format(data)[1]
        except DataError as e:
            raise ExampleRefused(f"Example image {index} ({path.name}) is not served: it is not an "
                                 f"image in a format the explorer shows ({e}).") from e

    @app.get("/images/{index}", dependencies=auth, summary="An example image's file")
    def image(index: Annotated[int, PathParam(ge=0)]) -> Response:
        data, kind = example_bytes(index)
        return Response(data, media_type=kind)

    def thumbnail_of(index: int) -> bytes:
        from PIL import Image

        if index not in thumbnails:
            im = Image.fromarray(service.decode(example_bytes(index)[0]))
            im.thumbnail((THUMBNAIL, THUMBNAIL))
            out = io.BytesIO()
            im.save(out, "PNG")
            thumbnails[index] = out.getvalue()
        return thumbnails[index]

    @app.get("/images/{index}/thumbnail", dependencies=auth, summary="An example image, small (PNG)")
    async def thumbnail(index: Annotated[int, PathParam(ge=0)]) -> Response:
        return Response(await run_in_threadpool(thumbnail_of, index), media_type="image/png")

    @app.get("/weights", dependencies=auth, summary="A class's non-zero concept weights, largest first")
    def weights(cls: Annotated[str, Query(alias="class")],
                top: Annotated[int, Query(ge=0, description="0: all")] = 50) -> dict:
        return service.weights(cls, top)

    @app.post("/edit", dependencies=auth, response_class=Response,
              responses={200: {"content": {"application/zip": {}},
                               "description": "the edited model folder and edit_log.json, zipped"}},
              summary="Apply edits to the model's weights and download the edited model")
    async def edit(body: EditRequest) -> Response:
        changes = [c.model_dump() for c in body.changes]
        data, name = await run_in_threadpool(edited_zip, service, changes, body.note)
        return Response(data, media_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})
