"""`fakescope scan`: the SQLite store, resuming, exactly-once results after a kill, and the Ray
engine."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from fakescope.cli import app
from fakescope.encode import make_example_video
from fakescope.media import read_image
from fakescope.models.checkpoints import sha256_of
from fakescope.pipeline import Analyzer, Settings
from fakescope.scan import run_scan
from helpers import astronaut

runner = CliRunner()


def make_crops(folder: Path, count: int, seed: int = 0, size: int = 96) -> list[Path]:
    """Distinct face crops: jittered boxes around the astronaut's face, some mirrored."""
    folder.mkdir(parents=True, exist_ok=True)
    photo = astronaut()
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        x, y, side = (
            150 + rng.integers(-20, 20),
            40 + rng.integers(-20, 20),
            180 + rng.integers(-30, 30),
        )
        crop = photo.crop((x, y, x + side, y + side)).resize((size, size))
        if i % 2:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        paths.append(folder / f"crop{i:02d}.png")
        crop.save(paths[-1])
    return paths


def table(db: Path) -> list[dict]:
    with sqlite3.connect(db) as con:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute("SELECT * FROM results ORDER BY path")]


def quiet_console() -> Console:
    return Console(file=open(os.devnull, "w"), width=200)


@pytest.fixture(scope="module")
def analyzer(random_model) -> Analyzer:
    return Analyzer(random_model, Settings(frames=4, batch_size=4))


def test_scan_stores_once_and_resumes(random_model, analyzer, tmp_path):
    crops = make_crops(tmp_path / "in", 6)
    (tmp_path / "in" / "bad.png").write_bytes(b"not an image")
    (tmp_path / "in" / "copy.png").write_bytes(crops[0].read_bytes())  # same content: one row
    db, out = tmp_path / "results.sqlite", tmp_path / "results.jsonl"
    args = [
        "scan",
        str(tmp_path / "in"),
        "--crops",
        "--db",
        str(db),
        "--out",
        str(out),
        "--model",
        str(random_model),
        "--batch-size",
        "4",
        "--quiet",
    ]
    first = runner.invoke(app, args)
    assert first.exit_code == 1, first.output  # the bad file is an error
    assert "scanned 8 inputs" in first.stdout and "1 errors" in first.stdout
    [error] = [line for line in first.stderr.splitlines() if line.startswith("error:")]
    assert "bad.png" in error
    rows = table(db)
    assert len(rows) == 7 and len({r["key"] for r in rows}) == 7
    assert {r["label"] for r in rows} <= {"fake", "real", "inconclusive", "error"}
    assert all(
        r["reason"] for r in rows if r["label"] != "error"
    )  # why each answer, as in report.json
    # The same probabilities as scoring the crops one call at a time through the API.
    _, expected = analyzer.score_crops([read_image(p) for p in crops])
    stored = {r["content_hash"]: r["fake_probability"] for r in rows}
    assert [stored[sha256_of(p)] for p in crops] == pytest.approx(expected.tolist(), abs=1e-6)
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["key"] for e in exported] == [r["key"] for r in rows]
    assert set(exported[0]) == {
        "path",
        "key",
        "content_hash",
        "label",
        "fake_probability",
        "faces",
        "error",
        "timings",
        "created",
        "reason",
        "credentials",
        "credentials_origin",
        "credentials_signer",
    }
    assert {e["credentials"] for e in exported if e["label"] != "error"} == {"none"}

    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "(0 new, 8 already stored)" in again.stdout
    assert "--retry-errors" in again.stdout and table(db) == rows

    crops[1].write_bytes(crops[2].read_bytes()[:300])  # changed content: a new key, scored again
    changed = runner.invoke(app, args)
    assert "(1 new, 7 already stored)" in changed.stdout and "2 errors" in changed.stdout
    assert len(table(db)) == 8


def test_error_rows_are_retried_only_when_asked(random_model, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.png").write_bytes(b"\x89PNG broken")
    db = tmp_path / "r.sqlite"
    analyzer = Analyzer(random_model, Settings(batch_size=4))
    run_scan(analyzer, [tmp_path / "in"], db, crops=True, quiet=True, console=quiet_console())
    [before] = table(db)
    summary = run_scan(
        analyzer, [tmp_path / "in"], db, crops=True, quiet=True, console=quiet_console()
    )
    assert (summary.new, summary.stored, summary.stored_errors) == (0, 1, 1)
    summary = run_scan(
        analyzer,
        [tmp_path / "in"],
        db,
        crops=True,
        retry_errors=True,
        quiet=True,
        console=quiet_console(),
    )
    [after] = table(db)
    assert summary.new == 1 and after["created"] > before["created"] and after["label"] == "error"


def test_video_scan_matches_analyze(analyzer, tmp_path):
    video = make_example_video(tmp_path / "two.mp4", seconds=1, size=(320, 180), fps=8, people=2)
    db = tmp_path / "r.sqlite"
    summary = run_scan(analyzer, [video], db, quiet=True, console=quiet_console())
    report = analyzer.analyze(video)
    [row] = table(db)
    assert summary.labels[report.label] == 1 and row["label"] == report.label
    assert row["fake_probability"] == pytest.approx(report.fake_probability, abs=1e-6)
    assert row["faces"] == sum(len(t.faces) for t in report.verdict.tracks) == 8
    assert {"decode", "detect", "crop", "score", "total"} <= set(json.loads(row["timings"]))


def test_other_settings_are_other_rows(analyzer, random_model, tmp_path):
    make_crops(tmp_path / "in", 2)
    db = tmp_path / "r.sqlite"
    run_scan(analyzer, [tmp_path / "in"], db, crops=True, quiet=True, console=quiet_console())
    stricter = Analyzer(random_model, Settings(threshold=0.9))
    summary = run_scan(
        stricter, [tmp_path / "in"], db, crops=True, quiet=True, console=quiet_console()
    )
    assert summary.new == 2 and len(table(db)) == 4
    with sqlite3.connect(db) as con:
        assert (
            con.execute("SELECT COUNT(*) FROM configs WHERE kind = 'settings'").fetchone()[0] == 2
        )


def test_a_recalibrated_model_scores_anew(analyzer, random_model, tmp_path):
    """The same member with the ensemble's own temperature and bias gives other
    probabilities: its rows are not the uncalibrated model's."""
    make_crops(tmp_path / "in", 2)
    db = tmp_path / "r.sqlite"
    run_scan(analyzer, [tmp_path / "in"], db, crops=True, quiet=True, console=quiet_console())
    config = tmp_path / "calibrated.json"
    members = [{"config": str(random_model), "weight": 1.0}]
    block = {"value": 2.0, "bias": 0.5}
    ensemble = {"format": "fakescope-ensemble", "name": "c", "members": members}
    config.write_text(json.dumps({**ensemble, "temperature": block}))
    calibrated = Analyzer(config, analyzer.settings)
    summary = run_scan(
        calibrated, [tmp_path / "in"], db, crops=True, quiet=True, console=quiet_console()
    )
    assert summary.new == 2 and len(table(db)) == 4
    by_path: dict[str, set[float]] = {}
    for row in table(db):
        by_path.setdefault(row["path"], set()).add(row["fake_probability"])
    assert [len(p) for p in by_path.values()] == [2, 2]


def test_sigkill_midway_then_rerun_scores_every_input_exactly_once(random_model, tmp_path):
    videos = tmp_path / "in"
    videos.mkdir()
    for i in range(12):  # 4 to 15 frames: distinct content
        make_example_video(videos / f"clip{i:02d}.mp4", seconds=(4 + i) / 8, size=(160, 96), fps=8)
    db = tmp_path / "results.sqlite"
    command = [
        sys.executable,
        "-m",
        "fakescope.cli",
        "scan",
        str(videos),
        "--db",
        str(db),
        "--model",
        str(random_model),
        "--frames",
        "4",
        "--batch-size",
        "4",
        "--workers",
        "1",
        "--quiet",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def committed() -> int:
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
                return con.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        except sqlite3.OperationalError:  # not created yet
            return 0

    scan = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while committed() == 0 and scan.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    scan.send_signal(signal.SIGKILL)
    scan.wait()
    before = table(db)
    assert 0 < len(before) < 12, "the scan should have been killed midway"
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    rerun = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert rerun.returncode == 0, rerun.stderr
    assert f"({12 - len(before)} new, {len(before)} already stored)" in rerun.stdout
    after = table(db)
    assert (
        len(after) == 12
        and len({r["key"] for r in after}) == 12
        and len({r["path"] for r in after}) == 12
    )
    assert all(r["label"] != "error" for r in after)
    assert all(r in after for r in before)  # rows committed before the kill are untouched
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_ray_engine_gives_the_local_scores(random_model, tmp_path):
    ray = pytest.importorskip("ray")
    make_crops(tmp_path / "in", 10)
    (tmp_path / "in" / "bad.png").write_bytes(b"junk")
    analyzer = Analyzer(random_model, Settings(batch_size=4))
    local = run_scan(
        analyzer,
        [tmp_path / "in"],
        tmp_path / "local.sqlite",
        crops=True,
        quiet=True,
        console=quiet_console(),
    )
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = run_scan(
            analyzer,
            [tmp_path / "in"],
            tmp_path / "ray.sqlite",
            crops=True,
            engine="ray",
            quiet=True,
            console=quiet_console(),
        )
    finally:
        ray.shutdown()
    assert remote.labels == local.labels and (remote.new, remote.errors) == (
        local.new,
        local.errors,
    ) == (11, 1)
    expected, got = table(tmp_path / "local.sqlite"), table(tmp_path / "ray.sqlite")
    assert [(r["path"], r["key"], r["label"]) for r in got] == [
        (r["path"], r["key"], r["label"]) for r in expected
    ]
    assert [r["fake_probability"] or 0 for r in got] == pytest.approx(
        [r["fake_probability"] or 0 for r in expected], abs=1e-6
    )


def test_a_store_from_before_reasons_is_upgraded_in_place(tmp_path):
    import sqlite3

    from fakescope.store import COLUMNS, Row, Store, digest

    db = tmp_path / "old.sqlite"
    columns = ", ".join(
        f"{c} {'BLOB' if c == 'path' else 'TEXT'}" for c in COLUMNS[: COLUMNS.index("reason")]
    )  # schema 1: no reason
    with sqlite3.connect(db) as old:
        old.execute(f"CREATE TABLE results ({columns}, PRIMARY KEY (key))")
        store_row = (
            "k1",
            b"a.png",
            "h1",
            digest({"m": 1}),
            digest({"s": 1}),
            0.2,
            "real",
            1,
            None,
            "{}",
            "2026-01-01",
        )
        old.execute(f"INSERT INTO results VALUES ({', '.join('?' * len(store_row))})", store_row)
        old.execute("PRAGMA user_version=1")
    store = Store(db, {"m": 1}, {"s": 1})
    store = Store(db, {"m": 1}, {"s": 1})
    store.put([Row("b.png", "k2", "h2", "inconclusive", 0.7, 1, None, {}, reason="between")])
    assert [(r.path, r.label, r.reason) for r in store.rows()] == [
        ("a.png", "real", None),
        ("b.png", "inconclusive", "between"),
    ]
    store.close()


def test_large_scoring_batches_give_the_same_rows(analyzer, tmp_path):
    """A GPU scores many faces per batch (the model still in chunks of batch_size): the
    rows are those of small batches, in fewer store transactions."""
    from fakescope.engines import DEVICE_SCAN_BATCH, LocalEngine, ScanJob, scan_batch

    assert scan_batch(analyzer.settings, "cpu") == analyzer.settings.batch_size == 4
    assert scan_batch(analyzer.settings, "cuda") == DEVICE_SCAN_BATCH
    assert scan_batch(Settings(batch_size=4096), "cuda") == 4096
    paths = make_crops(tmp_path / "crops", 10)
    jobs = [ScanJob(str(p), sha256_of(p), f"key{i}") for i, p in enumerate(paths)]

    def rows(batch: int) -> tuple[int, dict]:
        batches = list(LocalEngine(analyzer, True, 2, batch).run(jobs))
        found = {r.key: (r.label, r.fake_probability, r.faces) for b in batches for r in b}
        return len(batches), found

    (count_small, small), (count_large, large) = rows(3), rows(64)
    assert count_small == 4 and count_large == 1 and small.keys() == large.keys()
    assert len(large) == 10 and all(large[k][0] != "error" for k in large)
    for key, (label, probability, faces) in small.items():  # other chunks: float rounding
        assert (label, faces) == (large[key][0], large[key][2])
        assert probability == pytest.approx(large[key][1], abs=1e-6)


def test_crops_prepared_in_worker_processes_give_the_same_rows(analyzer, tmp_path):
    """What a GPU scan does with face crops (worker processes prepare them; the GIL does not
    cap them at one core): the same rows as threads, and a bad file is still one error row."""
    from fakescope.engines import PROCESS_CHUNK, LocalEngine, ScanJob

    paths = make_crops(tmp_path / "crops", PROCESS_CHUNK + 3)  # more than one task
    (tmp_path / "crops" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    paths.append(tmp_path / "crops" / "broken.png")
    jobs = [ScanJob(str(p), sha256_of(p), f"key{i}") for i, p in enumerate(paths)]
    assert not LocalEngine(analyzer, True, 2).processes  # threads on a CPU by default
    rows = {}
    for processes in (False, True):
        engine = LocalEngine(analyzer, True, 2, processes=processes)
        assert engine.processes == processes
        rows[processes] = {r.key: r for batch in engine.run(jobs) for r in batch}
    assert rows[True].keys() == rows[False].keys() and len(rows[True]) == len(paths)
    for key, row in rows[False].items():
        other = rows[True][key]
        assert (other.label, other.faces, other.error) == (row.label, row.faces, row.error)
        assert other.fake_probability == row.fake_probability
    broken = rows[True][f"key{len(paths) - 1}"]
    assert broken.label == "error" and "broken.png" in (broken.error or "")
