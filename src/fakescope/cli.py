"""The `fakescope` command line: a thin layer over the Python API."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Detect synthesized faces in videos and images, and show where the evidence is.")


@app.callback()
def main() -> None:
    """Detect synthesized faces in videos and images, and show where the evidence is."""


@app.command()
def train(
    dataset: Path = typer.Argument(..., help="folder with real/ and fake/ face crops (manifest.csv beside keeps clusters together)"),
    out: Path = typer.Option(..., "--out", help="run folder: checkpoints, logs, the exported model"),
    arch: str = typer.Option("efficientnet-lite0", "--arch", help="architecture name (see `fakescope models list`)"),
    val: Path | None = typer.Option(None, "--val", help="a separate split to report each epoch"),
    epochs: int = typer.Option(5, "--epochs"),
    epoch_size: int = typer.Option(16000, "--epoch-size", help="images drawn per epoch, half real, half fake"),
    batch_size: int = typer.Option(32, "--batch-size"),
    lr: float = typer.Option(5e-4, "--lr"),
    workers: int = typer.Option(1, "--workers", help="data-loading processes"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda"),
    seed: int = typer.Option(0, "--seed"),
    name: str | None = typer.Option(None, "--name", help="name of the exported model (default: the architecture)"),
) -> None:
    """Train a one-logit classifier; rerun the same command to resume."""
    from .training.train import TrainConfig, train as run_training

    config = TrainConfig(dataset=str(dataset), out=str(out), arch=arch, val=str(val) if val else None, epochs=epochs,
                         epoch_size=epoch_size, batch_size=batch_size, lr=lr, workers=workers, device=device, seed=seed, name=name)
    run_training(config, progress=False)


if __name__ == "__main__":
    app()
