"""The project's own rules: shared-data tests cannot skip silently in CI, doc links resolve."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import helpers

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "fakescope"


def test_missing_shared_data_skips_or_fails_when_ci_requires_it(monkeypatch, tmp_path):
    monkeypatch.setattr(helpers, "SHARED_DATA", tmp_path / "missing")
    monkeypatch.delenv(helpers.REQUIRE_SHARED, raising=False)
    with pytest.raises(pytest.skip.Exception):
        helpers.shared_data_dir()
    monkeypatch.setenv(helpers.REQUIRE_SHARED, "1")
    with pytest.raises(pytest.fail.Exception, match="shared data not found"):
        helpers.shared_data_dir()
    monkeypatch.setattr(helpers, "SHARED_DATA", tmp_path)
    assert helpers.shared_data_dir() == tmp_path


def test_every_docs_file_named_in_the_code_and_readme_exists():
    named = {
        (path, match)
        for path in [*SRC.rglob("*.py"), ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
        for match in re.findall(r"docs/[\w./-]+\.md", path.read_text())
    }
    assert named and not {
        (p.relative_to(ROOT).as_posix(), m) for p, m in named if not (ROOT / m).is_file()
    }
