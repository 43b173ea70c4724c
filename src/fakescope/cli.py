"""The `fakescope` command line: a thin layer over the Python API.

Every user-facing failure is a FakescopeError, printed as one line; its exit_code says which
kind (2 usage/setting, 3 unreadable media, 4 no face, 5 weights). Set FAKESCOPE_DEBUG=1 for
tracebacks.
"""

from __future__ import annotations

import os
import secrets
import sys
from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console

from .explain import DEFAULT as DEFAULT_EXPLAIN
from .settings import Settings
from .types import FakescopeError, NoFaceError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)
models_app = typer.Typer(
    no_args_is_help=True, help="List shipped models; import published checkpoints."
)
app.add_typer(models_app, name="models")
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


def fail_line(source: str, error: BaseException) -> int:
    """Print one line for a failed input and return its exit code."""
    if os.environ.get("FAKESCOPE_DEBUG"):
        err.print_exception()
    if isinstance(error, FakescopeError):
        message = str(error)
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


# The verdict's options, shared by analyze, scan and evaluate (pipeline.Settings documents them).
Threshold = Annotated[
    float | None,
    typer.Option(
        "--threshold",
        help="P(fake) at or above which a video is fake (default: the model's fitted decision)",
    ),
]
RealBelow = Annotated[
    float | None,
    typer.Option(
        "--real-below",
        help="P(fake) below which it is real; in between: inconclusive (default: the model's)",
    ),
]
MinFace = Annotated[
    float,
    typer.Option("--min-face", help="faces with a shorter side under this many px are not judged"),
]
MinSharpness = Annotated[
    float,
    typer.Option(
        "--min-sharpness", help="blurrier faces are not judged (Laplacian variance at 112 px)"
    ),
]
MaxQp = Annotated[
    float,
    typer.Option(
        "--max-qp",
        help="a person whose faces H.264 coded more coarsely (median QP) cannot decide; 51: off",
    ),
]
# Media limits, shared by analyze and scan (media.Limits documents them).
MaxPixels = Annotated[
    int | None,
    typer.Option("--max-pixels", help="largest image or video frame (default 36,000,000)"),
]
DecodePixels = Annotated[
    int | None,
    typer.Option(
        "--decode-pixels", help="larger frames are downscaled while decoding (default 2,100,000)"
    ),
]
MinTrackFaces = Annotated[
    int,
    typer.Option(
        "--min-track-faces", help="judged faces a track needs to decide (capped at frames / 8)"
    ),
]


def _verdict_settings(
    threshold: float | None,
    real_below: float | None,
    min_face: float,
    min_sharpness: float,
    min_track_faces: int,
    max_qp: float,
) -> dict:
    return {
        "threshold": threshold,
        "real_below": real_below,
        "min_face": min_face,
        "min_sharpness": min_sharpness,
        "min_track_faces": min_track_faces,
        "max_qp": max_qp,
    }


def _limits(max_pixels: int | None, max_duration: float | None, decode_pixels: int | None = None):
    from .media import Limits

    given: dict[str, Any] = {
        "max_pixels": max_pixels,
        "max_duration": max_duration,
        "decode_pixels": decode_pixels,
    }
    return Limits(**{name: value for name, value in given.items() if value is not None})


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


@app.callback()
def main() -> None:
    """Detect synthesized faces in videos and images, and show where the evidence is."""


@app.command()
def analyze(
    inputs: list[Path] = typer.Argument(..., help="videos or images"),
    out_dir: Path = typer.Option(
        Path("fakescope-out"),
        "--out",
        help=("writes OUT/<input stem>/report.html and report.json (<stem>-<hash> when taken)"),
    ),
    model: str = typer.Option("default", "--model", help="shipped model name or a config .json"),
    frames: int = typer.Option(32, "--frames", help="frames sampled evenly per video"),
    detector: str = typer.Option("retinaface", "--detector", help="retinaface or mtcnn"),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda"),
    strategy: str = typer.Option(
        "confident", "--strategy", help="per-track aggregation: confident or mean"
    ),
    threshold: Threshold = None,
    real_below: RealBelow = None,
    min_face: MinFace = Settings.min_face,
    min_sharpness: MinSharpness = Settings.min_sharpness,
    min_track_faces: MinTrackFaces = Settings.min_track_faces,
    max_qp: MaxQp = Settings.max_qp,
    explain: str = typer.Option(
        DEFAULT_EXPLAIN,
        "--explain",
        help="heat maps for the chosen frames, e.g. hirescam++,gradcam-n,gradcam-n1,hirescam; "
        "none for the fast path without them",
    ),
    fmt: Literal["html", "json", "pdf", "all"] = typer.Option(
        "all", "--format", help="report.html, report.json, report.pdf or all three"
    ),
    overlay_video: bool = typer.Option(
        False,
        "--overlay-video",
        help="also write overlay.mp4: every analysed frame with its HiResCAM++ map, face boxes "
        "and the running P(fake)",
    ),
    max_pixels: MaxPixels = None,
    max_duration: float | None = typer.Option(
        None, "--max-duration", help="seconds of each video read (default 3600)"
    ),
    decode_pixels: DecodePixels = None,
    backend: str = typer.Option(
        "auto", "--backend", help="scoring pass: onnx (ONNX Runtime), torch, or auto (onnx on CPU)"
    ),
) -> None:
    """Analyse videos or images; one summary line per input."""
    from .files import output_folders
    from .media import probe
    from .pipeline import Analyzer, Settings
    from .reports.html import write_html
    from .reports.pdf import write_pdf
    from .reports.video import write_overlay_video

    verdict = _verdict_settings(
        threshold, real_below, min_face, min_sharpness, min_track_faces, max_qp
    )
    configured, code = guarded(
        "setup",
        lambda: (
            Settings(frames, detector, strategy, backend=backend, **verdict),
            _limits(max_pixels, max_duration, decode_pixels),
        ),
    )
    if configured is None:
        raise typer.Exit(code)
    settings, limits = configured
    # Inputs are checked before the models load: a bad file fails in a fraction of a second.
    worst, readable = 0, []
    for path in inputs:
        info, code = guarded(str(path), lambda path=path: probe(path, limits))
        worst = max(worst, code)
        if info is not None:
            readable.append(path)
    if not readable:
        raise typer.Exit(worst)
    analyzer, code = guarded("setup", lambda: Analyzer(model, settings, device, limits))
    if analyzer is None:
        raise typer.Exit(code)
    folders = output_folders(out_dir, readable)
    for path in readable:
        target = folders[path]

        def run(path=path, target=target):
            report = analyzer.analyze(
                path, target, _methods(explain), keep_frames=fmt != "json" or overlay_video
            )
            files = {}  # so that report.json lists them too
            if overlay_video:
                video = write_overlay_video(analyzer.ensemble, report, target / "overlay.mp4")
                files["overlay_video"] = video.name
            if fmt in ("html", "all"):
                files["html"] = "report.html"
            if fmt in ("pdf", "all"):
                files["pdf"] = "report.pdf"
            report = replace(report, files={**report.files, **files})
            if fmt in ("json", "all"):
                report.write_json(target / "report.json")
            if fmt in ("html", "all"):
                write_html(report, target)
            if fmt in ("pdf", "all"):
                write_pdf(report, target)
            return report

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
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="0.0.0.0 to listen on every interface"),
    port: int = typer.Option(8000, "--port"),
    model: str = typer.Option("default", "--model", help="shipped model name or a config .json"),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda"),
    max_upload_mb: int = typer.Option(
        200, "--max-upload-mb", help="larger uploads are refused (HTTP 413)"
    ),
    workers: int = typer.Option(
        1, "--workers", help="analyses run at once, each with its own copy of the model"
    ),
    frames: int = typer.Option(32, "--frames", help="frames sampled evenly per video"),
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
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="analyses and uploads (default ~/.local/share/fakescope/server)"
    ),
    allowed_host: list[str] = typer.Option(
        [], "--allowed-host", help="a name clients use for the server (repeat; default: loopback)"
    ),
    max_pending: int = typer.Option(
        16, "--max-pending", help="uploads and analyses in progress at once; more get 503"
    ),
    max_disk_mb: int = typer.Option(
        1024, "--max-disk-mb", help="disk held by uploads waiting for analysis; more get 503"
    ),
    upload_timeout: int = typer.Option(
        600, "--upload-timeout", help="seconds an upload may take (and 30 s without data)"
    ),
    max_results: int = typer.Option(
        50, "--max-results", help="finished analyses kept, with their reports"
    ),
) -> None:
    """Web page and HTTP API: upload a video or image, get the verdict and heat maps
    (docs/security.md)."""
    import uvicorn

    from .pipeline import Settings
    from .server.app import LOOPBACK, create_app

    def setup():
        _at_least("--port", port, 1, 65535)
        for option, value in (
            ("--workers", workers),
            ("--max-upload-mb", max_upload_mb),
            ("--max-pending", max_pending),
            ("--max-disk-mb", max_disk_mb),
            ("--upload-timeout", upload_timeout),
            ("--max-results", max_results),
        ):
            _at_least(option, value, 1)
        if no_token and host not in LOOPBACK:
            raise FakescopeError(f"--no-token needs a loopback --host ({', '.join(LOOPBACK)})")
        if token is not None and len(token) < 16:
            raise FakescopeError("--token must be at least 16 characters")
        named = host not in LOOPBACK and host not in ("0.0.0.0", "::")
        hosts = tuple(allowed_host) or ((*LOOPBACK, host) if named else LOOPBACK)
        return create_app(
            model,
            device,
            max_upload_mb,
            workers,
            Settings(frames=frames),
            max_results=max_results,
            max_pending=max_pending,
            token=None if no_token else token or secrets.token_urlsafe(24),
            data_dir=data_dir,
            allowed_hosts=hosts,
            max_disk_mb=max_disk_mb,
            upload_total_s=upload_timeout,
        )

    web, code = guarded("setup", setup)
    if web is None:
        raise typer.Exit(code)
    shown = f"[{host}]" if ":" in host else ("127.0.0.1" if host in ("0.0.0.0", "::") else host)
    secret = f"/?token={web.state.token}" if web.state.token else ""
    err.print(f"fakescope: open http://{shown}:{port}{secret}", markup=False)
    # limit_concurrency: connections beyond it get 503 before the app sees them.
    uvicorn.run(
        web, host=host, port=port, limit_concurrency=max(64, 4 * max_pending), timeout_keep_alive=5
    )


class Engine(str, Enum):
    local = "local"
    ray = "ray"


@app.command()
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
    model: str = typer.Option("default", "--model"),
    frames: int = typer.Option(32, "--frames"),
    detector: str = typer.Option("retinaface", "--detector"),
    strategy: str = typer.Option("confident", "--strategy"),
    threshold: Threshold = None,
    real_below: RealBelow = None,
    min_face: MinFace = Settings.min_face,
    min_sharpness: MinSharpness = Settings.min_sharpness,
    min_track_faces: MinTrackFaces = Settings.min_track_faces,
    max_qp: MaxQp = Settings.max_qp,
    batch_size: int = typer.Option(32, "--batch-size", help="faces scored together"),
    device: str = typer.Option("cpu", "--device"),
    max_pixels: MaxPixels = None,
    max_duration: float | None = typer.Option(
        None, "--max-duration", help="seconds of each video read (default 3600)"
    ),
    decode_pixels: DecodePixels = None,
    backend: str = typer.Option(
        "auto", "--backend", help="scoring pass: onnx (ONNX Runtime), torch, or auto (onnx on CPU)"
    ),
) -> None:
    """Score many files into a SQLite store; a bad file gets an error row and the batch goes on.

    Exit code 0 when every input was scored (no face found counts as scored), 1 when any input is
    an error row.
    """
    from .pipeline import Analyzer, Settings
    from .scan import run_scan

    def setup():
        _at_least("--workers", workers, 1)
        verdict = _verdict_settings(
            threshold, real_below, min_face, min_sharpness, min_track_faces, max_qp
        )
        return Analyzer(
            model,
            Settings(frames, detector, strategy, batch_size=batch_size, backend=backend, **verdict),
            device,
            _limits(max_pixels, max_duration, decode_pixels),
        )

    analyzer, code = guarded("setup", setup)
    if analyzer is None:
        raise typer.Exit(code)
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
    model: str = typer.Option("default", "--model"),
    limit: int | None = typer.Option(
        None, "--limit", help="evaluate an even, spread-out sample of this many files"
    ),
    group_by: str = typer.Option(
        "manipulation", "--group-by", help="manifest column whose values get their own rows"
    ),
    frames: int = typer.Option(32, "--frames"),
    detector: str = typer.Option("retinaface", "--detector"),
    threshold: Threshold = None,
    real_below: RealBelow = None,
    min_face: MinFace = Settings.min_face,
    min_sharpness: MinSharpness = Settings.min_sharpness,
    min_track_faces: MinTrackFaces = Settings.min_track_faces,
    max_qp: MaxQp = Settings.max_qp,
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Crops: AUC, log loss, accuracy, EER with 95% intervals. Videos: the same per file, plus
    false-alarm, detection, miss and inconclusive rates at the decision, per group and per face
    size."""
    from .evaluate import evaluate_crops, evaluate_videos, metrics_line, results_table
    from .pipeline import Analyzer

    verdict = _verdict_settings(
        threshold, real_below, min_face, min_sharpness, min_track_faces, max_qp
    )

    def run():
        _at_least("--limit", limit, 1)
        analyzer = Analyzer(model, Settings(frames, detector, **verdict), device)
        if crops:
            return evaluate_crops(analyzer, dataset, out_dir, limit)
        return evaluate_videos(
            analyzer,
            dataset,
            out_dir,
            limit,
            group_by,
            progress=lambda line: err.print(line, markup=False),
        )

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
        Console(highlight=False, width=max(out.width, 150)).print(
            table
        )  # too many columns to wrap well
        out.print(f"wrote {out_dir / 'metrics.json'} and {out_dir / 'videos.csv'}", markup=False)
    raise typer.Exit(code)


@app.command()
def calibrate(
    scores: Path = typer.Argument(
        ..., help="videos.csv written by `fakescope evaluate` on held-out videos"
    ),
    config: Path = typer.Option(
        ...,
        "--out",
        help="the new ensemble config (.json): the model's members with the fitted decision",
    ),
    model: str = typer.Option(
        "default", "--model", help="the model that scored them (its members are referenced)"
    ),
    max_false_alarm: float = typer.Option(
        0.15, "--max-false-alarm", help="share of reals that may be called fake"
    ),
    max_miss: float = typer.Option(
        0.1, "--max-miss", help="share of fakes that may be called real"
    ),
    note: str = typer.Option(
        "", "--note", help="what the videos are, kept in the config as `fitted_on`"
    ),
) -> None:
    """Fit the video decision (threshold, real-below) on held-out videos; between the two the
    answer is inconclusive. Never fit on videos you then report: evaluate elsewhere, or fit on one
    part and report on the other."""
    from .calibrate import write_calibrated

    result, code = guarded(
        str(scores),
        lambda: write_calibrated(scores, model, config, max_false_alarm, max_miss, note),
    )
    if result is not None:
        out.print(
            f"fake at >= {result.threshold:.3f}, real below {result.real_below:.3f} -> {config}",
            markup=False,
        )
    raise typer.Exit(code)


@app.command("explain")
def explain_images(
    images: list[Path] = typer.Argument(..., help="images, or face crops with --crops"),
    out_dir: Path = typer.Option(Path("fakescope-explain"), "--out"),
    methods: str = typer.Option(
        "hirescam++,gradcam-n,gradcam-n1,hirescam", "--methods", help="comma-separated"
    ),
    crops: bool = typer.Option(False, "--crops", help="each image already is a face crop"),
    model: str = typer.Option("default", "--model"),
    detector: str = typer.Option("retinaface", "--detector"),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Heat maps for single images: overlays and a comparison strip per image."""
    from .pipeline import Analyzer, Settings

    analyzer, code = guarded("setup", lambda: Analyzer(model, Settings(detector=detector), device))
    if analyzer is None:
        raise typer.Exit(code)
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


@app.command("xai-eval")
def xai_evaluate(
    dataset: Path = typer.Argument(
        ..., help="folder with real/ and fake/ face crops (or images with --no-crops)"
    ),
    out_dir: Path = typer.Option(Path("fakescope-xai"), "--out"),
    crops: bool = typer.Option(True, "--crops/--no-crops", help="inputs are face crops"),
    limit: int = typer.Option(64, "--limit", help="images used, half real, half fake"),
    model: str = typer.Option("default", "--model"),
    member: int = typer.Option(0, "--member", help="which ensemble member to explain"),
    device: str = typer.Option("cpu", "--device"),
    methods: str | None = typer.Option(
        None,
        "--methods",
        help="comma-separated: CAMs, lime, kernelshap, occlusion, 'centre prior' "
        "(default: every CAM)",
    ),
    baseline: str = typer.Option(
        "mean", "--baseline", help="deletion / insertion baseline: mean (colour), blur or noise"
    ),
    steps: int = typer.Option(20, "--steps", help="deletion / insertion steps"),
    samples: int = typer.Option(
        64, "--samples", help="perturbed inputs per image for LIME and KernelSHAP"
    ),
    sanity_images: int = typer.Option(
        8, "--sanity-images", help="images in the randomisation check"
    ),
    sanity_depth: int = typer.Option(
        4, "--sanity-depth", help="units randomised, from the classifier down"
    ),
    localisation_only: bool = typer.Option(
        False, "--localisation-only", help="self-blended fakes only, no deletion / insertion"
    ),
    pairs: bool = typer.Option(
        False,
        "--pairs",
        help="videos: localise against where each fake differs from the `pristine` video its "
        "manifest names (the faces analyze shows; --limit counts fakes)",
    ),
) -> None:
    """The paper's Table 1, deletion/insertion AUC, localisation on self-blended fakes (or real
    manipulations, --pairs), sanity check."""
    from .evaluate import labelled_faces, paired_faces
    from .explain.cam import METHODS
    from .explain.xai_eval import run_xai_eval
    from .pipeline import Analyzer, Settings

    skipped: list[str] = []  # pairs left out, one line each

    def run():
        _at_least("--limit", limit, 1 if pairs else 2)  # fakes; else half real, half fake
        _at_least("--member", member, 0)
        for option, value in (
            ("--steps", steps),
            ("--samples", samples),
            ("--sanity-images", sanity_images),
            ("--sanity-depth", sanity_depth),
        ):
            _at_least(option, value, 1)
        analyzer = Analyzer(model, Settings(), device)
        chosen = analyzer.ensemble.member(member)
        faces = (
            paired_faces(analyzer, dataset, chosen.spec.crop, limit, out_dir / "masks", skipped)
            if pairs
            else labelled_faces(analyzer, dataset, chosen.spec.crop, crops, limit)
        )
        chosen_methods = _methods(methods) if methods else list(METHODS)
        return run_xai_eval(
            chosen,
            faces,
            out_dir,
            str(dataset),
            chosen_methods,
            baseline,
            steps,
            samples,
            sanity_images,
            sanity_depth,
            localisation_only,
            pairs=pairs,
            skipped=skipped,
        )

    written, code = guarded(str(dataset), run)
    if written is not None:
        out.print(
            written[1].read_text(encoding="utf-8"), markup=False
        )  # the tables, one row per method
        out.print(f"wrote {written[0]} and {written[1]}", markup=False)
        for reason in skipped:
            err.print(f"warning: left out {reason}", markup=False)
    raise typer.Exit(code)


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
def train(
    dataset: Path = typer.Argument(
        ...,
        help="folder with real/ and fake/ face crops (manifest.csv beside keeps clusters "
        "together), or a pack from `fakescope pack`",
    ),
    out: Path = typer.Option(
        ..., "--out", help="run folder: checkpoints, logs, the exported model"
    ),
    arch: str = typer.Option(
        "efficientnet-lite0", "--arch", help="architecture name (see `fakescope models list`)"
    ),
    val: Path | None = typer.Option(None, "--val", help="a separate split to report each epoch"),
    epochs: int = typer.Option(4, "--epochs"),
    epoch_size: int = typer.Option(
        12000, "--epoch-size", help="images drawn per epoch, half real, half fake"
    ),
    batch_size: int = typer.Option(32, "--batch-size"),
    lr: float = typer.Option(5e-4, "--lr"),
    workers: int = typer.Option(1, "--workers", help="data-loading processes"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda"),
    seed: int = typer.Option(0, "--seed"),
    name: str | None = typer.Option(
        None, "--name", help="name of the exported model (default: the architecture)"
    ),
    freeze: int = typer.Option(
        3, "--freeze", help="EfficientNet: keep the stem and this many first stages frozen"
    ),
    image_size: int | None = typer.Option(
        None, "--image-size", help="train (and crop) at this size instead of the architecture's"
    ),
    init: Path | None = typer.Option(
        None,
        "--init",
        help="fine-tune from this fakescope model config instead of the ImageNet start",
    ),
    sbi_share: float = typer.Option(
        0.25, "--sbi-share", help="share of the fake half that is self-blended from real crops"
    ),
    input_mode: str = typer.Option(
        "cache",
        "--input",
        help="cache: decode once, augment whole batches (on the GPU); stream: per image, "
        "for data larger than memory",
    ),
) -> None:
    """Train a one-logit classifier; rerun the same command to resume."""
    from .training.train import TrainConfig
    from .training.train import train as run_training

    config, code = guarded(
        "setup",
        lambda: TrainConfig(
            dataset=str(dataset),
            out=str(out),
            arch=arch,
            val=str(val) if val else None,
            epochs=epochs,
            epoch_size=epoch_size,
            batch_size=batch_size,
            lr=lr,
            workers=workers,
            device=device,
            seed=seed,
            name=name,
            freeze=freeze,
            image_size=image_size,
            init=str(init) if init else None,
            sbi_share=sbi_share,
            input=input_mode,
        ),
    )
    if config is None:
        raise typer.Exit(code)
    _, code = guarded(str(dataset), lambda: run_training(config, progress=sys.stderr.isatty()))
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

        from .faces import get_detector
        from .training.pack import build_pack

        detector = get_detector("retinaface", score_threshold=0.5)
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


if __name__ == "__main__":
    app()
