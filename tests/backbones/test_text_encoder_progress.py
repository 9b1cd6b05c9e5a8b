"""The sentence encoder's load honours conceptlens' progress switch (transformers draws its own
"Loading weights" bar, which --quiet and `progress = false` must hide too)."""

import subprocess
import sys

import pytest

SCRIPT = """
from conceptlens.progress import set_progress
set_progress({on})
from conceptlens.backbones.text_encoder import encode_sentences
encode_sentences(["a red crest"])
"""


def _stderr(on: bool) -> str:
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(on=on)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stderr


@pytest.mark.slow
def test_loading_bar_follows_the_progress_switch():
    assert "Loading weights" in _stderr(True)  # the bar exists: the check below can fail
    assert "Loading weights" not in _stderr(False)
