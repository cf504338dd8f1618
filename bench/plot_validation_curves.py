"""Validation NME against samples seen for several training runs on one plot (issue 12).

    python bench/plot_validation_curves.py --out bench/train_curve_validation.png \
        --run "full mix, lr 5e-4=~/.cache/damdnet/train/human/log.csv" --run "main=~/.cache/damdnet/train/main/log.csv" \
        [--offset 418000] [--teacher 3.87] [--target 4.3]

Each ``--run LABEL=LOG[@N]`` is a ``model.train`` log.csv; its rows with an ``nme`` are drawn (mean of bins, the
validation set), against samples seen plus ``--offset`` (the samples behind the shipped weights, 418k) plus ``N``
(samples of an earlier run this one started from). The teacher and the target are drawn as lines.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path


def read(log: str) -> tuple[list[int], list[float]]:
    """(samples, mean-of-bins NME) of a log's evaluation rows."""
    rows = [r for r in csv.DictReader(open(os.path.expanduser(log))) if r.get("nme")]
    seen: dict[int, float] = {}
    for r in rows:  # a row may be logged twice (the end-of-run evaluation): keep the last
        seen[int(r["samples"])] = float(r["nme"])
    xs = sorted(seen)
    return xs, [seen[x] for x in xs]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", action="append", required=True, metavar="LABEL=LOG[@N]")
    p.add_argument("--out", default="bench/train_curve_validation.png")
    p.add_argument("--offset", type=int, default=418_000, help="samples seen before the runs' init")
    p.add_argument("--teacher", type=float, default=3.87)
    p.add_argument("--target", type=float, default=4.3)
    a = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for item in a.run:
        label, sep, log = item.partition("=")
        if not sep:
            print(f"error: --run {item}: expected LABEL=LOG", file=sys.stderr)
            return 2
        log, _, extra = log.partition("@")
        xs, ys = read(log)
        ax.plot([(x + a.offset + int(extra or 0)) / 1000 for x in xs], ys, "o-", ms=3, label=label)
    ax.axhline(a.teacher, color="k", ls="--", lw=1, label=f"teacher {a.teacher:.2f}")
    ax.axhline(a.target, color="g", ls=":", lw=1, label=f"issue target {a.target:.1f}")
    ax.set_xlabel("samples seen (thousands, from stage 1)")
    ax.set_ylabel("NME % (validation set, mean of bins)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=100)
    print(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
