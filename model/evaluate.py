"""Evaluate a model on labelled images with the 3DDFA protocol (DESIGN section 6).

Crop from the ground-truth 68-point box (square of side max(w, h) enlarged to its diagonal) or from the detector,
predict, map back; per image NME = mean 2D point distance / sqrt(w * h) of the ground-truth box; bins by |yaw|
(ground-truth yaw when the label has one, else the predicted yaw); "mean of bins" is the mean of the non-empty bins.
Head pose (labels with ``Pose_Para``): mean absolute yaw, pitch and roll error in degrees, the predicted rotation read
in ``Pose_Para``'s own convention; images with a ground-truth angle beyond 99 degrees are left out (SynergyNet's rule).

    python -m model.evaluate --weights 3ddfa-v2-mb05 --images DIR [--crop gt|detector] [--json out.json]
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from model.assets import AssetStore
from model.align_images import align_boxes, align_steady
from model.cliparse import OneLineParser
from model.errors import UserError
from model.metrics import POSE_KEYS, POSE_LIMIT, YAW_BINS, angle_error, nme, pose_para_angles, yaw_bin
from model.morphable import rotation_from_params
from model.roi import box_from_landmarks, iou_matrix, roi_from_landmarks

FAIL_NME = 10.0  # an image whose NME exceeds this counts as a failure


@dataclass
class EvalReport:
    """Per-image NME (%) and yaw, with the summary of the protocol."""

    per_image: dict[str, float] = field(default_factory=dict)
    yaw: dict[str, float] = field(default_factory=dict)
    missed: list[str] = field(default_factory=list)  # detector crops: no face found
    pose_error: dict[str, list[float]] = field(default_factory=dict)  # |yaw|, |pitch|, |roll| error, degrees
    pose_excluded: list[str] = field(default_factory=list)  # ground-truth angle beyond POSE_LIMIT

    def pose_summary(self) -> dict | None:
        """Mean absolute yaw / pitch / roll error (degrees) and their mean, over images with usable ``Pose_Para``."""
        if not self.pose_error:
            return None
        e = np.array(list(self.pose_error.values()))
        out = {k: float(v) for k, v in zip(POSE_KEYS, e.mean(axis=0))}
        out.update(mean=float(e.mean()), count=len(e), excluded=len(self.pose_excluded))
        return out

    def summary(self) -> dict:
        names = list(self.per_image)
        vals = np.array([self.per_image[n] for n in names]) if names else np.zeros(0)
        bins = []
        for i, rng in enumerate(YAW_BINS):
            sel = [self.per_image[n] for n in names if yaw_bin(self.yaw[n]) == i]
            bins.append({"range": list(rng), "count": len(sel), "nme": float(np.mean(sel)) if sel else None})
        means = [b["nme"] for b in bins if b["nme"] is not None]
        return {"nme_all": float(vals.mean()) if len(vals) else None,
                "nme_mean_of_bins": float(np.mean(means)) if means else None,
                "bins": bins, "count": len(names),
                "failures": sorted(n for n in names if self.per_image[n] > FAIL_NME), "missed": self.missed,
                "pose_mae": self.pose_summary(),
                "per_image": self.per_image, "yaw": self.yaw}


def evaluate(aligner, labels: list[Path], crop: str = "gt", detector=None,
             refine: int = 0, steady: bool = False) -> EvalReport:
    """Run ``aligner`` on every labelled image; ``crop`` is ``gt`` or ``detector``; ``refine``: landmark re-crops
    after a detector crop (``model.align_images.align_boxes``; the protocol is 0); ``steady``: the final crop's fit
    averaged over crops around it (``model.align_images.align_steady``, what a swap source gets)."""
    from model.groundtruth import read_groundtruth

    report = EvalReport()
    for label in labels:
        gt = read_groundtruth(label)
        img = cv2.imread(str(gt.image), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"cannot read image {gt.image}")
        if crop == "gt":
            res = aligner.align(img, roi_from_landmarks(gt.landmarks[None]))
        else:
            boxes, _ = detector(img)
            if len(boxes) == 0:
                report.missed.append(gt.image.name)
                continue
            best = int(np.argmax(iou_matrix(box_from_landmarks(gt.landmarks[None]), boxes)[0]))
            # the detector crop (model.roi.roi_from_box), then ``refine`` landmark re-crops
            res = align_boxes(img, aligner, boxes[best:best + 1], dense=False, refine=refine)
        if steady:
            res = align_steady(img, aligner, res.roi[0], dense=False)
        name = gt.image.name
        report.per_image[name] = float(nme(res.landmarks[0], gt.landmarks))
        report.yaw[name] = gt.yaw if gt.yaw is not None else float(res.pose[0, 0])
        if gt.mat is not None and "Pose_Para" in gt.mat:
            pp = np.degrees(np.asarray(gt.mat["Pose_Para"], np.float64).ravel()[[1, 0, 2]])  # yaw, pitch, roll
            if np.all(np.abs(pp) <= POSE_LIMIT):
                pred = pose_para_angles(rotation_from_params(res.params[:1]))[0]
                report.pose_error[name] = angle_error(pred, pp).tolist()
            else:
                report.pose_excluded.append(name)
    return report


def format_table(summary: dict, title: str) -> str:
    """Markdown table of a summary."""
    rows = [f"### {title}", "", "| |yaw| bin | images | NME % |", "|---|---:|---:|"]
    for b in summary["bins"]:
        v = "-" if b["nme"] is None else f"{b['nme']:.3f}"
        rows.append(f"| {b['range'][0]:.0f}-{b['range'][1]:.0f} | {b['count']} | {v} |")
    mob = summary["nme_mean_of_bins"]
    rows.append(f"| mean of bins | | {'-' if mob is None else f'{mob:.3f}'} |")
    rows.append(f"| all images | {summary['count']} | {summary['nme_all']:.3f} |" if summary["nme_all"] is not None
                else "| all images | 0 | - |")
    pm = summary.get("pose_mae")
    if pm:
        rows.append("")
        rows.append(f"head pose MAE (degrees, {pm['count']} images, {pm['excluded']} with a ground-truth angle over "
                    f"{POSE_LIMIT:.0f} left out): yaw {pm['yaw']:.2f}, pitch {pm['pitch']:.2f}, roll {pm['roll']:.2f}, "
                    f"mean {pm['mean']:.2f}")
    rows.append("")
    rows.append(f"failures (NME > {FAIL_NME}%): {', '.join(summary['failures']) or 'none'}"
                + (f"; no face detected: {', '.join(summary['missed'])}" if summary["missed"] else ""))
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="python -m model.evaluate", description=(
        "NME of a model on images with 68-point ground truth (.mat with pt3d_68/Pose_Para, or .pts), 3DDFA protocol. "
        "Example: python -m model.evaluate --weights 3ddfa-v2-mb05 --images "
        "../shared/assets/YadiraF/PRNet/TestImages/AFLW2000 --json nme.json"))
    p.add_argument("--images", required=True, nargs="+", help="folders (or label files) with images + labels")
    p.add_argument("--weights", default="auto", help="model name (auto, damdnet, damdnet-authors, 3ddfa-v2-mb05, "
                                                     "3ddfa-v2-mb1) or checkpoint path")
    p.add_argument("--backbone", default=None, help="expected backbone (damdnet, mobilenet_v1); checked, not forced")
    p.add_argument("--crop", choices=["gt", "detector"], default="gt", help="crop from ground truth or detector")
    p.add_argument("--detector", default="auto", choices=["auto", "yunet", "haar"])
    p.add_argument("--refine", type=int, default=0, help="with --crop detector: landmark re-crops after the detector "
                                                         "crop, as model.align_images does (default 0: the 3DDFA protocol)")
    p.add_argument("--steady", action="store_true",
                   help="average each fit over 11 crops around its crop (model.align_images.align_steady), as a swap "
                        "source is fitted")
    p.add_argument("--expression", choices=["true", "false"], default="true",
                   help="the expression stage (eyelids, lips) after the network, as run_stream.py runs it "
                        "(default true)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--assets", default=None, help="assets root (default $DAMDNET_ASSETS or ~/.cache/damdnet)")
    p.add_argument("--json", default=None, help="write the summary and per-image NME to this JSON file")
    a = p.parse_args(argv)
    from model.aligner import Aligner
    from model.checkpoint import CheckpointError, model_label
    from model.detect import FaceDetector
    from model.groundtruth import find_labels

    store = AssetStore(a.assets)
    try:
        labels = [lab for folder in a.images for lab in find_labels(folder)]
        if not labels:
            raise FileNotFoundError(f"no labelled images (.mat/.pts beside an image) in {', '.join(a.images)}")
        aligner = Aligner.from_checkpoint(a.weights, device=a.device, store=store,
                                          expression=a.expression == "true")
        if a.backbone and a.backbone != aligner.backbone:
            raise CheckpointError(f"--backbone {a.backbone} but the weights are a {aligner.backbone}")
        det = FaceDetector.create(a.detector, store) if a.crop == "detector" else None
        if a.refine < 0:
            raise ValueError(f"--refine {a.refine}: expected 0 or more re-crops")
        report = evaluate(aligner, labels, a.crop, det, refine=a.refine, steady=a.steady)
    except (FileNotFoundError, ValueError, UserError) as exc:  # label files, options; assets, weights, device
        print(f"error: {exc}", file=sys.stderr)
        return 2
    s = report.summary()
    print(f"model: {model_label(aligner.name, f'{aligner.backbone}, {aligner.convention} space', aligner.why)} "
          f"on {aligner.device}; "
          f"crop: {a.crop}{f' + {a.refine} landmark re-crop(s)' if a.crop == 'detector' and a.refine else ''}"
          f"{' (steady: 11 crops averaged)' if a.steady else ''}; "
          f"images: {len(labels)}")
    print(format_table(s, "NME (%)"))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(s, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
