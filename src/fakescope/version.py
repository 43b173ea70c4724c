"""The package version, in one place: pyproject.toml reads it, reports and the server print it."""

__version__ = "0.1.0"
