"""Documentation generated from the code stays in step with it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_deviations_page_is_generated_from_the_docstrings():
    """docs/deviations.md lists every method's differences from its authors' code; it must
    match the docstrings it is generated from (run scripts/deviations.py after editing one)."""
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "deviations.py"), "--check"])
    assert r.returncode == 0, "docs/deviations.md is stale: run .venv/bin/python scripts/deviations.py"
