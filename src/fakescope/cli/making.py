"""The commands that make and measure models: train, pack, calibrate, xai-eval and
`models`. Those that load PyTorch's training code are deferred (options.deferred)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from ..options import deferred, pick, with_fields
from ..settings import Settings
from ..types import FakescopeError
from .common import (
    Common,
    app,
    at_least,
    err,
    exit_on_failure,
    fail_line,
    guarded,
    models_app,
    out,
)


def _xai_eval() -> Callable[..., None]:
    from ..evaluate import labelled_faces, paired_faces
    from ..explain.xai_eval import XaiRun, run_xai_eval
    from ..pipeline import Analyzer

    @with_fields(Common, XaiRun)
    def xai_eval(
        dataset: Path = typer.Argument(
            ..., help="folder with real/ and fake/ face crops (or images with --no-crops)"
        ),
        out_dir: Path = typer.Option(Path("fakescope-xai"), "--out"),
        crops: bool = typer.Option(True, "--crops/--no-crops", help="inputs are face crops"),
        limit: int = typer.Option(
            64, "--limit", help="images used, half real, half fake (with --pairs: fakes)"
        ),
        member: int = typer.Option(0, "--member", help="which ensemble member to explain"),
        pairs: bool = typer.Option(
            False,
            "--pairs",
            help="videos: localise against where each fake differs from the `pristine` video "
            "its manifest names (the faces analyze shows)",
        ),
        *,
        fields: dict[str, Any],
    ) -> None:
        skipped: list[str] = []  # pairs left out, one line each

        def run():
            at_least("--limit", limit, 1 if pairs else 2)  # fakes; else half real, half fake
            at_least("--member", member, 0)
            how = XaiRun(**pick(XaiRun, fields))
            analyzer = Analyzer(fields["model"], Settings(), fields["device"])
            chosen = analyzer.ensemble.member(member)
            faces = (
                paired_faces(analyzer, dataset, chosen.spec.crop, limit, out_dir / "masks", skipped)
                if pairs
                else labelled_faces(analyzer, dataset, chosen.spec.crop, crops, limit)
            )
            return run_xai_eval(
                chosen, faces, out_dir, str(dataset), how, pairs=pairs, skipped=skipped
            )

        written, code = guarded(str(dataset), run)
        if written is not None:
            # The tables, one row per method.
            out.print(written[1].read_text(encoding="utf-8"), markup=False)
            out.print(f"wrote {written[0]} and {written[1]}", markup=False)
            for reason in skipped:
                err.print(f"warning: left out {reason}", markup=False)
        raise typer.Exit(code)

    return xai_eval


deferred(
    app,
    "xai-eval",
    "The paper's Table 1, deletion/insertion AUC, localisation on self-blended fakes (or real "
    "manipulations, --pairs), sanity check.",
    _xai_eval,
)


def _calibrate() -> Callable[..., None]:
    from ..calibrate import Calibration, Tempered, write_calibrated, write_temperature

    @with_fields(Calibration)
    def calibrate(
        scores: Path = typer.Argument(
            ...,
            help="scores.npz of `fakescope evaluate --crops` on held-out crops (fits the "
            "temperature and bias), or its videos.csv on held-out videos (fits the decision)",
        ),
        config: Path = typer.Option(
            ..., "--out", help="the new ensemble config (.json): the model's members and fit"
        ),
        *,
        fields: dict[str, Any],
    ) -> None:
        def run():
            fit = write_temperature if scores.suffix == ".npz" else write_calibrated
            return fit(scores, config, Calibration(**fields))

        result, code = guarded(str(scores), run)
        if isinstance(result, Tempered):
            out.print(
                f"temperature {result.temperature:.3f}, bias {result.bias:+.3f} on "
                f"{result.crops} crops: log loss (classes weighted equally) "
                f"{result.log_loss_before:.3f} -> {result.log_loss_after:.3f} -> {config}",
                markup=False,
            )
            if result.dropped_decision:
                out.print(
                    "the model's video decision was left out (fitted on other probabilities): "
                    "fit it again on held-out videos scored with the new config",
                    markup=False,
                )
        elif result is not None:
            out.print(
                f"fake at >= {result.threshold:.3f}, real below {result.real_below:.3f} "
                f"-> {config}",
                markup=False,
            )
        raise typer.Exit(code)

    return calibrate


deferred(
    app,
    "calibrate",
    "Fit an ensemble's temperature on held-out crops, or its video decision (threshold, "
    "real-below; between the two the answer is inconclusive) on held-out videos. Never fit on "
    "data you then report: evaluate elsewhere, or fit on one part and report on the other.",
    _calibrate,
)


@models_app.command("list")
def models_list() -> None:
    """Shipped models and the architectures fakescope can build."""
    from ..models.ensemble import installed_models
    from ..models.registry import ARCHITECTURES

    shipped = installed_models()
    out.print(
        "shipped models: " + (", ".join(shipped) if shipped else "none installed"), markup=False
    )
    for name, path in shipped.items():
        out.print(f"  {name}: {path}", markup=False)
    out.print("architectures:", markup=False)
    for arch in ARCHITECTURES.values():
        out.print(
            f"  {arch.name} (timm {arch.timm_name}, {arch.crop.size}px {arch.crop.resize}, "
            f"margin {arch.crop.margin:.2f}): {arch.description}",
            markup=False,
        )


@models_app.command("import")
def models_import(
    path: Path = typer.Argument(..., help="a published checkpoint"),
    fmt: str = typer.Option(..., "--format", help="dfdc-b7, resnext50 or fakescope"),
    out_dir: Path = typer.Option(
        Path("fakescope-models"), "--out", help="folder for <name>.safetensors + <name>.json"
    ),
    name: str | None = typer.Option(None, "--name"),
    half: bool = typer.Option(
        False, "--half", help="store the weights in fp16 (half the size; computed in fp32)"
    ),
) -> None:
    """Convert a checkpoint into fakescope's format (safetensors + JSON with sha256); loads
    strictly."""
    from ..models.checkpoints import import_checkpoint

    spec, code = guarded(str(path), lambda: import_checkpoint(path, fmt, out_dir, name, half))
    if spec is not None:
        out.print(
            f"imported {path} -> {out_dir / (spec.name + '.json')} (sha256 {spec.sha256})",
            markup=False,
        )
    raise typer.Exit(code)


@app.command()
def pack(
    dataset: Path = typer.Argument(
        ...,
        help="folder with real/ and fake/ face crops (manifest.csv beside keeps clusters together)",
    ),
    destination: Path = typer.Option(..., "--out", help="the pack file to write (.safetensors)"),
    budget_mb: float = typer.Option(
        50,
        "--budget-mb",
        help="largest pack size in MiB (50 leaves room for the checkout in a 64 MiB transfer); "
        "whole clusters are kept while they fit; 0 keeps all",
    ),
    seed: int = typer.Option(0, "--seed", help="order in which clusters are taken"),
    landmarks68: bool = typer.Option(
        False,
        "--landmarks68",
        help="also dlib's 68 landmarks, for SBI's hull masks (`train --sbi-landmarks 68`); "
        "needs the extra `landmarks` (non-commercial predictor)",
    ),
) -> None:
    """Pack face crops into one file for `train`: original bytes (never re-encoded) and
    landmarks."""

    def action() -> dict[str, int]:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        from ..faces import Landmarks68, get_detector
        from ..training.pack import build_pack

        detector = get_detector(Settings.detector, score_threshold=0.5)
        points68 = Landmarks68() if landmarks68 else None
        with Progress(
            TextColumn("landmarks"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err,
            disable=not sys.stderr.isatty(),
        ) as bar:
            task = bar.add_task("", total=None)
            return build_pack(
                dataset,
                destination,
                detector,
                budget_mb or None,
                seed,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
                points68=points68,
            )

    if destination.suffix != ".safetensors":
        raise typer.Exit(
            fail_line(str(destination), FakescopeError("--out: a pack is a .safetensors file"))
        )
    if not budget_mb >= 0:
        raise typer.Exit(
            fail_line("--budget-mb", FakescopeError(f"{budget_mb}: must be 0 (no limit) or more"))
        )
    counts, code = guarded(str(dataset), action)
    if counts:
        out.print(
            f"{destination}: {counts['crops']} crops "
            f"({counts['real']} real, {counts['fake']} fake), "
            f"{counts['bytes'] / 2**20:.1f} MiB"
        )
    raise typer.Exit(code)


def _train() -> Callable[..., None]:
    from ..training.train import TrainConfig
    from ..training.train import train as run_training

    @with_fields(TrainConfig)
    def train(*, fields: dict[str, Any]) -> None:
        config = exit_on_failure("setup", lambda: TrainConfig(**fields))
        run = lambda: run_training(config, progress=sys.stderr.isatty())  # noqa: E731
        raise typer.Exit(guarded(config.dataset, run)[1])

    return train


deferred(app, "train", "Train a one-logit classifier; rerun the same command to resume.", _train)
