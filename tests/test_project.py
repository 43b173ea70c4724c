"""The project's own rules: shared-data tests cannot skip silently in CI."""

from __future__ import annotations

import pytest

import helpers


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
