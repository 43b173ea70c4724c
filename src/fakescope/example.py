"""Build the bundled example: `python -m fakescope.example OUT.mp4` writes a short 1280x720
video of the astronaut photo (public domain, NASA) shipped in fakescope/assets."""

from __future__ import annotations

import sys
from pathlib import Path

from .encode import make_example_video


def main(argv: list[str]) -> int:
    target = Path(argv[0] if argv else "example/astronaut.mp4")
    target.parent.mkdir(parents=True, exist_ok=True)
    make_example_video(target)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
