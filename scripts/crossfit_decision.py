"""Honest numbers for a fitted video decision: fit on some groups of videos, report on the others.

    fakescope evaluate ../shared/data/ffpp-dev --out runs/eval-ffpp
    python scripts/crossfit_decision.py runs/eval-ffpp/videos.csv --folds 2

The decision that ships is fitted on every video (`fakescope calibrate`); a number measured
on the videos it was fitted on would flatter it. Here each video is labelled by a decision
fitted without its group: the FaceForensics++ scene it comes from (file names hold the ids of
the source videos, `ffpp_df_c23_033_097`: a fake of 033 with 097's face, so 033 and 097 and
every video made from them are one group).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from rich.console import Console

from fakescope.evaluate import read_rows, results_table, video_report
from fakescope.selection import crossfit
from fakescope.types import FakescopeError
from fakescope.verdict import fit_decision


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("videos", type=Path, help="videos.csv from `fakescope evaluate`")
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--max-false-alarm", type=float, default=0.15)
    parser.add_argument("--max-miss", type=float, default=0.1)
    args = parser.parse_args()

    rows = read_rows(args.videos)
    labelled, decisions = crossfit(rows, args.folds, args.max_false_alarm, args.max_miss)
    for fold, decision in enumerate(decisions):
        print(
            f"fold {fold}: fitted on the other folds: fake at >= {decision.threshold:.3f}, "
            f"real below {decision.real_below:.3f}"
        )
    everything = [r for r in rows if r["probability"] is not None]
    shipped = fit_decision(
        np.array([r["label"] for r in everything]),
        np.array([r["probability"] for r in everything]),
        args.max_false_alarm,
        args.max_miss,
    )
    print(
        f"fitted on all {len(everything)}: fake at >= {shipped.threshold:.3f}, "
        f"real below {shipped.real_below:.3f}"
    )
    for r in labelled:  # the manifest's manipulation, read back from the evaluation's group column
        r["group"] = r["group"] or "-"
    result = {"group_by": "group", **video_report(labelled, "group")}
    table = results_table(
        result, f"{args.videos}: {args.folds}-fold cross-fitted decision, 95% intervals"
    )
    Console(width=160).print(table)


if __name__ == "__main__":
    try:
        main()
    except FakescopeError as error:  # not an evaluation, or a fold without both classes
        sys.exit(f"crossfit_decision: {error}")
