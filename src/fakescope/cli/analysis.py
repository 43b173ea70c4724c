"""The commands that analyse media: analyze, serve, scan, evaluate and explain."""

from __future__ import annotations

import secrets
from dataclasses import asdict
from enum import Enum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from ..explain import DEFAULT as DEFAULT_EXPLAIN
from ..options import pick, with_fields
from ..provenance import summary
from ..report import FORMATS
from ..server.config import LOOPBACK, ServerConfig
from ..settings import Settings
from ..types import FakescopeError, Limits, NoFaceError
from .common import (
    Common,
    app,
    at_least,
    configured,
    err,
    exit_on_failure,
    guarded,
    method_list,
    out,
)


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
    from ..files import output_folders
    from ..media import probe
    from ..pipeline import Analyzer
    from ..report import check_formats

    def setup():
        formats = check_formats(FORMATS if fmt == "all" else fmt.split(","))
        return (*configured(fields), [*formats, *(["overlay_video"] if overlay_video else [])])

    settings, limits, formats = exit_on_failure("setup", setup)
    # Inputs are checked before the models load: a bad file fails in a fraction of a second.
    worst, readable = 0, {}
    for path in inputs:
        info, code = guarded(str(path), lambda path=path: probe(path, limits))
        worst = max(worst, code)
        if info is not None:
            readable[path] = info
    if not readable:
        raise typer.Exit(worst)
    analyzer = exit_on_failure(
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
                method_list(explain),
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
            out.print(f"  provenance: {summary(report.provenance)}", markup=False)
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

    from ..server.app import create_app

    def setup():
        at_least("--port", port, 1, 65535)
        config = ServerConfig(**pick(ServerConfig, fields))  # checked before the model loads
        settings, limits = configured(fields)
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

    web = exit_on_failure("setup", setup)
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
    from ..pipeline import Analyzer
    from ..scan import run_scan

    def setup():
        at_least("--workers", workers, 1)
        settings, limits = configured(fields)
        return Analyzer(fields["model"], settings, fields["device"], limits)

    analyzer = exit_on_failure("setup", setup)
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
    held_out: float | None = typer.Option(
        None,
        "--held-out",
        help="with --crops: only the clusters `fakescope train --holdout SHARE` held out of "
        "this folder (to fit an ensemble's temperature)",
    ),
    *,
    fields: dict[str, Any],
) -> None:
    """Crops: AUC, log loss, accuracy, EER with 95% intervals. Videos: the same per file, plus
    false-alarm, detection, miss and inconclusive rates at the decision, per group and per face
    size."""
    from ..evaluate import evaluate_crops, evaluate_videos, metrics_line, results_table
    from ..pipeline import Analyzer

    def run():
        at_least("--limit", limit, 1)
        settings, limits = configured(fields)
        analyzer = Analyzer(fields["model"], settings, fields["device"], limits)
        if held_out is not None and not crops:
            raise FakescopeError("--held-out needs --crops")
        if crops:
            return evaluate_crops(analyzer, dataset, out_dir, limit, held_out)
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
    from ..pipeline import Analyzer

    analyzer = exit_on_failure(
        "setup",
        lambda: Analyzer(fields["model"], Settings(**pick(Settings, fields)), fields["device"]),
    )
    worst = 0
    for path in images:
        written, code = guarded(
            str(path),
            lambda path=path: analyzer.explain_image(
                path, method_list(methods), out_dir / path.stem, crops
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
