"""`conceptlens serve`: a saved model over HTTP (FastAPI), with its explorer page at `/`.

Endpoints (OpenAPI schema and a try-it page at /docs):
- `POST /predict`: an image as the raw request body or a multipart field `image`; returns the
  classes with probabilities and, for each class asked (`classes=`, default the predicted one),
  every concept's contribution (activation x weight x head scale), which with `intercept` and
  `residual` sums exactly to that class's `logit`. It also returns an `image_id` for /intervene.
- `POST /intervene`: JSON {"image_id", "values": {concept: value}, "classes", "edit"}: the
  prediction with those concept activations set by the caller (and, with "edit", of an edited
  model), in the same shape as /predict. An edit (here or at /edit) holds at most 10,000 changes
  (intervene/edits.py, MAX_CHANGES; more is a 422), applied in time linear in their number.
- `GET /model`: classes, concepts, NEC, backbone id, method, edit log, and each concept's
  "absent" value (its activation on images without it, methods/absent.py, with `absent_rule`
  saying how it was found): what the explorer's "off" sets.
- the explorer's routes (explorer.py): the page, example images, per-class weights, `/edit`.

Safe by default: `serve` binds 127.0.0.1 and accepts only loopback Host headers there (a web page
cannot reach the service by rebinding a domain name to 127.0.0.1); binding any other address needs
a token in $CONCEPTLENS_TOKEN, which every API call must then send as `Authorization: Bearer`.
A POST (or PUT, PATCH, DELETE) from another site's web page is refused with 403 unless its
origin is allowed (origin.py). Request bodies over `max_upload_bytes` get 413 before they are
read; images over `max_pixels` are refused from their header (a decompression bomb is a 413, not
an out-of-memory crash); a body in an image format not decoded is a 415, one that is not an image
a 400, an unknown concept or class name a 422 naming the closest match. Every
error answers with {"detail": message} and the service stays up.
"""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations at runtime,
# and they name classes local to create_app
import collections
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import numpy as np

from .._version import __version__
from ..data.images import FORMATS_SHOWN, _TooLarge, check_max_pixels, decode_file_bytes
from ..errors import ConfigError, DataError, ImageFormatError, closest
from ..intervene import apply_edits
from . import origin
from .explorer import add_explorer, find_images
from .limits import DEFAULT_MAX_PIXELS, DEFAULT_MAX_UPLOAD_BYTES

TOKEN_ENV = "CONCEPTLENS_TOKEN"
MIN_TOKEN_LENGTH = 16
IMAGE_CACHE_SIZE = 256  # encoded uploads kept for /intervene (a few KB each)
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


class UnknownImage(DataError):
    """An /intervene image_id the service does not hold (never sent, or evicted)."""

    status = 404


class TooLarge(DataError):
    """An upload over the byte or pixel cap."""

    status = 413


class UnsupportedImage(ImageFormatError):
    """An upload in a format the service does not decode (data/images.py, IMAGE_FORMATS)."""

    status = 415


# -- binding and tokens -----------------------------------------------------------------
def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # any other name may resolve to a public address


def token_for_host(host: str, environ=None) -> str | None:
    """The bearer token the service requires: $CONCEPTLENS_TOKEN where set (then also on
    loopback); ConfigError when `host` is not a loopback address and no usable token is set."""
    environ = os.environ if environ is None else environ
    token = environ.get(TOKEN_ENV) or None
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"${TOKEN_ENV} is {len(token)} characters long; use a random secret of at "
                          f"least {MIN_TOKEN_LENGTH}, e.g. export {TOKEN_ENV}=$(python -c "
                          "'import secrets; print(secrets.token_urlsafe(24))').")
    if token is None and not is_loopback(host):
        raise ConfigError(f"--host {host} exposes the model beyond this machine, which needs a token: "
                          f"set ${TOKEN_ENV} to a random secret (at least {MIN_TOKEN_LENGTH} characters), "
                          "which clients send as 'Authorization: Bearer <token>'. Or keep the default "
                          "--host 127.0.0.1.")
    return token


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on host:port (port 0: a free one); ConfigError when taken."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"--port must be 0..65535 (0 picks a free port); got {port!r}.")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise ConfigError(f"--host {host!r} is not an address of this machine: {e}.") from e
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise ConfigError(f"Cannot listen on {host}:{port}: {e.strerror or e}. Another program may use "
                          "the port; pass another --port, or --port 0 for a free one.") from e
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class ServerThread:
    """uvicorn serving `app` from a background thread (tests, benchmarks, screenshots):
    `with ServerThread(app) as url: ...` starts it on 127.0.0.1 and a free port and stops it."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0):
        self.app, self.host, self.port, self.timeout = app, host, port, timeout

    def __enter__(self) -> str:
        import uvicorn

        self.sock = bind_socket(self.host, self.port)
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="conceptlens-serve", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + self.timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError("uvicorn did not start; see its log above")
            time.sleep(0.02)
        self.url = url_of(self.sock)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(self.timeout)
        self.sock.close()


# -- the model side, without HTTP ---------------------------------------------------------
def _check_names(kind: str, names, known) -> None:
    known_set = set(known)
    for name in names:
        if name not in known_set:
            listed = list(known)
            shown = ", ".join(map(repr, listed[:20])) + (f", ... ({len(listed)} in all)"
                                                         if len(listed) > 20 else "")
            raise ConfigError(f"Unknown {kind} {name!r}: it is not one of the model's {kind}s."
                              f"{closest(name, listed)} Known: {shown} (GET /model lists them all).")


def default_images(model_dir: Path) -> Path | None:
    """The explorer's examples when none are named: `model_dir/images`, else, for a model of a run
    folder (RUN/models/<method>), that run's `images/` (the demo writes one)."""
    if (model_dir / "images").is_dir():
        return model_dir / "images"
    run = model_dir.parent.parent
    if model_dir.parent.name == "models" and (run / "images").is_dir():
        from ..runs.record import is_run_folder  # deferred: the runs load torch

        if is_run_folder(run):
            return run / "images"
    return None


class ModelService:
    """A saved model and its backbone: the work behind every endpoint, callable in-process."""

    def __init__(self, model_dir: str | Path, backbone=None, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 images: str | Path | None = None, cache_dir: str | Path | None = None,
                 image_cache: int = IMAGE_CACHE_SIZE):
        from ..methods import Method  # deferred: torch, which this module's import leaves out

        self.model_dir = Path(model_dir)
        self.model = Method.load(self.model_dir)
        if backbone is None or isinstance(backbone, str):
            from ..backbones import open_backbone  # deferred: torch

            # the model's own backbone (its recorded full spec) unless another is named
            backbone = open_backbone(backbone or getattr(self.model, "backbone_spec_", "") or "offline",
                                     cache_dir)
        if hasattr(backbone, "lookup_ids"):
            raise ConfigError(f"Backbone {backbone.id!r} looks features up by item id and cannot encode "
                              "uploaded images; serve the model with the backbone that computes them "
                              "(--backbone offline, hf:..., open_clip:...).")
        self.model.check_backbone(backbone)
        self.backbone = backbone
        self.max_pixels = check_max_pixels(max_pixels)
        found = images is None and default_images(self.model_dir)
        if found:
            images = found
            if images.is_symlink():  # a model folder from elsewhere must not expose local files
                raise ConfigError(f"{images} is a symbolic link (to {images.resolve()}); the explorer "
                                  "serves only a real images folder inside the model folder. If you "
                                  "trust that folder, pass it explicitly: --images PATH.")
        self.images_root = None if images is None else Path(images)
        self.images = find_images(self.images_root) if self.images_root is not None else []
        # encoded uploads by content hash, for /intervene (0: none kept; the load test's setting for
        # measuring the whole encode path on repeated images)
        self.image_cache = image_cache
        self._cache: collections.OrderedDict[str, object] = collections.OrderedDict()
        self._lock = threading.Lock()

    # -- encoding ----------------------------------------------------------------------
    def decode(self, data: bytes) -> np.ndarray:
        if not data:
            raise DataError("No image: send the image file's bytes as the request body, or as the "
                            "multipart field 'image'.")
        try:
            return decode_file_bytes(data, self.max_pixels)
        except _TooLarge as e:
            raise TooLarge(f"The image is {e}, over this service's cap of {self.max_pixels or 0:,} pixels "
                           "(a guard against decompression bombs). Send a smaller image, or start the "
                           "service with a larger --max-pixels.") from e
        except ImageFormatError as e:
            raise UnsupportedImage(f"The upload holds {e}. Convert it to PNG and send it again.") from e
        except DataError as e:
            reason = re.sub(r" <_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(e))  # PIL's, says nothing
            raise DataError(f"The upload is not an image this service can read ({reason}); send a "
                            f"{FORMATS_SHOWN} file.") from e

    def encode(self, data: bytes):
        """(image_id, a one-row FeatureBundle); the bundle is kept for /intervene."""
        import torch

        from ..features import FeatureBundle  # deferred with torch

        image_id = hashlib.sha256(data).hexdigest()
        with self._lock:
            if image_id in self._cache:
                self._cache.move_to_end(image_id)
                return image_id, self._cache[image_id]
        pixels = self.decode(data)
        with torch.inference_mode():
            out = self.backbone.encode_images([pixels])
        bundle = FeatureBundle([image_id], np.zeros(1, np.int64), tuple(self.model.classes_),
                               np.asarray(out["embedding"], np.float32), out.get("features"),
                               self.backbone.id, embedding_norm=out.get("embedding_norm"))
        with self._lock:
            self._cache[image_id] = bundle
            while len(self._cache) > self.image_cache:
                self._cache.popitem(last=False)
        return image_id, bundle

    def bundle(self, image_id: str):
        with self._lock:
            if image_id not in self._cache:
                raise UnknownImage(f"Unknown or expired image_id {image_id[:16]!r}: POST the image to "
                                   f"/predict first (the service keeps the last {self.image_cache}).")
            self._cache.move_to_end(image_id)
            return self._cache[image_id]

    # -- answers -------------------------------------------------------------------------
    def predict(self, data: bytes, classes=None, top: int = 10, concepts_top: int | None = None) -> dict:
        image_id, bundle = self.encode(data)
        return self.answer(image_id, bundle, self.model, None, classes, top, concepts_top)

    def intervene(self, image_id: str, values: dict[str, float], classes=None, top: int = 10,
                  concepts_top: int | None = None, edit: list[dict] | None = None) -> dict:
        _check_names("concept", values, self.model.concepts_)
        bad = {c: v for c, v in values.items()
               if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v)}
        if bad:
            raise ConfigError(f"Concept values must be finite numbers; got {bad}.")
        model = self.edited(edit) if edit else self.model
        return self.answer(image_id, self.bundle(image_id), model, values, classes, top, concepts_top)

    def answer(self, image_id, bundle, model, values, classes, top, concepts_top) -> dict:
        from ..methods.base import softmax  # deferred: torch

        if classes:
            _check_names("class", classes, model.classes_)
        A = model.transform(bundle).astype(np.float64)
        if values:
            A = A.copy()
            for concept, value in values.items():
                A[:, model.concepts_.index(concept)] = float(value)
        logits = np.asarray(model.head(A, bundle), np.float64)[0]
        probs = softmax(logits[None])[0]
        residual = np.broadcast_to(np.asarray(model.residual(bundle), np.float64), (1, len(logits)))[0]
        intercept = model.intercept().astype(np.float64)
        order = np.argsort(-probs, kind="stable")
        shown = order if not top else order[:top]
        predicted = int(np.argmax(logits))
        targets = [model.classes_.index(c) for c in classes] if classes else [predicted]
        explanations = []
        for c in targets:
            contrib = model.head_scale * A[0] * model.class_weights_[c].astype(np.float64)
            used = np.flatnonzero(model.class_weights_[c])
            used = used[np.argsort(-np.abs(contrib[used]), kind="stable")]
            listed = used if concepts_top is None else used[:concepts_top]
            explanations.append({
                "class": model.classes_[c], "logit": float(logits[c]), "intercept": float(intercept[c]),
                "residual": float(residual[c]),
                "contributions": [{"concept": model.concepts_[k], "activation": float(A[0, k]),
                                   "weight": float(model.class_weights_[c, k]),
                                   "contribution": float(contrib[k])} for k in listed],
                "others": float(contrib[used].sum() - contrib[listed].sum()),
            })
        return {
            "image_id": image_id, "predicted": model.classes_[predicted],
            "probability": float(probs[predicted]),
            "classes": [{"class": model.classes_[c], "probability": float(probs[c]),
                         "logit": float(logits[c])} for c in shown],
            "explanations": explanations,
            "activations": {name: float(a) for name, a in zip(model.concepts_, A[0], strict=True)},
            "values": dict(values or {}),
        }

    def absent(self) -> tuple[list[float], str]:
        """(each concept's "absent" value, the rule that gave it): what the explorer's "off" sets.
        The model's recorded values (methods/absent.py); 0 for a folder saved before they were."""
        from ..methods.absent import RULE, absent_values  # deferred: methods load torch

        values = absent_values(self.model)
        if values is None:
            return [0.0] * len(self.model.concepts_), ("0: this model folder was saved before absent values "
                                                       "were recorded (refit the model to record them)")
        return [float(v) for v in values], RULE

    def describe(self) -> dict:
        m = self.model
        absent, rule = self.absent()
        return {"model": self.model_dir.name, "method": m.name, "backbone_id": m.backbone_id_,
                "classes": list(m.classes_), "concepts": list(m.concepts_), "nec": m.nec_,
                "head_scale": float(m.head_scale), "edit_log": list(getattr(m, "edit_log_", [])),
                "images": len(self.images), "absent": absent, "absent_rule": rule}

    def weights(self, cls: str, top: int | None = 50) -> dict:
        _check_names("class", [cls], self.model.classes_)
        c = self.model.classes_.index(cls)
        w = self.model.class_weights_[c]
        used = np.flatnonzero(w)
        used = used[np.argsort(-np.abs(w[used]), kind="stable")]
        listed = used if not top else used[:top]
        return {"class": cls, "intercept": float(self.model.intercept()[c]), "non_zero": len(used),
                "weights": [{"concept": self.model.concepts_[k], "weight": float(w[k])} for k in listed]}

    def edited(self, changes: list[dict], note: str = ""):
        """The model after `changes` [{concept, factor, classes}] in order (intervene/edits.py:
        at most MAX_CHANGES, applied in linear time); every name is checked before any change."""
        if not changes:
            raise ConfigError("An edit needs at least one change: {'concept': NAME, 'factor': 0 to remove "
                              "or e.g. 2 to double its weight, 'classes': [...] or null for all}.")
        _check_names("concept", [ch["concept"] for ch in changes], self.model.concepts_)
        _check_names("class", [c for ch in changes for c in ch.get("classes") or []], self.model.classes_)
        return apply_edits(self.model, [ch | {"note": ch.get("note") or note} for ch in changes])


# -- HTTP ---------------------------------------------------------------------------------
class _Guard:
    """ASGI middleware: 413 for bodies over `limit` (from Content-Length before reading, or while
    streaming), 400 for a Host header not in `hosts` (None: any), 403 for a request from another
    site that changes state or costs work (origin.py; `origins`: the parsed allowed origins)."""

    def __init__(self, app, limit: int, hosts: tuple[str, ...] | None, origins: frozenset = frozenset()):
        self.app, self.limit, self.hosts, self.origins = app, limit, hosts, origins

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from fastapi import HTTPException
        from starlette.responses import JSONResponse

        headers = dict(scope["headers"])
        if self.hosts is not None:
            host = headers.get(b"host", b"").decode("latin-1")
            name = host[1:].partition("]")[0] if host.startswith("[") else host.partition(":")[0]
            if name not in self.hosts:
                detail = (f"Host {host!r} is not allowed: this service answers only to "
                          f"{', '.join(self.hosts)} (it is bound to loopback).")
                refusal = JSONResponse({"detail": detail}, 400)
                return await refusal(scope, receive, send)
        cross_site = origin.refusal(scope["method"], headers, scope, self.origins)
        if cross_site is not None:
            return await JSONResponse({"detail": cross_site}, 403)(scope, receive, send)
        length = headers.get(b"content-length")
        too_large = (f"The request body is over this service's limit of {self.limit:,} bytes; send a "
                     "smaller image, or start the service with a larger --max-upload-mb.")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await JSONResponse({"detail": too_large}, 413)(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise HTTPException(413, too_large)
            return message

        await self.app(scope, limited, send)


def create_app(model_dir: str | Path, *, backbone=None, token: str | None = None,
               max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               images: str | Path | None = None, cache_dir: str | Path | None = None,
               allowed_hosts: tuple[str, ...] | None = None, allowed_origins: Iterable[str] = (),
               service: ModelService | None = None):
    """The FastAPI app serving the model saved in `model_dir`.

    `backbone`: a Backbone or a spec string (default "offline"); its id must be the model's.
    `token`: when set, every API call needs `Authorization: Bearer <token>`. `images`: a folder
    of example images for the explorer (default: `model_dir/images` where it exists, else the
    run folder's `images/` for a model saved in a run folder, as the demo writes it).
    `allowed_hosts`: Host header names accepted (None: any; `serve` passes the loopback names
    when bound to loopback). `allowed_origins`: web origins (scheme://host:port) besides the
    service's own whose pages may POST to it (origin.py; `serve --allow-origin`); they also get
    CORS headers, so such a page can read the answers."""
    from fastapi import Depends, FastAPI, HTTPException, Query, Request
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
    from pydantic import BaseModel, ConfigDict, Field
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse

    if isinstance(max_upload_bytes, bool) or not isinstance(max_upload_bytes, int) or max_upload_bytes < 1:
        raise ConfigError(f"max_upload_bytes must be a positive integer; got {max_upload_bytes!r}.")
    allowed_origins = origin.check_allowed_origins(allowed_origins)
    service = service or ModelService(model_dir, backbone, max_pixels=max_pixels, images=images,
                                      cache_dir=cache_dir)
    app = FastAPI(title=f"conceptlens: {service.model_dir.name}", version=__version__,
                  description="A concept bottleneck model: predictions with the concept contributions "
                              "that make them, and what-if interventions. The explorer is at /.")
    app.state.service = service
    bearer = HTTPBearer(auto_error=False, description=f"the token in ${TOKEN_ENV}")

    def authorize(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if token is None:
            return
        if credentials is None:
            raise HTTPException(401, "This service needs a token: send 'Authorization: Bearer <token>' "
                                     f"with the value of ${TOKEN_ENV} it was started with.",
                                headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
            raise HTTPException(403, "Wrong token.", headers={"WWW-Authenticate": "Bearer"})

    auth = [Depends(authorize)]

    @app.exception_handler(DataError)
    async def data_error(request: Request, exc: DataError):
        return JSONResponse({"detail": str(exc)}, getattr(exc, "status", 400))

    @app.exception_handler(ConfigError)
    async def config_error(request: Request, exc: ConfigError):
        return JSONResponse({"detail": str(exc)}, 422)

    from starlette.requests import ClientDisconnect

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, exc: ClientDisconnect):
        # the client left mid-body: nothing is wrong here, and nobody reads the answer (a log line,
        # not a traceback)
        logging.getLogger("conceptlens").info("%s %s: the client disconnected before sending the whole "
                                              "request body", request.method, request.url.path)
        return JSONResponse({"detail": "The client disconnected before sending the whole request."}, 400)

    class Change(BaseModel):
        model_config = ConfigDict(extra="forbid")
        concept: str
        factor: float = Field(0.0, description="0 removes the concept, 2 doubles its weight")
        classes: list[str] | None = Field(None, description="the classes to change; null: all")
        note: str = ""

    class InterveneRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        image_id: str = Field(description="the image_id /predict returned for the image")
        values: dict[str, float] = Field(default_factory=dict,
                                         description="concept name -> activation to set")
        classes: list[str] | None = Field(None, description="explain these classes (default: the "
                                                            "predicted one)")
        top: int = Field(10, ge=0, description="classes listed by probability (0: all)")
        concepts_top: int | None = Field(None, ge=1, description="contributions listed per class "
                                                                "(the rest sum into 'others')")
        edit: list[Change] = Field(default_factory=list,
                                   description="changes to the model's weights to apply first (what /edit "
                                               "would save); at most 10,000")

    upload_body = {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
            "image": {"type": "string", "format": "binary"}}}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        "image/*": {"schema": {"type": "string", "format": "binary"}}}}}

    async def read_image(request: Request) -> bytes:
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            async with request.form(max_files=1, max_fields=8) as form:  # closes its temporary files
                files = [v for v in form.values() if hasattr(v, "read")]
                if not files:
                    raise DataError("The multipart form holds no file: send the image as the field "
                                    "'image' (curl -F image=@photo.jpg ...).")
                return await files[0].read()
        return await request.body()

    @app.post("/predict", dependencies=auth, openapi_extra=upload_body,
              summary="Classify an image and explain it with concept contributions")
    async def predict(
            request: Request,
            classes: Annotated[list[str] | None, Query(description="explain these classes (default: the "
                                                                   "predicted one)")] = None,
            top: Annotated[int, Query(ge=0, description="classes listed by probability (0: all)")] = 10,
            concepts_top: Annotated[int | None, Query(ge=1, description="contributions listed per class "
                                                                      "(the rest sum into 'others')")] = None,
    ) -> dict:
        data = await read_image(request)
        return await run_in_threadpool(service.predict, data, classes, top, concepts_top)

    @app.post("/intervene", dependencies=auth,
              summary="The prediction with concept activations set by the caller")
    async def intervene(body: InterveneRequest) -> dict:
        edit = [c.model_dump() for c in body.edit]
        return await run_in_threadpool(service.intervene, body.image_id, body.values, body.classes,
                                       body.top, body.concepts_top, edit)

    @app.get("/model", dependencies=auth, summary="Classes, concepts, NEC, backbone id, method")
    def describe() -> dict:
        return service.describe()

    add_explorer(app, service, auth, Change)
    if allowed_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(allowed_origins), allow_methods=["*"],
                           allow_headers=["Authorization", "Content-Type"])
    # added last, so it runs first: refusals cost nothing
    app.add_middleware(_Guard, limit=max_upload_bytes, hosts=allowed_hosts,
                       origins=frozenset(map(origin.parse_origin, allowed_origins)))
    return app


def run(app, sock: socket.socket, log_level: str = "info") -> None:
    """Serve `app` on a bound socket until Ctrl-C."""
    import uvicorn

    uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="off")).run(sockets=[sock])
