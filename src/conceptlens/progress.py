"""Progress bars for the steps that take more than a few seconds (encoding, solver paths, LaBo's
epochs, the NEC evaluation, SAE training), all drawn through `progress`, so one switch governs them.

- Where: stderr (stdout stays the command's result), and only where someone watches: a terminal
  or a Jupyter kernel. `CONCEPTLENS_PROGRESS=1` / `=0` forces them on / off; `set_progress(False)`
  (what `conceptlens --quiet` and `--no-progress` do) switches them off in this process.
- One bar at a time: a step run inside another step's bar (the solver path inside the NEC
  evaluation) draws none of its own, so nested loops never stack lines.
- Off, a bar is tqdm's disabled bar: it costs an attribute check per update.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterable

_FORCED: bool | None = None  # set_progress: None = decide from the environment and the terminal
_lock = threading.Lock()
_drawn = 0  # bars on screen now (a bar opened while one is drawn stays hidden)

ENV = "CONCEPTLENS_PROGRESS"
_ON, _OFF = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def set_progress(enabled: bool | None) -> bool | None:
    """Force progress bars on (True) or off (False), or back to automatic (None); returns the
    previous setting, to restore it."""
    global _FORCED
    previous, _FORCED = _FORCED, enabled
    return previous


def progress_enabled() -> bool:
    """Whether a bar opened now would be drawn (before the one-at-a-time rule)."""
    if _FORCED is not None:
        return _FORCED
    env = os.environ.get(ENV, "").strip().lower()
    if env in _ON:
        return True
    if env in _OFF:
        return False
    if "ipykernel" in sys.modules:  # a notebook: tqdm.auto draws a widget
        return True
    stream = sys.stderr
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def progress(iterable: Iterable | None = None, desc: str | None = None, total: float | None = None,
             unit: str = "it", disable: bool = False, **tqdm_options):
    """A tqdm bar (same arguments; use it as tqdm: wrap an iterable, or `with` and `update`),
    drawn on stderr when `progress_enabled()`, `disable` is False and no other bar is drawn."""
    global _drawn
    from tqdm.auto import tqdm

    with _lock:
        show = not disable and _drawn == 0 and progress_enabled()
        if show:
            _drawn += 1
    tqdm_options.setdefault("dynamic_ncols", True)
    tqdm_options.setdefault("leave", False)
    tqdm_options.setdefault("file", sys.stderr)
    bar = tqdm(iterable, desc=desc, total=total, unit=unit, disable=not show, **tqdm_options)
    if show:
        close, closed = bar.close, []

        def close_once():
            global _drawn
            if not closed:
                closed.append(True)
                with _lock:
                    _drawn -= 1
            close()

        bar.close = close_once  # tqdm's own paths (end of iteration, __exit__, __del__) call it
    return bar
