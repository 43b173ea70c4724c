"""scripts/soft_probe.py refuses bad input in one line, before it loads a model."""

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "soft_probe.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120
    )


def test_soft_probe_refuses_bad_input_in_one_line(tmp_path):
    missing = _run(str(tmp_path / "none.mp4"))
    assert missing.returncode == 2 and "no such video" in missing.stderr
    image = tmp_path / "face.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    shown = _run(str(image))
    assert shown.returncode == 1
    assert shown.stderr.strip() == f"soft_probe: {image}: an image, not a video"
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video")
    broken = _run(str(junk))
    assert broken.returncode == 1 and len(broken.stderr.strip().splitlines()) == 1
    for bad in (["--crf", "60"], ["--blur", "nan"]):
        refused = _run(str(junk), *bad)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
