"""fakescope: tell whether a face was synthesized, and show where the evidence is.

import fakescope
report = fakescope.analyze("clip.mp4", out_dir="out")  # heat maps: HiResCAM++ by default
print(report.label, report.fake_probability)
"""

from .version import __version__

__all__ = ["Analyzer", "Report", "__version__", "analyze"]


def __getattr__(name: str):
    # Lazy, so `import fakescope.types` or the CLI's --help do not pay for torch and timm.
    if name in ("Analyzer", "analyze"):
        from . import pipeline

        return getattr(pipeline, name)
    if name == "Report":
        from .report import Report

        return Report
    raise AttributeError(name)
