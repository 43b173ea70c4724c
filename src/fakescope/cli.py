"""The `fakescope` command line: a thin layer over the Python API.

Every user-facing failure is a FakescopeError, printed as one line; its exit_code says which
kind (2 usage/setting, 3 unreadable media, 4 no face, 5 weights). Set FAKESCOPE_DEBUG=1 for tracebacks.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from rich.console import Console

from .types import FakescopeError, NoFaceError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)
models_app = typer.Typer(no_args_is_help=True, help="List shipped models; import published checkpoints.")
app.add_typer(models_app, name="models")
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


def fail_line(source: str, error: BaseException) -> int:
    """Print one line for a failed input and return its exit code."""
    if os.environ.get("FAKESCOPE_DEBUG"):
        err.print_exception()
    if isinstance(error, FakescopeError):
        message = str(error)
        err.print(f"error: {message if source in message else f'{source}: {message}'}", markup=False)
        return error.exit_code
    err.print(f"error: {source}: unexpected {type(error).__name__}: {error}", markup=False)
    return 1


def guarded(source: str, action):
    """Run an action for one input; a failure becomes one line and an exit code."""
    try:
        return action(), 0
    except Exception as error:  # noqa: BLE001 - the CLI must never show a traceback
        return None, fail_line(source, error)


def _methods(value: str | None) -> list[str] | None:
    return [m.strip() for m in value.split(",") if m.strip()] if value else None


@app.callback()
def main() -> None:
    """Detect synthesized faces in videos and images, and show where the evidence is."""


@app.command()
def analyze(
    inputs: list[Path] = typer.Argument(..., help="videos or images"),
    out_dir: Path = typer.Option(Path("fakescope-out"), "--out", help="writes OUT/<input stem>/report.json"),
    model: str = typer.Option("default", "--model", help="shipped model name or a config .json"),
    frames: int = typer.Option(32, "--frames", help="frames sampled evenly per video"),
    detector: str = typer.Option("retinaface", "--detector", help="retinaface or mtcnn"),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda"),
    strategy: str = typer.Option("confident", "--strategy", help="per-track aggregation: confident or mean"),
    threshold: float = typer.Option(0.5, "--threshold", help="P(fake) at or above which the label is fake"),
    explain: str | None = typer.Option(None, "--explain", help="heat maps for the chosen frames, e.g. hirescam++,gradcam-n,gradcam-n1,hirescam"),
) -> None:
    """Analyse videos or images; one summary line per input."""
    from .pipeline import Analyzer, Settings

    analyzer, code = guarded("setup", lambda: Analyzer(model, Settings(frames, detector, strategy, threshold), device))
    if analyzer is None:
        raise typer.Exit(code)
    worst = 0
    for path in inputs:
        target = out_dir / path.stem

        def run(path=path, target=target):
            report = analyzer.analyze(path, target, _methods(explain))
            report.write_json(target / "report.json")
            return report

        report, code = guarded(str(path), run)
        if report is not None:
            out.print(report.summary(), markup=False)
            if report.label == "no_face":
                code = NoFaceError.exit_code
        worst = max(worst, code)
    raise typer.Exit(worst)


@app.command()
def scan(
    paths: list[Path] = typer.Argument(..., help="files or folders (searched recursively)"),
    out_file: Path = typer.Option(Path("results.jsonl"), "--out", help="one JSON line per input"),
    crops: bool = typer.Option(False, "--crops", help="every input already is a face crop: skip detection"),
    model: str = typer.Option("default", "--model"),
    frames: int = typer.Option(32, "--frames"),
    detector: str = typer.Option("retinaface", "--detector"),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Score many files; a bad file gets an error row and the batch goes on."""
    from .pipeline import Analyzer, Settings
    from .scan import run_scan

    analyzer, code = guarded("setup", lambda: Analyzer(model, Settings(frames, detector), device))
    if analyzer is None:
        raise typer.Exit(code)
    summary, code = guarded("scan", lambda: run_scan(analyzer, paths, out_file, crops=crops))
    if summary is not None:
        out.print(summary.line(), markup=False)
        code = 0 if summary.failed == 0 else 1
    raise typer.Exit(code)


@models_app.command("list")
def models_list() -> None:
    """Shipped models and the architectures fakescope can build."""
    from .models.ensemble import installed_models
    from .models.registry import ARCHITECTURES

    shipped = installed_models()
    out.print("shipped models: " + (", ".join(shipped) if shipped else "none installed"), markup=False)
    for name, path in shipped.items():
        out.print(f"  {name}: {path}", markup=False)
    out.print("architectures:", markup=False)
    for arch in ARCHITECTURES.values():
        out.print(f"  {arch.name} (timm {arch.timm_name}, {arch.crop.size}px {arch.crop.resize}, margin {arch.crop.margin:.2f}): {arch.description}", markup=False)


@models_app.command("import")
def models_import(
    path: Path = typer.Argument(..., help="a published checkpoint"),
    fmt: str = typer.Option(..., "--format", help="dfdc-b7, resnext50 or fakescope"),
    out_dir: Path = typer.Option(Path("fakescope-models"), "--out", help="folder for <name>.safetensors + <name>.json"),
    name: str | None = typer.Option(None, "--name"),
) -> None:
    """Convert a checkpoint into fakescope's format (safetensors + JSON with sha256); loads strictly."""
    from .models.checkpoints import import_checkpoint

    spec, code = guarded(str(path), lambda: import_checkpoint(path, fmt, out_dir, name))
    if spec is not None:
        out.print(f"imported {path} -> {out_dir / (spec.name + '.json')} (sha256 {spec.sha256})", markup=False)
    raise typer.Exit(code)


@app.command()
def train(
    dataset: Path = typer.Argument(..., help="folder with real/ and fake/ face crops (manifest.csv beside keeps clusters together)"),
    out: Path = typer.Option(..., "--out", help="run folder: checkpoints, logs, the exported model"),
    arch: str = typer.Option("efficientnet-lite0", "--arch", help="architecture name (see `fakescope models list`)"),
    val: Path | None = typer.Option(None, "--val", help="a separate split to report each epoch"),
    epochs: int = typer.Option(4, "--epochs"),
    epoch_size: int = typer.Option(12000, "--epoch-size", help="images drawn per epoch, half real, half fake"),
    batch_size: int = typer.Option(32, "--batch-size"),
    lr: float = typer.Option(5e-4, "--lr"),
    workers: int = typer.Option(1, "--workers", help="data-loading processes"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda"),
    seed: int = typer.Option(0, "--seed"),
    name: str | None = typer.Option(None, "--name", help="name of the exported model (default: the architecture)"),
    freeze: int = typer.Option(3, "--freeze", help="EfficientNet: keep the stem and this many first stages frozen"),
) -> None:
    """Train a one-logit classifier; rerun the same command to resume."""
    from .training.train import TrainConfig, train as run_training

    config = TrainConfig(dataset=str(dataset), out=str(out), arch=arch, val=str(val) if val else None, epochs=epochs,
                         epoch_size=epoch_size, batch_size=batch_size, lr=lr, workers=workers, device=device, seed=seed, name=name, freeze=freeze)
    _, code = guarded(str(dataset), lambda: run_training(config, progress=sys.stderr.isatty()))
    raise typer.Exit(code)


if __name__ == "__main__":
    app()
