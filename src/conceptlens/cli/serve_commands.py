"""`conceptlens serve MODEL_DIR`: the model over HTTP, with the explorer page at `/`."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import ConfigError
from . import arg_types

# Imports of the packages that load torch or scikit-learn (backbones, features, methods, runs,
# evaluation, grounding, explain, report, demo) stay inside the commands that need them, so
# that `conceptlens --help` and argument errors answer at once.


def cmd_serve(args) -> int:
    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401  (image uploads as multipart form fields)
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"`conceptlens serve` needs FastAPI, uvicorn and python-multipart ({e}); "
                          "install them with: pip install 'conceptlens[serve]'.") from None
    from ..service.app import (
        LOOPBACK_NAMES,
        bind_socket,
        create_app,
        is_loopback,
        run,
        token_for_host,
        url_of,
    )
    from ..service.origin import check_allowed_origins

    token = token_for_host(args.host)  # before the backbone loads: a refusal costs nothing
    check_allowed_origins(args.allow_origin or ())
    model_dir = _model_dir(args.model)
    sock = bind_socket(args.host, args.port)
    try:
        app = create_app(model_dir, backbone=args.backbone, token=token,
                         max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
                         max_pixels=args.max_pixels, images=args.images, cache_dir=args.cache_dir,
                         # on loopback, answer only to loopback Host names (no DNS rebinding)
                         allowed_hosts=LOOPBACK_NAMES if is_loopback(args.host) else None,
                         allowed_origins=args.allow_origin or ())
        url = url_of(sock)
        auth = " (send 'Authorization: Bearer $CONCEPTLENS_TOKEN')" if token else ""
        print(f"conceptlens: serving {Path(model_dir).name} at {url}/ (explorer), {url}/docs (API)"
              f"{auth}; Ctrl-C stops.", flush=True)
        run(app, sock, log_level="info" if getattr(args, "verbose", False) else "warning")
    finally:
        sock.close()
    return 0


def _model_dir(path: str) -> Path:
    """The saved model folder to serve: `path`, or for a run folder (runs.folder.RunFolder) the
    model its report.html shows."""
    from ..runs.record import is_run_folder

    if not is_run_folder(path):
        return Path(path)
    from ..runs.folder import RunFolder

    run = RunFolder.load(path)
    name = run.report_model_name()
    print(f"note: {path} is a run folder; serving its {name!r} model (the one its report shows; give "
          f"{run.model_dir(name).parent}/<method> for another)", file=sys.stderr)
    return run.model_dir(name)


def add_commands(sub) -> None:
    from ..service.limits import DEFAULT_MAX_PIXELS, DEFAULT_MAX_UPLOAD_BYTES

    p = sub.add_parser("serve", help="serve a saved model over HTTP, with an interactive explorer page")
    p.add_argument("model", help="a saved model folder, or a run folder (the model its report shows)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1, this machine only; any other "
                        "needs a token in $CONCEPTLENS_TOKEN)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--images", help="a folder of example images for the explorer "
                                    "(default: MODEL_DIR/images where it exists, else a run "
                                    "folder's images/ for a model in it, as `conceptlens demo` writes)")
    p.add_argument("--backbone", default=None,
                   help="the backbone the model was fitted with (default: the one the model records, "
                        "else offline); its id must match the model's")
    p.add_argument("--cache-dir", help="feature cache root (default: $CONCEPTLENS_CACHE or "
                                       "~/.cache/conceptlens)")
    p.add_argument("--max-upload-mb", type=arg_types.mebibytes, default=DEFAULT_MAX_UPLOAD_BYTES / 2**20,
                   help="largest request body accepted, in MiB (default %(default)g)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help="largest image accepted, width x height (default %(default)d; a guard "
                        "against decompression bombs)")
    p.add_argument("--allow-origin", action="append", metavar="URL",
                   help="a web origin (scheme://host:port) whose pages may send this service POST "
                        "requests (predict, intervene, edit); repeatable. By default only the "
                        "service's own pages and programs that send no Origin header (curl) may")
    p.set_defaults(func=cmd_serve)
