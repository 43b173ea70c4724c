"""The wheel: built by `python -m build`, installed into a fresh venv (not editable), it
analyses the bundled example offline."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(args: list, cwd: Path, env: dict) -> str:
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_wheel_installs_and_analyses_the_bundled_example_offline(tmp_path):
    # Build from a copy, so the working tree gets no build/ or egg-info.
    source = tmp_path / "source"
    shutil.copytree(
        ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    for path in [ROOT / "pyproject.toml", ROOT / "README.md", *ROOT.glob("LICENSE*")]:
        shutil.copy(path, source / path.name)
    # Offline: no index for pip, and any HTTP request goes to a closed port.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(
        PIP_NO_INDEX="1",
        HF_HUB_OFFLINE="1",
        TORCH_HOME=str(tmp_path / "torch"),
        http_proxy="http://127.0.0.1:9",
        https_proxy="http://127.0.0.1:9",
        HTTP_PROXY="http://127.0.0.1:9",
        HTTPS_PROXY="http://127.0.0.1:9",
    )
    # The sdist first, then the wheel from it, with the build backend already installed.
    run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", tmp_path / "dist", source],
        tmp_path,
        env,
    )
    (wheel,) = (tmp_path / "dist").glob("fakescope-*.whl")
    shipped = {
        p.relative_to(ROOT / "src").as_posix()
        for p in (ROOT / "src" / "fakescope").rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc")
    }
    assert {
        "fakescope/models/weights/efficientnet-lite0.safetensors",
        "fakescope/reports/templates/report.html.j2",
        "fakescope/server/static/index.html",
    } <= shipped
    assert shipped <= set(zipfile.ZipFile(wheel).namelist())

    venv = tmp_path / "venv"
    run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv],
        tmp_path,
        env,
    )
    python = venv / "bin" / "python"
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            python,
            "install",
            "--no-deps",
            "--no-index",
            wheel,
        ],
        tmp_path,
        env,
    )
    # torch and the other dependencies come from the environment running this test (a venv
    # only sees its base interpreter's packages); its editable fakescope stays out, because
    # .pth files in a folder added this way are not run.
    purelib = Path(
        run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            tmp_path,
            env,
        ).strip()
    )
    ours = dict.fromkeys([*site.getsitepackages(), sysconfig.get_paths()["purelib"]])
    (purelib / "_test_dependencies.pth").write_text("\n".join(ours) + "\n")

    work = tmp_path / "work"
    work.mkdir()
    where = run([python, "-c", "import fakescope; print(fakescope.__file__)"], work, env).strip()
    assert Path(where).is_relative_to(purelib) and not Path(where).is_relative_to(ROOT)
    run([python, "-m", "fakescope.example", "astronaut.mp4"], work, env)
    run(
        [venv / "bin" / "fakescope", "analyze", "astronaut.mp4", "--out", "out", "--frames", "8"],
        work,
        env,
    )
    report = json.loads((work / "out" / "astronaut" / "report.json").read_text())
    assert Path(report["model"]["config"]).is_relative_to(purelib)
    assert (
        report["label"] in ("fake", "real", "inconclusive") and len(report["frames_analysed"]) == 8
    )
    assert (work / "out" / "astronaut" / "report.html").stat().st_size > 1000
