"""Outputs are never overwritten silently: one folder per input, written atomically."""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fakescope.cli import app
from fakescope.files import atomic_open, atomic_path, output_folders, write_atomic

runner = CliRunner()


@pytest.fixture
def two_clips(tmp_path) -> list[Path]:
    """Two different images with the same stem in two folders."""
    paths = []
    for folder in ("d1", "d2"):
        (tmp_path / folder).mkdir()
        with resources.files("fakescope").joinpath("assets", "astronaut.jpg").open("rb") as f:
            data = f.read()
        path = tmp_path / folder / "clip.jpg"
        path.write_bytes(data if folder == "d1" else data + b"\0")  # different content, same stem
        paths.append(path)
    return paths


def analyze(*args: str):
    return runner.invoke(app, ["analyze", *args, "--format", "json"])


def inputs_written(out: Path) -> dict[str, str]:
    return {p.parent.name: json.loads(p.read_text())["input"] for p in out.glob("*/report.json")}


def test_same_stems_get_their_own_folders(two_clips, random_model, tmp_path):
    out = tmp_path / "out"
    result = analyze(*map(str, two_clips), "--model", str(random_model), "--out", str(out))
    assert result.exit_code == 0, result.output
    written = inputs_written(out)
    assert sorted(written.values()) == sorted(map(str, two_clips))  # both reports, none lost
    assert all(name.startswith("clip-") for name in written)
    for folder in written:  # each summary line says where its report went
        assert str(out / folder) in result.stdout


def test_a_later_run_never_overwrites_another_inputs_results(two_clips, random_model, tmp_path):
    out = tmp_path / "out"
    first, second = two_clips
    assert analyze(str(first), "--model", str(random_model), "--out", str(out)).exit_code == 0
    assert inputs_written(out) == {"clip": str(first)}
    assert analyze(str(second), "--model", str(random_model), "--out", str(out)).exit_code == 0
    written = inputs_written(out)
    assert written["clip"] == str(first) and len(written) == 2
    again = analyze(
        str(first), "--model", str(random_model), "--out", str(out)
    )  # the same input: same folder
    assert again.exit_code == 0 and len(inputs_written(out)) == 2


def test_output_folders_are_stable_and_distinct(tmp_path):
    inputs = [tmp_path / "a" / "x.mp4", tmp_path / "b" / "x.mp4", tmp_path / "c" / "y.mp4"]
    folders = output_folders(tmp_path / "out", inputs)
    assert len(set(folders.values())) == 3 and folders[inputs[2]] == tmp_path / "out" / "y"
    assert folders == output_folders(tmp_path / "out", inputs)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "y").write_text("a file, not ours")
    assert output_folders(tmp_path / "out", inputs[2:])[inputs[2]] != tmp_path / "out" / "y"


def test_atomic_writes_leave_the_old_file_on_failure(tmp_path):
    target = write_atomic(tmp_path / "report.json", "old")
    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write("half of the new")
        raise RuntimeError("killed while writing")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["report.json"]
    write_atomic(target, "new")
    assert target.read_text() == "new" and len(list(tmp_path.iterdir())) == 1
    # Binary writers (checkpoints, packs, PDFs, ONNX models) go through the same path.
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed while writing")
    assert target.read_text() == "new" and len(list(tmp_path.iterdir())) == 1
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole" and len(list(tmp_path.iterdir())) == 1
    shutil.rmtree(tmp_path)
