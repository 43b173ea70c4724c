"""The `fakescope` command line: a thin layer over the Python API, one module per concern
(common.py: what every command shares; analysis.py; making.py)."""

from . import analysis, making  # noqa: F401  (importing them adds their commands to app)
from .common import app

__all__ = ["app"]
