"""Ship a trained checkpoint as ``model/weights/damdnet.pth``: measured on the validation set, next to the teacher.

    python -m model.ship CHECKPOINT [--teacher 3ddfa-v2-mb05] [--margin 1.0] [--out model/weights/damdnet.pth]

Both models are evaluated on the validation set (the 300 AFLW2000-3D images under ``XgTu/2DASL``, 100 per yaw bin)
with ground-truth and detector crops. The release rule: our mean-of-bins NME (ground-truth crops) is not worse than
the teacher's by more than ``margin`` points; ``meta["release"]`` records the verdict, which decides whether
``--weights auto`` serves our weights offline (``model.checkpoint.load_model``). The metadata keeps the figures
(bins, pose MAE, both crops, the teacher's), the training data, samples, hours and machine. Nothing is written
unless ``--out`` is given or the checkpoint is better than the file already there (``--force`` to replace anyway).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from model.assets import AssetStore, resolve_root
from model.checkpoint import OUR_WEIGHTS, RELEASE_MARGIN, CheckpointError, load_file, save_checkpoint
from model.errors import UserError

VALIDATION = "XgTu/2DASL/test_codes/test.data/AFLW-2000-3D"


def release_ok(ours: float, teacher: float, margin: float = RELEASE_MARGIN) -> bool:
    """The release rule: ``ours`` (mean-of-bins NME %) at most ``margin`` points above ``teacher``'s."""
    return ours <= teacher + margin


def measure(weights: str, labels: list[Path], store: AssetStore, detector) -> dict:
    """Validation figures of one model: {"gt": summary, "detector": summary} without the per-image lists."""
    from model.aligner import Aligner
    from model.evaluate import evaluate

    al = Aligner.from_checkpoint(weights, device="cpu", store=store)
    out = {}
    for crop in ("gt", "detector"):
        s = evaluate(al, labels, crop, detector if crop == "detector" else None).summary()
        out[crop] = {k: s[k] for k in ("nme_mean_of_bins", "nme_all", "bins", "pose_mae", "count")}
        out[crop]["missed"] = len(s["missed"])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.ship", description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="a checkpoint of ours (e.g. ~/.cache/damdnet/train/cpu/best.pth)")
    p.add_argument("--teacher", default="3ddfa-v2-mb05", help="the model the release rule compares against")
    p.add_argument("--margin", type=float, default=RELEASE_MARGIN, help="release margin, NME points (mean of bins)")
    p.add_argument("--out", default=None, help=f"where to write (default {OUR_WEIGHTS['damdnet']}, only if better)")
    p.add_argument("--force", action="store_true", help="write even when not better than the file there")
    p.add_argument("--assets", default=None, help="assets root (default $DAMDNET_ASSETS or ~/.cache/damdnet)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.add_argument("--images", default=None, help=f"labelled images to measure on (default: the validation set, "
                                                  f"ASSETS/{VALIDATION})")
    a = p.parse_args(argv)
    from model.detect import FaceDetector
    from model.groundtruth import find_labels

    store = AssetStore(a.assets)
    try:
        folder = Path(a.images) if a.images else resolve_root(a.assets, VALIDATION) / VALIDATION
        labels = find_labels(folder)
        if not labels:
            raise FileNotFoundError(f"no labelled images in {folder}")
        det = FaceDetector.create("auto", store)
        loaded = load_file(a.checkpoint, store)
        if loaded.backbone != "damdnet":
            raise CheckpointError(f"{a.checkpoint} is a {loaded.backbone}, not a damdnet checkpoint")
        ours = measure(a.checkpoint, labels, store, det)
        teacher = measure(a.teacher, labels, store, det)
    except (FileNotFoundError, ValueError, UserError) as exc:  # label files; assets, weights, device
        print(f"error: {exc}", file=sys.stderr)
        return 2
    mob, tmob = ours["gt"]["nme_mean_of_bins"], teacher["gt"]["nme_mean_of_bins"]
    release = release_ok(mob, tmob, a.margin)
    for name, r in (("ours", ours), (a.teacher, teacher)):
        for crop in ("gt", "detector"):
            s, pm = r[crop], r[crop]["pose_mae"] or {}
            bins = " / ".join(f"{b['nme']:.2f}" for b in s["bins"])
            print(f"{name:>14} {crop:>8} crops: bins {bins}, mean of bins {s['nme_mean_of_bins']:.3f}, "
                  f"pose MAE yaw/pitch/roll {pm.get('yaw', 0):.2f}/{pm.get('pitch', 0):.2f}/{pm.get('roll', 0):.2f}"
                  + (f", missed {s['missed']}" if s["missed"] else ""))
    print(f"release rule (ours <= teacher + {a.margin:.2f}): {mob:.3f} vs {tmob:.3f} -> "
          f"{'released' if release else 'not released (auto serves the teacher offline)'}")
    meta = dict(loaded.meta)
    meta.update(release=release, release_rule=f"mean-of-bins NME on {a.images or VALIDATION} (GT crops) at "
                f"most {a.margin} points above {a.teacher}", validation=ours, validation_teacher=teacher,
                validation_teacher_name=a.teacher)
    if a.json:
        Path(a.json).write_text(json.dumps({"ours": ours, "teacher": teacher, "release": release}, indent=1))
    out = Path(a.out) if a.out else OUR_WEIGHTS["damdnet"]
    if out.is_file() and not a.force and not a.out:
        old = load_file(out, store).meta.get("validation", {}).get("gt", {}).get("nme_mean_of_bins")
        if old is not None and old <= mob:
            print(f"not written: {out} is as good or better ({old:.3f} <= {mob:.3f}); --force to replace")
            return 0
    save_checkpoint(out, loaded.net, "damdnet", loaded.whitening, loaded.convention, meta=meta)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
