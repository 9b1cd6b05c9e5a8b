"""A headless browser for the tests that check pages in one (skipped where none is installed)."""

from __future__ import annotations

import shutil

__all__ = ["CHROMIUM", "CHROMIUM_FLAGS"]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
