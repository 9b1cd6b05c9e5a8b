"""The CLI's output contract (#25): --version, -v/-q before or after the command, --quiet silencing
progress bars, exit codes, missing-extra messages, the lazy --help, and the ONNX/PyTorch cache split."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import torch

from conceptlens import _version, progress
from conceptlens.backbones import onnx_tower
from conceptlens.cli import (
    EXIT_INPUT,
    EXIT_INTERNAL,
    EXIT_USAGE,
    _output_settings,
    build_parser,
    data_commands,
    main,
)
from conceptlens.errors import DataError, UsageError
from conceptlens.features.encode import image_cache

ROOT = Path(__file__).resolve().parents[2]


def test_version_has_one_source(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"conceptlens {_version.__version__}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "conceptlens._version.__version__"}
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


@pytest.mark.parametrize("argv, verbose, quiet", [
    (["backbones"], 0, False),
    (["-v", "backbones"], 1, False),
    (["backbones", "-v"], 1, False),
    (["-v", "backbones", "-v"], 2, False),
    (["backbones", "-q"], 0, True),
    (["--quiet", "concepts", "show", "x.json"], 0, True),
    (["concepts", "show", "x.json", "--verbose"], 1, False),
])
def test_output_flags_before_or_after_the_command(argv, verbose, quiet):
    args = build_parser().parse_args(argv)
    _output_settings(args)
    assert (args.verbose, args.quiet) == (verbose, quiet)


def _command(monkeypatch, fn):
    monkeypatch.setattr(data_commands, "cmd_backbones", fn)


def test_exit_codes(monkeypatch, capsys):
    with pytest.raises(SystemExit) as e:  # argparse's own usage error
        main(["no-such-command"])
    assert e.value.code == EXIT_USAGE == 2

    def raise_(exc):
        def cmd(args):
            raise exc
        return cmd

    for exc, code, text in [(UsageError("bad flag"), EXIT_USAGE, "error: bad flag"),
                            (DataError("bad data"), EXIT_INPUT, "error: bad data"),
                            (RuntimeError("oops"), EXIT_INTERNAL, "internal error: RuntimeError: oops")]:
        _command(monkeypatch, raise_(exc))
        assert main(["backbones"]) == code
        assert text in capsys.readouterr().err
    assert EXIT_INPUT == 3 and EXIT_INTERNAL == 1
    help_text = build_parser().format_help()
    assert "exit codes" in help_text and "3 config or data" in help_text


def test_verbose_after_the_command_shows_the_traceback(monkeypatch, capsys):
    def cmd(args):
        raise RuntimeError("oops")
    _command(monkeypatch, cmd)
    assert main(["backbones", "-v"]) == EXIT_INTERNAL
    assert "Traceback" in capsys.readouterr().err


def _drawing_command(args):
    for _ in progress.progress(range(3), desc="PROGRESSBAR"):
        pass
    print("done")
    return 0


@pytest.mark.parametrize("flags, shown", [([], True), (["-q"], False), (["--quiet"], False)])
def test_quiet_silences_progress(monkeypatch, capsys, flags, shown):
    monkeypatch.setenv(progress.ENV, "1")  # as on a terminal
    _command(monkeypatch, _drawing_command)
    assert main(["backbones", *flags]) == 0
    out, err = capsys.readouterr()
    assert out == "done\n"  # results still print
    assert ("PROGRESSBAR" in err) is shown
    assert progress.progress_enabled()  # main restores the setting


def test_no_progress_reaches_every_bar(monkeypatch, capsys):
    monkeypatch.setenv(progress.ENV, "1")
    _command(monkeypatch, _drawing_command)
    parser_args = build_parser().parse_args(["backbones"])
    assert not hasattr(parser_args, "no_progress")  # backbones has no --no-progress: via --quiet only
    assert main(["backbones", "-q"]) == 0 and "PROGRESSBAR" not in capsys.readouterr().err


def test_progress_is_off_off_a_terminal_and_one_at_a_time(monkeypatch, capsys):
    monkeypatch.delenv(progress.ENV, raising=False)
    assert not progress.progress_enabled()  # pytest's stderr is no terminal
    monkeypatch.setenv(progress.ENV, "1")
    with progress.progress(total=2, desc="OUTER") as outer:
        inner = progress.progress(range(2), desc="INNER")
        assert inner.disable and not outer.disable
        list(inner)
        outer.update(2)
    after = progress.progress(total=1, desc="AFTER")
    assert not after.disable  # the outer bar's close freed the line
    after.close()
    err = capsys.readouterr().err
    assert "OUTER" in err and "INNER" not in err
    monkeypatch.setenv(progress.ENV, "0")
    assert progress.progress(total=1).disable


def test_missing_captum_names_the_extra(monkeypatch):
    from conceptlens.explain import attribution

    monkeypatch.setitem(sys.modules, "captum", None)
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    why = attribution.captum_missing()
    assert why and "pip install 'conceptlens[attribution]'" in why


def test_explain_skips_the_heatmap_without_captum():
    text = (ROOT / "src/conceptlens/cli/model_commands.py").read_text()
    assert "--heatmap skipped" in text and "captum_missing()" in text


def test_demo_prints_no_stray_none(capsys):
    data_commands.print_run({"backbone_id": "b", "sizes": {"train": 1},
                             "concept_report": {"concepts": {"kept": "3", "warning": None}, "warnings": []},
                             "table": "TABLE", "seconds": {"fit": 1.0}})
    out = capsys.readouterr().out
    assert "None" not in out and "concepts kept: 3" in out


def test_help_loads_no_heavy_package():
    code = ("import sys; from conceptlens.cli import build_parser; build_parser().format_help(); "
            "print(sorted(m for m in ('torch', 'sklearn', 'scipy', 'pydantic', 'transformers', 'fastapi') "
            "if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_missing_onnxruntime_warns_once_naming_the_extra(monkeypatch, caplog):
    monkeypatch.setattr(onnx_tower, "onnx_available",
                        lambda: "onnxruntime is not installed (pip install 'conceptlens[fast]')")
    monkeypatch.setattr(onnx_tower, "_WARNED", False)
    with caplog.at_level(logging.INFO, logger="conceptlens"):
        tower = onnx_tower.image_tower(torch.nn.Identity(), "fp", 32)
        onnx_tower.image_tower(torch.nn.Identity(), "fp", 32)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "conceptlens[fast]" in warnings[0].getMessage()
    assert "\n" not in warnings[0].getMessage()
    assert onnx_tower.runtime_of(tower) == "torch"


class _Backbone:
    id, preprocess_id = "offline:x", "p"

    def __init__(self, runtime):
        self.runtime_id = runtime


def test_each_runtime_has_its_own_cache_identity(tmp_path):
    onnx, torch_, one = (image_cache(_Backbone(r), tmp_path) for r in ("onnx", "torch", ""))
    assert len({onnx.dir, torch_.dir, one.dir}) == 3
    assert one.identity == {"backbone": "offline:x", "kind": "image", "preprocess": "p"}  # as before
