"""The `fakescope` command line: a thin layer over the Python API.

Every user-facing failure is a FakescopeError, printed as one line; its exit_code says which
kind (2 usage/setting, 3 unreadable media, 4 no face, 5 weights). Set FAKESCOPE_DEBUG=1 for
tracebacks. Options that set a field of Settings, Limits, TrainConfig or Common come from
that field (options.with_fields): its type, default and help are declared there only.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from .explain import DEFAULT as DEFAULT_EXPLAIN
from .options import deferred, flagged, pick, with_fields
from .report import FORMATS
from .server.config import LOOPBACK, ServerConfig
from .settings import Settings
from .types import DEFAULT_MODEL, FakescopeError, Limits, NoFaceError, SettingError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)
models_app = typer.Typer(
    no_args_is_help=True, help="List shipped models; import published checkpoints."
)
app.add_typer(models_app, name="models")
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


@dataclass(frozen=True)
class Common:
    """Options most commands share."""

    model: str = field(
        default=DEFAULT_MODEL, metadata={"help": "shipped model name or a config .json"}
    )
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})


def fail_line(source: str, error: BaseException) -> int:
    """Print one line for a failed input and return its exit code."""
    if os.environ.get("FAKESCOPE_DEBUG"):
        err.print_exception()
    if isinstance(error, FakescopeError):
        message = flagged(error) if isinstance(error, SettingError) else str(error)
        err.print(
            f"error: {message if source in message else f'{source}: {message}'}", markup=False
        )
        return error.exit_code
    err.print(f"error: {source}: unexpected {type(error).__name__}: {error}", markup=False)
    return 1


def guarded(source: str, action):
    """Run an action for one input; a failure becomes one line and an exit code."""
    try:
        return action(), 0
    except Exception as error:
        return None, fail_line(source, error)


def _at_least(option: str, value: int | None, low: int, high: int | None = None) -> None:
    """A whole-number option outside [low, high] is a bad setting (exit 2); None means unset."""
    if value is not None and not (low <= value and (high is None or value <= high)):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise FakescopeError(f"{option} must be {bound}, got {value}")


def _methods(value: str | None) -> list[str] | None:
    """Comma-separated method names; "none" (or nothing): None."""
    if not value or value.strip().lower() == "none":
        return None
    return [m.strip() for m in value.split(",") if m.strip()]


def _configured(given: dict[str, Any]) -> tuple[Settings, Limits]:
    return Settings(**pick(Settings, given)), Limits(**pick(Limits, given))


def _exit_on_failure(source: str, action):
    result, code = guarded(source, action)
    if result is None:
        raise typer.Exit(code)
    return result


@app.callback()
def main() -> None:
    """Detect synthesized faces in videos and images, and show where the evidence is."""


@app.command()
@with_fields(Common, Settings, Limits)
def analyze(
    inputs: list[Path] = typer.Argument(..., help="videos or images"),
    out_dir: Path = typer.Option(
        Path("fakescope-out"),
        "--out",
        help="writes OUT/<input stem>/report.html and report.json (<stem>-<hash> when taken)",
    ),
    explain: str = typer.Option(
        DEFAULT_EXPLAIN,
        "--explain",
        help="heat maps for the chosen frames, e.g. hirescam++,gradcam-n,gradcam-n1,hirescam; "
        "none for the fast path without them",
    ),
    fmt: str = typer.Option(
        "all", "--format", help=f"{', '.join(FORMATS)} (comma-separated), or all"
    ),
    overlay_video: bool = typer.Option(
        False,
        "--overlay-video",
        help="also write overlay.mp4: every analysed frame with its HiResCAM++ map, face boxes "
        "and the verdict",
    ),
    *,
    fields: dict[str, Any],
) -> None:
    """Analyse videos or images; one summary line per input."""
    from .files import output_folders
    from .media import probe
    from .pipeline import Analyzer
    from .report import check_formats

    def setup():
        formats = check_formats(FORMATS if fmt == "all" else fmt.split(","))
        return (*_configured(fields), [*formats, *(["overlay_video"] if overlay_video else [])])

    settings, limits, formats = _exit_on_failure("setup", setup)
    # Inputs are checked before the models load: a bad file fails in a fraction of a second.
    worst, readable = 0, {}
    for path in inputs:
        info, code = guarded(str(path), lambda path=path: probe(path, limits))
        worst = max(worst, code)
        if info is not None:
            readable[path] = info
    if not readable:
        raise typer.Exit(worst)
    analyzer = _exit_on_failure(
        "setup", lambda: Analyzer(fields["model"], settings, fields["device"], limits)
    )
    folders = output_folders(out_dir, list(readable))
    for path, info in readable.items():
        target = folders[path]

        def run(path=path, info=info, target=target):
            pictures = formats != ["json"]
            report = analyzer.analyze(
                path,
                target,
                _methods(explain),
                keep_frames=pictures,
                overlay="overlay_video" in formats,
                media=info,
            )
            return report.save(target, formats)

        report, code = guarded(str(path), run)
        if report is not None:
            out.print(f"{report.summary()} -> {target}", markup=False)
            # Where the deciding track's evidence is (or the first explained track's).
            shown = next(
                (
                    t
                    for t in (report.verdict.deciding_track, *report.evidence)
                    if t in report.evidence
                ),
                None,
            )
            if shown is not None:
                out.print(f"  track {shown}: {report.evidence[shown]['evidence']}", markup=False)
            for warning in report.warnings:
                err.print(f"warning: {path}: {warning}", markup=False)
            if report.label == "no_face":
                code = NoFaceError.exit_code
        worst = max(worst, code)
    raise typer.Exit(worst)


@app.command()
@with_fields(Common, ServerConfig, Settings, Limits)
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="0.0.0.0 to listen on every interface"),
    port: int = typer.Option(8000, "--port"),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar="FAKESCOPE_TOKEN",
        show_envvar=True,
        help="the API's access token (default: a new random one, printed at start)",
    ),
    no_token: bool = typer.Option(
        False, "--no-token", help="no token: anyone reaching the server may use it (loopback)"
    ),
    allowed_host: list[str] = typer.Option(
        [], "--allowed-host", help="a name clients use for the server (repeat; default: loopback)"
    ),
    *,
    fields: dict[str, Any],
) -> None:
    """Web page and HTTP API: upload a video or image, get the verdict and heat maps
    (docs/security.md)."""
    import uvicorn

    from .server.app import create_app

    def setup():
        _at_least("--port", port, 1, 65535)
        config = ServerConfig(**pick(ServerConfig, fields))  # checked before the model loads
        settings, limits = _configured(fields)
        if no_token and host not in LOOPBACK:
            raise FakescopeError(f"--no-token needs a loopback --host ({', '.join(LOOPBACK)})")
        if token is not None and len(token) < 16:
            raise FakescopeError("--token must be at least 16 characters")
        named = host not in LOOPBACK and host not in ("0.0.0.0", "::")
        hosts = tuple(allowed_host) or ((*LOOPBACK, host) if named else LOOPBACK)
        return create_app(
            fields["model"],
            fields["device"],
            settings,
            limits,
            token=None if no_token else token or secrets.token_urlsafe(24),
            allowed_hosts=hosts,
            **asdict(config),
        )

    web = _exit_on_failure("setup", setup)
    shown = f"[{host}]" if ":" in host else ("127.0.0.1" if host in ("0.0.0.0", "::") else host)
    secret = f"/?token={web.state.token}" if web.state.token else ""
    err.print(f"fakescope: open http://{shown}:{port}{secret}", markup=False)
    # limit_concurrency: connections beyond it get 503 before the app sees them.
    pending = fields["max_pending"]
    uvicorn.run(
        web, host=host, port=port, limit_concurrency=max(64, 4 * pending), timeout_keep_alive=5
    )


class Engine(str, Enum):
    local = "local"
    ray = "ray"


@app.command()
@with_fields(Common, Settings, Limits)
def scan(
    paths: list[Path] = typer.Argument(
        ..., help="files or folders (searched recursively; symlinked folders are not followed)"
    ),
    db: Path = typer.Option(
        Path("results.sqlite"),
        "--db",
        help="SQLite store, one row per input content x model x settings; rerun to resume",
    ),
    out_file: Path | None = typer.Option(
        None, "--out", help="at the end, export the rows of these inputs as JSON lines"
    ),
    export_all: bool = typer.Option(
        False, "--export-all", help="with --out: the store's rows for this model and settings"
    ),
    crops: bool = typer.Option(
        False, "--crops", help="every input already is a face crop: skip detection"
    ),
    retry_errors: bool = typer.Option(
        False, "--retry-errors", help="score inputs whose stored row is an error again"
    ),
    engine: Engine = typer.Option(Engine.local, "--engine", help="local threads, or Ray actors"),
    ray_address: str | None = typer.Option(
        None,
        "--ray-address",
        help="an existing Ray cluster, e.g. auto (default: start a local one)",
    ),
    workers: int | None = typer.Option(
        None, "--workers", help="local decode/detect threads (default: one per core)"
    ),
    quiet: bool = typer.Option(False, "--quiet", help="plain log lines instead of a progress bar"),
    *,
    fields: dict[str, Any],
) -> None:
    """Score many files into a SQLite store; a bad file gets an error row and the batch goes on.

    Exit code 0 when every input was scored (no face found counts as scored), 1 when any input is
    an error row.
    """
    from .pipeline import Analyzer
    from .scan import run_scan

    def setup():
        _at_least("--workers", workers, 1)
        settings, limits = _configured(fields)
        return Analyzer(fields["model"], settings, fields["device"], limits)

    analyzer = _exit_on_failure("setup", setup)
    summary, code = guarded(
        "scan",
        lambda: run_scan(
            analyzer,
            paths,
            db,
            out_file,
            crops=crops,
            engine=engine.value,
            ray_address=ray_address,
            workers=workers,
            retry_errors=retry_errors,
            quiet=quiet,
            console=err,
            export_all=export_all,
        ),
    )
    if summary is not None:
        out.print(summary.line(), markup=False)
        code = 1 if summary.errors else 0
    raise typer.Exit(code)


@app.command()
@with_fields(Common, Settings, Limits)
def evaluate(
    dataset: Path = typer.Argument(
        ...,
        help="folder with real/ and fake/ (videos, images or face crops); "
        "a manifest.csv beside adds groups",
    ),
    out_dir: Path = typer.Option(
        Path("fakescope-eval"),
        "--out",
        help="metrics.json, videos.csv (not --crops), roc.png, reliability.png",
    ),
    crops: bool = typer.Option(
        False, "--crops", help="inputs already are face crops: skip detection"
    ),
    limit: int | None = typer.Option(
        None, "--limit", help="evaluate an even, spread-out sample of this many files"
    ),
    group_by: str = typer.Option(
        "manipulation", "--group-by", help="manifest column whose values get their own rows"
    ),
    *,
    fields: dict[str, Any],
) -> None:
    """Crops: AUC, log loss, accuracy, EER with 95% intervals. Videos: the same per file, plus
    false-alarm, detection, miss and inconclusive rates at the decision, per group and per face
    size."""
    from .evaluate import evaluate_crops, evaluate_videos, metrics_line, results_table
    from .pipeline import Analyzer

    def run():
        _at_least("--limit", limit, 1)
        settings, limits = _configured(fields)
        analyzer = Analyzer(fields["model"], settings, fields["device"], limits)
        if crops:
            return evaluate_crops(analyzer, dataset, out_dir, limit)
        progress = lambda line: err.print(line, markup=False)  # noqa: E731
        return evaluate_videos(analyzer, dataset, out_dir, limit, group_by, progress=progress)

    result, code = guarded(str(dataset), run)
    if result is not None and crops:
        out.print(metrics_line(result), markup=False)
        out.print(f"wrote {out_dir / 'metrics.json'}, roc.png, reliability.png", markup=False)
    elif result is not None:
        d = result["decision"]
        table = results_table(
            result,
            f"{dataset}: fake at >= {d['threshold']:.3f}, real below {d['real_below']:.3f} "
            "(95% intervals)",
        )
        # Too many columns to wrap well.
        Console(highlight=False, width=max(out.width, 150)).print(table)
        out.print(f"wrote {out_dir / 'metrics.json'} and {out_dir / 'videos.csv'}", markup=False)
    raise typer.Exit(code)


@app.command("explain")
@with_fields(Common, Settings, only=("model", "device", "detector"))
def explain_images(
    images: list[Path] = typer.Argument(..., help="images, or face crops with --crops"),
    out_dir: Path = typer.Option(Path("fakescope-explain"), "--out"),
    methods: str = typer.Option(
        "hirescam++,gradcam-n,gradcam-n1,hirescam", "--methods", help="comma-separated"
    ),
    crops: bool = typer.Option(False, "--crops", help="each image already is a face crop"),
    *,
    fields: dict[str, Any],
) -> None:
    """Heat maps for single images: overlays and a comparison strip per image."""
    from .pipeline import Analyzer

    analyzer = _exit_on_failure(
        "setup",
        lambda: Analyzer(fields["model"], Settings(**pick(Settings, fields)), fields["device"]),
    )
    worst = 0
    for path in images:
        written, code = guarded(
            str(path),
            lambda path=path: analyzer.explain_image(
                path, _methods(methods), out_dir / path.stem, crops
            ),
        )
        if written is not None:
            out.print(
                f"{path}: {len(written)} face(s), "
                f"p(fake) {', '.join(f'{s:.3f}' for s, _ in written)} -> {out_dir / path.stem}",
                markup=False,
            )
            for i, (_, sentence) in enumerate(written):
                out.print(f"  face {i + 1}: {sentence}", markup=False)
        worst = max(worst, code)
    raise typer.Exit(worst)


def _xai_eval() -> Callable[..., None]:
    from .evaluate import labelled_faces, paired_faces
    from .explain.xai_eval import XaiRun, run_xai_eval
    from .pipeline import Analyzer

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
            _at_least("--limit", limit, 1 if pairs else 2)  # fakes; else half real, half fake
            _at_least("--member", member, 0)
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
    from .calibrate import Calibration, write_calibrated

    @with_fields(Calibration)
    def calibrate(
        scores: Path = typer.Argument(
            ..., help="videos.csv written by `fakescope evaluate` on held-out videos"
        ),
        config: Path = typer.Option(
            ..., "--out", help="the new ensemble config (.json): the model's members and decision"
        ),
        *,
        fields: dict[str, Any],
    ) -> None:
        def run():
            return write_calibrated(scores, config, Calibration(**fields))

        result, code = guarded(str(scores), run)
        if result is not None:
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
    "Fit the video decision (threshold, real-below) on held-out videos; between the two the "
    "answer is inconclusive. Never fit on videos you then report: evaluate elsewhere, or fit on "
    "one part and report on the other.",
    _calibrate,
)


@models_app.command("list")
def models_list() -> None:
    """Shipped models and the architectures fakescope can build."""
    from .models.ensemble import installed_models
    from .models.registry import ARCHITECTURES

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
    from .models.checkpoints import import_checkpoint

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

        from .faces import Landmarks68, get_detector
        from .training.pack import build_pack

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
    from .training.train import TrainConfig
    from .training.train import train as run_training

    @with_fields(TrainConfig)
    def train(*, fields: dict[str, Any]) -> None:
        config = _exit_on_failure("setup", lambda: TrainConfig(**fields))
        run = lambda: run_training(config, progress=sys.stderr.isatty())  # noqa: E731
        raise typer.Exit(guarded(config.dataset, run)[1])

    return train


deferred(app, "train", "Train a one-logit classifier; rerun the same command to resume.", _train)


if __name__ == "__main__":
    app()
