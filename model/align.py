"""Align faces in still images: draw landmarks, pose axes and the mesh outline, and write a JSON of the results.

    python -m model.align IMAGE [IMAGE...] --out DIR [--weights auto] [--detector auto] [--refine N]

Writes ``DIR/<name>_aligned.jpg`` per image and ``DIR/results.json`` with, per image and face: box, score, roi,
yaw/pitch/roll (degrees), 68 landmarks (x, y, z pixels) and the 62 real 3DMM parameters. An image without a face is
not an error: its copy and an empty list are written, with ``warning: no face found in IMAGE (1 image)``. Exit 1 only
when no image could be read.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np

from model.assets import AssetError, AssetStore
from model.cliparse import OneLineParser
from model.draw import draw_box, draw_landmarks, draw_mesh_outline, draw_pose_axes
from model.morphable import rotation_from_params
from model.roi import iou_matrix, roi_from_box, roi_from_landmarks

# landmark re-crops after the detector crop. With 3DDFA's box rule one re-crop took the validation NME from 6.65 to 5.71
# (ours) and 4.75 to 4.24 (teacher); the calibrated rule (model.roi.BOX_SIDE) gets there in one pass (5.70, 4.22), and
# a re-crop on top adds nothing (5.79, 4.31): none by default
REFINE = 0
REFINE_MIN_IOU = 0.25  # a re-crop that overlaps its detector crop less than this is not taken (a fit gone astray)


def annotate(img: np.ndarray, res, boxes: np.ndarray, grid_shape: tuple[int, int] | None,
             tri: np.ndarray | None = None) -> np.ndarray:
    """Copy of ``img`` with every face's landmarks, pose axes, mesh outline and box drawn."""
    out = img.copy()
    rots = rotation_from_params(res.params)
    for i in range(len(res)):
        lm = res.landmarks[i]
        if res.vertices is not None and (grid_shape is not None or tri is not None):
            draw_mesh_outline(out, res.vertices[i], grid_shape, tri=tri)
        draw_landmarks(out, lm)
        size = float(np.ptp(lm[:, 0]) + np.ptp(lm[:, 1])) / 2
        draw_pose_axes(out, rots[i], lm[30], size * 0.5)
        yaw, pitch, roll = res.pose[i, :3]
        draw_box(out, boxes[i], label=f"yaw {yaw:.0f} pitch {pitch:.0f} roll {roll:.0f}")
    return out


class NoFaceWarning(UserWarning):
    """An input with no face anywhere. Not an error in any entry point (run, batch, model.align, the API): the
    outputs are written, with no faces in them, the exit status is 0, and this one line is given."""


def no_face_message(name: str, count: int, unit: str = "frame") -> str:
    """The line (after ``warning: ``) that every entry point gives for an input ``name`` in which none of its
    ``count`` frames (``unit`` "frame" or "image") had a face."""
    return f"no face found in {name} ({count} {unit}{'' if count == 1 else 's'})"


class ImageError(ValueError):
    """An image that cannot be read (one line: ``PATH: no such file`` / ``PATH: not a readable image``)."""


def read_image(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 BGR pixels of the image file ``path``; raises ImageError."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR) if Path(path).is_file() else None
    if img is None:
        raise ImageError(f"{path}: {'no such file' if not Path(path).exists() else 'not a readable image'}")
    return img


def align_boxes(img: np.ndarray, aligner, boxes: np.ndarray, dense: bool = True, refine: int = REFINE):
    """AlignResult of the faces in detector ``boxes`` (N, 4) frame px of ``img``: the detector crop
    (``model.roi.roi_from_box``), then ``refine`` times the crop of the fit's own landmarks
    (``model.roi.roi_from_landmarks``, the crop the network was trained and tracks on). A face whose re-crop overlaps
    its detector crop (IoU) less than ``REFINE_MIN_IOU`` keeps its previous crop. Dense vertices when ``dense``."""
    if refine < 0:
        raise ValueError(f"refine: {refine} is not a count of re-crops (0, 1, 2...)")
    first = roi_from_box(boxes)
    res = aligner.align(img, first, dense=dense and refine == 0)
    for k in range(refine):
        rois = roi_from_landmarks(res.landmarks)
        stray = np.diag(iou_matrix(rois, first)) < REFINE_MIN_IOU
        rois[stray] = res.roi[stray]
        res = aligner.align(img, rois, dense=dense and k == refine - 1)
    return res


def detect_and_align(img: np.ndarray, aligner, detector, dense: bool = True, refine: int = REFINE):
    """Every face of ``img`` (H, W, 3) uint8 BGR: detector boxes (N, 4), scores (N,) and the AlignResult of their
    crops (``align_boxes``: the detector crop refined ``refine`` times by the landmarks), dense vertices when
    ``dense``."""
    boxes, scores = detector(img)
    return boxes, scores, align_boxes(img, aligner, boxes, dense=dense, refine=refine)


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="python -m model.align", description=(
        "Find and align every face in images; writes annotated copies and results.json. "
        "Example: python -m model.align ../shared/assets/cleardusk/3DDFA/samples/test1.jpg --out out/align"))
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--weights", default="auto", help="model name or checkpoint path (default auto)")
    p.add_argument("--detector", default="auto", choices=["auto", "yunet", "haar"])
    p.add_argument("--score", type=float, default=0.6, help="detector score threshold (0-1)")
    p.add_argument("--refine", type=int, default=REFINE, help=f"re-crops of each face from its own landmarks after the "
                   f"detector crop, one more network pass each (default {REFINE}: the calibrated detector crop alone)")
    p.add_argument("--device", default="auto")
    p.add_argument("--assets", default=None, help="assets root (default $DAMDNET_ASSETS or ~/.cache/damdnet)")
    a = p.parse_args(argv)
    if a.refine < 0:
        p.error(f"--refine {a.refine}: expected 0 or more re-crops")
    out_dir = Path(a.out)
    why = _unwritable(out_dir)
    if why:  # before the model loads
        print(f"error: cannot write to --out {out_dir}: {why}", file=sys.stderr)
        return 2
    from model.aligner import Aligner
    from model.checkpoint import CheckpointError
    from model.detect import FaceDetector

    store = AssetStore(a.assets)
    try:
        aligner = Aligner.from_checkpoint(a.weights, device=a.device, store=store)
        detector = FaceDetector.create(a.detector, store, score_threshold=a.score)
    except (AssetError, CheckpointError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"model: {aligner.name} ({aligner.backbone}); detector: {detector.kind}", file=sys.stderr)
    try:
        return _align_all(a.images, out_dir, aligner, detector, a.refine)
    except OSError as exc:  # the disk filled up or went away mid-run
        print(f"error: cannot write {getattr(exc, 'filename', None) or out_dir}: {exc.strerror or exc}",
              file=sys.stderr)
        return 2


def _unwritable(out_dir: Path) -> str | None:
    """None when files can be created in ``out_dir`` (made if missing), else the reason (read-only, no space...)."""
    import tempfile

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _write_file(path: Path, data: bytes, inputs: list[str]) -> None:
    """Write ``data`` to ``path`` through a temporary file + rename; refuses a path that is one of the inputs."""
    import os

    if path.exists() and any(Path(i).exists() and os.path.samefile(path, i) for i in inputs):
        raise OSError(17, "it is one of the input images; choose another --out", str(path))
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _align_all(images: list[str], out_dir: Path, aligner, detector, refine: int = REFINE) -> int:
    results, problems = {}, 0
    for path in images:
        try:
            img = read_image(path)
        except ImageError as exc:
            print(f"{exc}; skipped", file=sys.stderr)
            problems += 1
            continue
        boxes, scores, res = detect_and_align(img, aligner, detector, dense=True, refine=refine)
        if len(boxes) == 0:  # not an error: the copy and results.json are written, with no faces
            print(f"warning: {no_face_message(path, 1, 'image')}", file=sys.stderr)
        name = Path(path).stem + "_aligned.jpg"
        ok, jpg = cv2.imencode(".jpg", annotate(img, res, boxes, aligner.morph.grid_shape, aligner.morph.tri))
        if not ok:
            raise OSError(5, "JPEG encoding failed", str(out_dir / name))
        _write_file(out_dir / name, jpg.tobytes(), images)
        results[path] = [{"box": boxes[i].tolist(), "score": float(scores[i]), "roi": res.roi[i].tolist(),
                          "yaw": float(res.pose[i, 0]), "pitch": float(res.pose[i, 1]), "roll": float(res.pose[i, 2]),
                          "landmarks": res.landmarks[i].round(2).tolist(), "params": res.params[i].tolist(),
                          "image": name} for i in range(len(res))]
        print(f"{path}: {len(res)} face(s) -> {out_dir / name}", file=sys.stderr)
    _write_file(out_dir / "results.json", json.dumps({"model": aligner.name, "results": results}, indent=1).encode(),
                images)
    return 1 if problems == len(images) else 0


if __name__ == "__main__":
    sys.exit(main())
