"""`progress = false` in a run's config: no stage draws a bar (progress.py's one switch, set for
the run and restored after)."""

from __future__ import annotations

import re

import pytest

from conceptlens import progress
from conceptlens.runs import run_experiment
from conceptlens.testing import tiny_run_setup

BAR = re.compile(r"\[\d+:\d\d")  # tqdm's elapsed time, in every bar it draws


@pytest.mark.parametrize("shown", [False, True])
def test_progress_false_draws_no_bar_in_any_stage_and_restores_the_switch(tmp_path, monkeypatch, capfd,
                                                                         shown):
    # forced on by the environment: with progress = true the run's bars are drawn (so the check can
    # fail), with progress = false none is: encoding, LaBo's epochs, Label-free's solver path, the NEC
    # evaluation and its curve
    monkeypatch.setenv(progress.ENV, "1")
    make = tiny_run_setup(tmp_path, monkeypatch)
    cfg = make({"zero_shot": {}, "labo": {"epochs": 20}, "label_free": {"steps": 50}}, nec_curve=[1, 2],
               progress=shown)
    capfd.readouterr()
    run_experiment(cfg, write=False)
    err = capfd.readouterr().err
    assert bool(BAR.search(err)) is shown, err[-2000:]
    assert progress._FORCED is None and progress.progress_enabled()  # the switch is as it was
