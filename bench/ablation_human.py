"""Short ablation of the human-fit parts (issue 12, item 4): equal fine-tunes from the shipped weights, each
evaluated on the validation set (mean of bins, bins, pose MAE), tabulated into bench/RESULTS.md.

    python bench/ablation_human.py --steps 300 [--variants teacher-only,full] [--dry-run]
    python bench/ablation_human.py --collect        # tabulate finished runs only (no training)

Every variant is ``configs/train_human.yaml`` with ``--set`` overrides, the same seed, init and number of steps
(so the same samples seen), run one after the other at ``nice -n 19`` into ``--root/NAME``; the row is the last
evaluation of the run's ``log.csv``. Variants:

- ``teacher-only``: no human rows (``data.human.fraction=0``), no 2D loss: the old recipe, same schedule;
- ``human-plain``: human rows, never profiled, no 2D loss;
- ``human-profiled``: human rows plain and profiled, no 2D loss;
- ``full``: + the 2D Wing loss on the human landmarks;
- ``full-w1``: like full with human rows weighted 1 (as teacher rows);
- ``full-no-turned``: like full without the share of real turned photos (``data.turned``).
"""
from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

VARIANTS: dict[str, list[str]] = {
    "teacher-only": ["data.human.fraction=0", "loss.human2d=0"],
    "human-plain": ["data.human.profile_fraction=0", "loss.human2d=0"],
    "human-profiled": ["loss.human2d=0"],
    "full": [],
    "full-w1": ["data.human.weight=1"],
    "full-no-turned": ["data.turned.fraction=0"],
}
SECTION = "## Human-fit ablation (issue 12, item 4)"


def command(name: str, steps: int, root: Path, config: str, python: str = sys.executable) -> list[str]:
    """The training command line of one variant: ``steps`` steps, one evaluation at the end."""
    sets = VARIANTS[name] + [f"steps={steps}", "schedule_minutes=null", f"eval_every={steps}", "ckpt_every=0",
                             "warmup=10"]
    cmd = ["nice", "-n", "19", python, "-m", "model.train", "--config", config, "--out", str(root / name),
           "--max-steps", str(steps), "--no-progress"]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def last_eval(log: Path) -> dict | None:
    """The last row of a run's log.csv that has an evaluation (nme), or None."""
    if not log.is_file():
        return None
    rows = [r for r in csv.DictReader(open(log, newline="")) if r.get("nme")]
    return rows[-1] if rows else None


def table(root: Path, names: list[str]) -> str:
    """Markdown rows: variant, steps, samples, validation mean of bins, bins, pose MAE."""
    lines = ["| variant | overrides | steps | samples | val. mean of bins | bins 0-30/30-60/60-90 | pose MAE y/p/r |",
             "|---|---|---:|---:|---:|---|---|"]
    for n in names:
        r = last_eval(root / n / "log.csv")
        if r is None:
            lines.append(f"| {n} | {' '.join(VARIANTS[n]) or '-'} | - | - | not run | - | - |")
            continue
        lines.append(f"| {n} | {' '.join(VARIANTS[n]) or '-'} | {r['step']} | {r['samples']} | {float(r['nme']):.3f} "
                     f"| {r.get('nme_bins') or '-'} | {r.get('pose_mae') or '-'} |")
    return "\n".join(lines) + "\n"


def write_section(results: Path, text: str) -> None:
    """Replace (or append) this script's section of RESULTS.md, leaving the others as they are."""
    old = results.read_text() if results.is_file() else ""
    if SECTION in old:
        head, rest = old.split(SECTION, 1)
        nxt = rest.find("\n## ")
        old = head + (rest[nxt + 1:] if nxt >= 0 else "")
    results.write_text(old.rstrip("\n") + "\n\n" + SECTION + "\n\n" + text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300, help="steps per variant (batch of the config)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, of: " + ", ".join(VARIANTS))
    p.add_argument("--config", default="configs/train_human.yaml")
    p.add_argument("--root", default="~/.cache/damdnet/ablation")
    p.add_argument("--results", default=str(HERE / "RESULTS.md"))
    p.add_argument("--collect", action="store_true", help="only tabulate finished runs")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    a = p.parse_args(argv)
    names = [v for v in a.variants.split(",") if v]
    bad = [v for v in names if v not in VARIANTS]
    if bad:
        print(f"error: unknown variant {bad[0]} (known: {', '.join(VARIANTS)})", file=sys.stderr)
        return 2
    root = Path(os.path.expanduser(a.root))
    if not a.collect:
        for n in names:
            cmd = command(n, a.steps, root, a.config)
            print(" ".join(cmd), flush=True)
            if not a.dry_run:
                subprocess.run(cmd, cwd=ROOT, check=True)
    if a.dry_run:
        return 0
    text = (f"Fine-tunes from model/weights/damdnet.pth with `{a.config}` and the overrides below, {a.steps} steps "
            f"each (same seed, same samples seen); the validation set (300 AFLW2000-3D images, GT crops). Measured by "
            f"`python bench/ablation_human.py --steps {a.steps}` on {machine_line()}.\n\n" + table(root, names))
    print(text)
    write_section(Path(a.results), text)
    return 0


def machine_line() -> str:
    import platform

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"


if __name__ == "__main__":
    sys.exit(main())
