"""`push_to_hub(folder, repo_id)`: upload a save_pretrained folder to the Hugging Face Hub (the `hub`
extra: huggingface_hub, imported only here and only when called).

The token comes from the environment only (HF_TOKEN, else huggingface_hub's own login): it is never
an argument, never logged and never part of an error message. `api` takes any object with
huggingface_hub.HfApi's `create_repo` and `upload_folder` (the tests pass one that writes to a local
folder); `endpoint` points the real client at another Hub (a mirror, a local server).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import ConfigError, DataError
from .pretrained import CARD, CARD_DATA

__all__ = ["push_to_hub"]

log = logging.getLogger("conceptlens")
REQUIRED = ("model.json", "weights.safetensors", CARD, CARD_DATA)


def _token() -> str | None:
    return os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or None


def _default_api(endpoint: str | None):
    try:
        from huggingface_hub import HfApi
    except ImportError as e:
        raise ConfigError("push_to_hub needs huggingface_hub: pip install 'conceptlens[hub]'.") from e
    return HfApi(endpoint=endpoint, token=_token())


def push_to_hub(folder: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
                commit_message: str | None = None, create: bool = True, endpoint: str | None = None,
                api=None):
    """Upload the save_pretrained `folder` to the model repository `repo_id` ("user/name"), creating it
    (private when asked) unless create=False; returns what `upload_folder` returns (the commit)."""
    folder = Path(folder)
    missing = [f for f in REQUIRED if not (folder / f).is_file()]
    if missing:
        raise DataError(f"{folder} is not a save_pretrained folder (missing {', '.join(missing)}); write it "
                        "with "
                        "conceptlens.export.save_pretrained first.")
    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ConfigError(f"repo_id must be 'user-or-org/name'; got {repo_id!r}.")
    api = _default_api(endpoint) if api is None else api
    if create:
        api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
    log.info("uploading %s to the Hub repository %s", folder, repo_id)
    return api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model", revision=revision,
                             commit_message=commit_message or f"conceptlens model: {folder.name}")
