"""One declaration of the settings that change a result: the scan store's key and the report's
reproduce command both follow it."""

from __future__ import annotations

import shlex
from dataclasses import asdict, field, make_dataclass

import pytest
from typer.testing import CliRunner

import fakescope.pipeline
from fakescope.cli import app
from fakescope.media import Limits
from fakescope.pipeline import Analyzer
from fakescope.reports.html import reproduce_command
from fakescope.scan import store_settings
from fakescope.settings import Settings, result_fields
from fakescope.store import digest
from fakescope.types import Decision, FakescopeError
from helpers import signing_chain

FITTED = Decision(0.6, 0.3)


def key(settings: Settings, crops: bool = False) -> str:
    return digest(store_settings(settings, FITTED, Limits(), crops))


def old_key(s: Settings, crops: bool = False) -> str:
    """The store's settings hash as scan.py computed it before Settings marked its fields."""
    settings = {
        "frames": s.frames,
        "detector": s.detector,
        "strategy": s.strategy,
        **asdict(s.decision(FITTED)),
        **asdict(s.judging),
        "crops": crops,
        # The limits of that time: max_manifest came later, and joins the key only when set.
        **{k: v for k, v in asdict(Limits()).items() if k != "max_manifest"},
    }
    return digest(settings)


@pytest.mark.parametrize(
    "settings",
    [
        Settings(),
        Settings(frames=8, detector="mtcnn", strategy="mean"),
        Settings(threshold=0.9, real_below=0.1, min_face=30, min_sharpness=5, min_track_faces=2),
        Settings(real_below=0.5),  # capped at the fitted threshold
    ],
)
def test_store_key_is_the_one_existing_stores_hold(settings):
    assert key(settings) == old_key(settings)
    assert key(settings, crops=True) == old_key(settings, crops=True) != key(settings)


def test_result_fields_change_the_key_and_the_others_do_not(tmp_path):
    anchors = tmp_path / "anchors.pem"
    anchors.write_text(signing_chain()[1])
    base = key(Settings())
    changed = {
        "frames": 8,
        "detector": "mtcnn",
        "strategy": "mean",
        "threshold": 0.9,
        "real_below": 0.1,
        "min_face": 30.0,
        "min_sharpness": 5.0,
        "min_track_faces": 2,
        "max_qp": 30.0,
        "trust_anchors": str(anchors),
    }
    assert [f.name for f in result_fields()] == list(changed)
    for name, value in changed.items():
        assert key(Settings(**{name: value})) != base, name
    assert key(Settings(batch_size=3, backend="torch", chosen=1)) == base


def test_fields_added_later_join_the_key_only_away_from_their_default(tmp_path):
    anchors = tmp_path / "anchors.pem"
    anchors.write_text(signing_chain()[1])
    assert key(Settings(trust_anchors=None)) == old_key(Settings())
    assert key(Settings(trust_anchors=str(anchors))) != old_key(Settings())
    limits = digest(store_settings(Settings(), FITTED, Limits(max_manifest=10), False))
    assert limits != key(Settings())


def test_a_new_field_joins_the_key_only_when_marked():
    marked = make_dataclass(
        "Marked",
        [("extra", int, field(default=1, metadata={"result": True}))],
        bases=(Settings,),
        frozen=True,
    )
    unmarked = make_dataclass(
        "Unmarked", [("extra", int, field(default=1))], bases=(Settings,), frozen=True
    )
    assert key(marked(extra=2)) != key(marked(extra=1)) != key(Settings())
    assert key(unmarked(extra=2)) == key(unmarked(extra=1)) == key(Settings())


def test_reproduce_command_parses_back_to_the_same_settings(
    random_model, small_video, monkeypatch, tmp_path
):
    anchors = tmp_path / "anchors.pem"
    anchors.write_text(signing_chain()[1])
    settings = Settings(
        frames=5,
        strategy="mean",
        threshold=0.7,
        real_below=0.25,
        min_face=24.5,
        min_sharpness=3.25,
        min_track_faces=2,
        max_qp=40.5,
        trust_anchors=str(anchors),
    )
    report = Analyzer(random_model, settings).analyze(small_video)
    args = shlex.split(reproduce_command(report))
    assert args[:3] == ["fakescope", "analyze", str(small_video)]

    seen = {}

    def capture(model, settings, device, limits):
        seen.update(model=model, settings=settings, device=device)
        raise FakescopeError("parsed")  # stop before any model loads

    monkeypatch.setattr(fakescope.pipeline, "Analyzer", capture)
    result = CliRunner().invoke(app, args[1:])
    assert "parsed" in result.output, result.output
    assert seen == {"model": str(random_model), "settings": settings, "device": "cpu"}
    # Every result field was on the command line, so none came from a default.
    for f in result_fields():
        assert f"--{f.name.replace('_', '-')}" in args
