"""Compare models (a run's epochs, other runs, the shipped one) on full-frame videos, and
choose on one half of the scenes.

    python scripts/select_epoch.py --build ../shared/data/ffpp-dev \\
        --set runs/select/ffpp-dev.safetensors
    python scripts/select_epoch.py --set runs/select/ffpp-dev.safetensors \\
        default runs/h264/epochs/*/efficientnet-lite0.json --out runs/select/h264

`--build` decodes each video once, as recorded and re-encoded at each `--crf` (first
`--seconds`), finds and cuts its faces (`fakescope.selection.build_video_set`); later calls
only score the stored crops. For every model the table gives the video AUC per variant on
each half of the FF++ scenes and on all; the choice is the best mean AUC over the variants
on `--choose-on` (the other half is left to fit the decision: `fakescope calibrate`, or
`scripts/crossfit_decision.py` on the rows written to --out). An epoch's held-out log loss
(from its run's log.jsonl) is shown beside it. `--against MODEL` adds each model's AUC minus
MODEL's on all scenes, with a 95% interval that resamples scenes: on a few dozen videos one
flipped pair moves the AUC by 0.003, and the interval says which differences are more than
that. `--decision 0.1` adds what a user meets first: the recorded videos judged as `analyze`
judges them (the default QP limit, each model's own temperature), their decision
cross-fitted by scene at most 10% false alarms (`fakescope.selection.crossfit`, as
`scripts/crossfit_decision.py` does on a whole evaluation), and the rates it gives.

`--build ... --soft 23` also stores each video's first `--seconds` with its background
blurred behind every head (`fakescope.selection.soft_background`: a video call's background
blur, a phone's portrait mode), coded at CRF 23. A sharp head before a soft background
reads as fake to models that learnt self-blends' sharpness step; with `--decision`, those
videos are judged by the decisions fitted on the recorded ones, fold by fold: the share of
real people that the soft background alone turns fake.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fakescope.evaluate import decision_metrics, write_rows
from fakescope.metrics import auc_difference
from fakescope.pipeline import Analyzer
from fakescope.selection import (
    RECORDED,
    SOFT,
    build_video_set,
    by_fold,
    crossfit,
    decided_rows,
    half_of,
    load_video_set,
    rescored,
    save_video_set,
    score_video_set,
    video_auc,
)
from fakescope.settings import Settings
from fakescope.types import FakescopeError


def held_out_log_loss(model: str) -> float | None:
    """The log loss of a run's epoch `RUN/epochs/NN/x.json`, from RUN/log.jsonl."""
    path = Path(model)
    log = path.parent.parent.parent / "log.jsonl"
    if path.parent.parent.name != "epochs" or not log.is_file():
        return None
    for line in log.read_text().splitlines():
        record = json.loads(line)
        if record["epoch"] == int(path.parent.name):
            return record["holdout"]["log_loss"]
    return None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", nargs="*", help="model configs (or `default`)")
    parser.add_argument("--set", type=Path, required=True, help="the video set file")
    parser.add_argument("--build", type=Path, help="make --set from this folder first")
    parser.add_argument("--crf", type=_crf, nargs="*", default=[35, 41])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--soft",
        type=_crf,
        metavar="CRF",
        help="--build also the first --seconds with the background blurred, coded at this CRF",
    )
    parser.add_argument("--choose-on", type=int, default=0, choices=(0, 1))
    parser.add_argument("--out", type=Path, help="write each model's rows here")
    parser.add_argument("--against", help="compare every model with this one (e.g. default)")
    parser.add_argument(
        "--decision",
        type=float,
        metavar="MAX_FALSE_ALARM",
        help="add the cross-fitted false alarms / detected / inconclusive as recorded",
    )
    args = parser.parse_args()

    if args.build:
        # The shipped model cuts the crops: candidates must share its crop policy.
        analyzer = Analyzer("default")
        video_set = build_video_set(
            args.build, analyzer, args.crf, args.seconds, progress=print, soft=args.soft
        )
        args.set.parent.mkdir(parents=True, exist_ok=True)
        save_video_set(video_set, args.set)
        print(f"{args.set}: {len(video_set.videos)} videos, {len(video_set.crops)} faces")
    if not args.models:
        return
    video_set = load_video_set(args.set)
    variants = list(dict.fromkeys(v.variant for v in video_set.videos))
    table = Table(title=f"video AUC on {args.set.name}: half 0 / half 1 / all (scenes)")
    decision_column = [f"cross-fitted at {args.decision}"] if args.decision is not None else []
    if decision_column and SOFT in variants:
        decision_column.append(f"{SOFT}, the same decisions")
    for column in ("model", "held-out log loss", *variants, *decision_column):
        table.add_column(column)
    table.add_column(f"choice (half {args.choose_on})")
    against = score_video_set(video_set, args.against) if args.against else None
    differences = Table(title=f"video AUC minus {args.against}'s, all scenes [95% interval]")
    for column in ("model", *variants):
        differences.add_column(column)
    best: tuple[float, str] | None = None
    wide, user = Settings(max_qp=51), Settings()  # as score_video_set judges; as analyze does
    for model in args.models:
        faces, fitted = rescored(video_set, model)
        rows = decided_rows(video_set, faces, wide.decision(fitted), wide)
        if against is not None:
            differences.add_row(model, *(_difference(against, rows, v) for v in variants))
        cells, chosen_on = [], []
        for variant in variants:
            of = [r for r in rows if r["variant"] == variant]
            halves = [video_auc([r for r in of if half_of(r["scene"]) == h]) for h in (0, 1)]
            cells.append(" / ".join(_fmt(a) for a in [*halves, video_auc(of)]))
            chosen_on.append(halves[args.choose_on])
        score = sum(a or 0.0 for a in chosen_on) / len(chosen_on)
        if args.decision is not None:
            judged = decided_rows(video_set, faces, user.decision(fitted), user)
            recorded = [r for r in judged if r["variant"] == RECORDED]
            labelled, decisions = crossfit(recorded, 2, args.decision)
            cells.append(_rates(labelled))
            if SOFT in variants:
                cells.append(
                    _rates(by_fold([r for r in judged if r["variant"] == SOFT], decisions))
                )
        loss = held_out_log_loss(model)
        table.add_row(model, _fmt(loss), *cells, f"{score:.3f}")
        if best is None or score > best[0]:
            best = (score, model)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            name = model.replace("/", "_").removesuffix(".json")
            for variant in variants:
                of = [r for r in rows if r["variant"] == variant]
                suffix = "" if variant == RECORDED else f"-{variant}"
                write_rows(of, args.out / f"{name}{suffix}.csv")
    Console(width=200).print(table)
    if against is not None:
        Console(width=200).print(differences)
    assert best is not None
    print(f"chosen on half {args.choose_on}: {best[1]} ({best[0]:.3f})")


def _difference(first: list[dict], second: list[dict], variant: str) -> str:
    """AUC(second) - AUC(first) on one variant's videos that both scored, by scene."""
    pairs = [
        (a, b)
        for a, b in zip(first, second, strict=True)
        if a["variant"] == variant and None not in (a["probability"], b["probability"])
    ]
    if len({a["label"] for a, _ in pairs}) < 2:
        return "-"
    d = auc_difference(
        [a["label"] for a, _ in pairs],
        [a["probability"] for a, _ in pairs],
        [b["probability"] for _, b in pairs],
        [a["scene"] for a, _ in pairs],
    )
    return f"{d['value']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"


def _crf(text: str) -> int:
    """An x264 CRF, checked before a build spends minutes on the videos before it."""
    if not text.isdigit() or int(text) > 51:
        raise argparse.ArgumentTypeError(f"a CRF is an integer from 0 to 51, got {text!r}")
    return int(text)


def _rates(labelled: list[dict]) -> str:
    rates = decision_metrics(labelled)
    return " / ".join(
        f"{rates[k]['value']:.2f}" for k in ("false_alarm", "detection", "inconclusive")
    )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    try:
        main()
    except FakescopeError as error:  # a bad set, model or folder: one line, exit 2
        sys.exit(f"select_epoch: {error}")
