"""A deadline for a blocking call: HTTP clients time out each read, never the whole request.

With a per-read timeout of 60 s, a reply that drips one byte a second never times out. So the
llm source runs each request in a daemon thread and waits for it until the deadline at most; at
the deadline the request is abandoned (its body reader also checks the deadline between chunks,
so the thread itself ends at the next byte that arrives, and the connection is closed).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
_POLL = 0.1  # seconds between looks at the cancel flag: Ctrl-C is seen at once


class Overdue(Exception):
    """The call did not finish by its deadline."""


def run_by(deadline: float, fn: Callable[[], T], cancel: threading.Event | None = None,
           cancelled: Callable[[], BaseException] = KeyboardInterrupt) -> T:
    """`fn()`'s result (or its exception) if it finishes by `deadline` (time.monotonic());
    Overdue otherwise, and `cancelled()` raised as soon as `cancel` is set."""
    outcome: list = []
    finished = threading.Event()

    def call():
        try:
            outcome.append((True, fn()))
        except BaseException as e:  # handed to the waiting thread, which raises it
            outcome.append((False, e))
        finally:
            finished.set()

    threading.Thread(target=call, name="conceptlens-deadline", daemon=True).start()
    while not finished.wait(max(0.0, min(_POLL, deadline - time.monotonic()))):
        if cancel is not None and cancel.is_set():
            raise cancelled()
        if time.monotonic() >= deadline:
            raise Overdue()
    ok, value = outcome[0]
    if not ok:
        raise value
    return value
