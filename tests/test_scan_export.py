"""`scan B --out b.jsonl` exports B's rows, not rows an earlier scan of A left in the same store."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from fakescope.cli import app
from test_scan import make_crops

runner = CliRunner()


def test_export_holds_this_scans_inputs_unless_all_are_asked_for(random_model, tmp_path):
    make_crops(tmp_path / "A", 3, seed=1)
    make_crops(tmp_path / "B", 2, seed=2)
    (tmp_path / "B" / "bad.png").write_bytes(b"not an image")  # an error row is exported too
    db = tmp_path / "results.sqlite"

    def scan(folder: str, out: str, *extra: str) -> list[dict]:
        result = runner.invoke(
            app,
            [
                "scan",
                str(tmp_path / folder),
                "--crops",
                "--db",
                str(db),
                "--out",
                str(tmp_path / out),
                "--model",
                str(random_model),
                "--quiet",
                *extra,
            ],
        )
        assert result.exit_code in (0, 1), result.output
        return [json.loads(line) for line in (tmp_path / out).read_text().splitlines()]

    a = scan("A", "a.jsonl")
    assert len(a) == 3 and all("/A/" in row["path"] for row in a)
    b = scan("B", "b.jsonl")
    assert sorted(row["path"].rsplit("/", 1)[1] for row in b) == [
        "bad.png",
        "crop00.png",
        "crop01.png",
    ]
    assert all("/B/" in row["path"] for row in b)
    again = scan("B", "b2.jsonl")  # stored rows of this scan's inputs are exported too
    assert [row["key"] for row in again] == [row["key"] for row in b]
    everything = scan("B", "all.jsonl", "--export-all")
    assert len(everything) == 6
