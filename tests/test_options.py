"""Every numeric option is checked before any work: a bad value is one line and exit 2,
and nothing is stored under a key that a valid setting would reuse."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from fakescope.cli import app
from fakescope.engines import ScanJob, error_row
from fakescope.types import FakescopeError, MediaError

runner = CliRunner()

BAD = [
    ("analyze", ["--frames", "0"]),
    ("analyze", ["--max-duration", "0"]),
    ("analyze", ["--max-duration", "-10"]),
    ("analyze", ["--max-duration", "nan"]),
    ("analyze", ["--max-pixels", "0"]),
    ("analyze", ["--min-face", "nan"]),
    ("analyze", ["--min-sharpness", "-1"]),
    ("analyze", ["--min-track-faces", "0"]),
    ("analyze", ["--max-qp", "-1"]),
    ("scan", ["--max-qp", "inf"]),
    ("analyze", ["--threshold", "1.5"]),
    ("analyze", ["--real-below", "nan"]),
    ("scan", ["--batch-size", "0"]),
    ("scan", ["--workers", "0"]),
    ("scan", ["--max-pixels", "-5"]),
    ("scan", ["--frames", "-1"]),
    ("evaluate", ["--limit", "0"]),
    ("xai-eval", ["--limit", "1"]),
    ("xai-eval", ["--member", "-1"]),
    ("calibrate", ["--max-false-alarm", "nan", "--out", "x.json"]),
]


@pytest.mark.parametrize(
    ("command", "options"), BAD, ids=lambda v: " ".join(v) if isinstance(v, list) else v
)
def test_bad_numeric_option_is_one_line_and_exit_2(command, options, random_model, tmp_path):
    given = tmp_path / "in.png"
    given.write_bytes(b"not read: the settings fail first")
    args = [command, str(given), *options]
    if command != "calibrate":
        args += ["--model", str(random_model), "--out", str(tmp_path / "out")]
    if command == "scan":
        args += ["--db", str(tmp_path / "r.sqlite")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error:") and "Traceback" not in result.output
    assert not (tmp_path / "r.sqlite").exists()  # nothing stored for a bad setting


@pytest.mark.parametrize(
    "options",
    [
        ["--port", "70000"],
        ["--port", "0"],
        ["--workers", "0"],
        ["--max-upload-mb", "0"],
        ["--frames", "0"],
    ],
)
def test_serve_options_are_checked_before_loading(options, tmp_path):
    result = runner.invoke(app, ["serve", "--model", str(tmp_path / "missing.json"), *options])
    assert result.exit_code == 2, result.output  # not 5: the option fails before the model loads
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error:")


def test_only_the_inputs_own_errors_are_stored():
    job = ScanJob("/x/clip.mp4", "c" * 64, "k" * 64)
    assert error_row(job, MediaError("/x/clip.mp4: cannot decode")).key == job.key
    assert error_row(job, FakescopeError("--batch-size must be at least 1")).key is None
    assert error_row(job, MemoryError()).key is None  # e.g. a batch too big: retried next run


@pytest.mark.parametrize(
    "options",
    [
        ["--epochs", "0"],
        ["--batch-size", "0"],
        ["--epoch-size", "8", "--batch-size", "32"],
        ["--lr", "-1"],
        ["--lr", "nan"],
        ["--sbi-share", "1.5"],
        ["--workers", "-1"],
        ["--image-size", "8"],
        ["--input", "disk"],
    ],
    ids=" ".join,
)
def test_train_options_are_checked_before_any_data_is_read(options, tmp_path):
    result = runner.invoke(
        app, ["train", str(tmp_path / "absent"), "--out", str(tmp_path / "run"), *options]
    )
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error:")
    assert "absent" not in result.stderr and not (tmp_path / "run").exists()
