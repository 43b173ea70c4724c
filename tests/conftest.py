"""Shared fixtures: generated media, a small random-weights model, the shared data folder
(plain helpers are in helpers.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests run beside other work on small machines: one intra-op thread keeps them predictable.
os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch

from helpers import shared_data_dir

torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Exported ONNX models go to a temporary cache, not the user's."""
    os.environ["FAKESCOPE_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return shared_data_dir()


@pytest.fixture(scope="session")
def random_model(tmp_path_factory) -> Path:
    """A fakescope-format EfficientNet-Lite0 with random weights (config path)."""
    from fakescope.models.checkpoints import save_fakescope
    from fakescope.models.registry import ModelSpec, get_arch

    torch.manual_seed(0)
    arch = get_arch("efficientnet-lite0")
    directory = tmp_path_factory.mktemp("model")
    save_fakescope(arch.build().eval(), ModelSpec("random-lite0", arch.name, arch.crop), directory)
    return directory / "random-lite0.json"


@pytest.fixture(scope="session")
def example_video(tmp_path_factory) -> Path:
    """A 2 s 1280x720 H.264 video of the bundled astronaut photo."""
    from fakescope.encode import make_example_video

    return make_example_video(tmp_path_factory.mktemp("video") / "astronaut.mp4", seconds=2)


@pytest.fixture(scope="session")
def small_video(tmp_path_factory) -> Path:
    """A 2 s 640x360 H.264 video of the astronaut: a face about 40 px wide."""
    from fakescope.encode import make_example_video

    return make_example_video(
        tmp_path_factory.mktemp("media") / "clip.mp4", seconds=2, size=(640, 360)
    )
