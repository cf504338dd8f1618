"""Align faces in still images: draw landmarks, pose axes and the mesh outline, and write a JSON of the results.

    python -m model.align_images IMAGE [IMAGE...] --out DIR [--weights auto] [--detector auto] [--refine N]

Writes ``DIR/<name>_aligned.jpg`` per image and ``DIR/results.json`` with, per image and face: box, score, roi,
yaw/pitch/roll (degrees), 68 landmarks (x, y, z pixels) and the 62 real 3DMM parameters. A later run into the same
DIR adds its images to ``results.json`` (``merge_results``): the file always lists exactly the annotated images in
DIR, with the model of each (``models``; ``model`` is the last run's). An image without a face is not an error:
its entry is an empty list (no annotated copy), with ``warning: no face found in IMAGE (1 image)``. Exit 1 only when
no image could be read.
"""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from model.aligner import AlignResult
from model.assets import AssetStore
from model.cliparse import OneLineParser
from model.draw import draw_box, draw_landmarks, draw_mesh_outline, draw_pose_axes
from model.errors import UserError
from model.morphable import rotation_from_params
from model.roi import iou_matrix, roi_from_box, roi_from_landmarks

# landmark re-crops after the detector crop. With 3DDFA's box rule one re-crop took the validation NME from 6.65 to 5.71
# (ours) and 4.75 to 4.24 (teacher); the calibrated rule (model.roi.BOX_SIDE) gets there in one pass (5.70, 4.22), and
# a re-crop on top adds nothing (5.79, 4.31): none by default
REFINE = 0
REFINE_MIN_IOU = 0.25  # a re-crop that overlaps its detector crop less than this is not taken (a fit gone astray)
RESULTS = "results.json"
# a still's steady fit (``align_steady``): the crop itself and ten around it, each (x shift, y shift, scale step) in
# units of ``STEADY_STEP`` x the crop's side: a symmetric pattern, so the shifts' first-order effects cancel
STEADY_CROPS = ((0, 0, 0), (1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1),
                (1, 1, 0), (-1, -1, 0), (1, -1, 0), (-1, 1, 0))
STEADY_STEP = 0.04


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
    """An input with no face anywhere. Not an error in any entry point (run, batch, model.align_images, the API): the
    outputs are written, with no faces in them, the exit status is 0, and this one line is given."""


def no_face_message(name: str, count: int, unit: str = "frame") -> str:
    """The line (after ``warning: ``) that every entry point gives for an input ``name`` in which none of its
    ``count`` frames (``unit`` "frame" or "image") had a face."""
    return f"no face found in {name} ({count} {unit}{'' if count == 1 else 's'})"


class ImageError(UserError, ValueError):
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


def steady_rois(roi: np.ndarray, step: float = STEADY_STEP) -> np.ndarray:
    """The crops of a steady fit around one crop box ``roi`` (4,) frame px (x0, y0, x1, y1): (len(STEADY_CROPS), 4)
    float32, the box shifted by ``step`` x its side along x, y and the diagonals, and scaled by 1 +- ``step`` about
    its centre; the first is the box itself."""
    r = np.asarray(roi, np.float64).reshape(4)
    centre, half = (r[:2] + r[2:]) / 2, (r[2:] - r[:2]) / 2
    side = float(half.sum())  # the mean of width and height
    out = np.empty((len(STEADY_CROPS), 4), np.float32)
    for k, (sx, sy, ss) in enumerate(STEADY_CROPS):
        c = centre + step * side * np.array([sx, sy])
        h = half * (1.0 + step * ss)
        out[k] = np.concatenate([c - h, c + h])
    return out


def align_steady(img: np.ndarray, aligner, roi: np.ndarray, dense: bool = True,
                 step: float = STEADY_STEP) -> AlignResult:
    """One face of a still fitted on every crop of :func:`steady_rois` around ``roi`` (4,) in one forward pass and
    averaged: an AlignResult of one face whose params (1, 62), landmarks (1, 68, 3), vertices (1, V, 3) (when
    ``dense``) and ext are the means over the crops (the pose as a mean of nearby scaled rotations), roi the crop
    itself. A single crop's fit moves with where the box falls (a few percent of the eye distance on a photo; more on a
    small or blurred one); the mean does not, for the price of 11 crops: for a fit made once and kept, as a swap
    source's texture."""
    rois = steady_rois(roi, step)
    res = aligner.align(img, rois, dense=dense)
    mean = lambda a: None if a is None else a.mean(0, keepdims=True).astype(a.dtype)  # noqa: E731
    return AlignResult(params=mean(res.params), landmarks=mean(res.landmarks), roi=rois[:1].copy(),
                       vertices=mean(res.vertices), confidence=None if res.confidence is None else
                       res.confidence[:1].copy(), ext=mean(res.ext))


def detect_and_align(img: np.ndarray, aligner, detector, dense: bool = True, refine: int = REFINE):
    """Every face of ``img`` (H, W, 3) uint8 BGR: detector boxes (N, 4), scores (N,) and the AlignResult of their
    crops (``align_boxes``: the detector crop refined ``refine`` times by the landmarks), dense vertices when
    ``dense``."""
    boxes, scores = detector(img)
    return boxes, scores, align_boxes(img, aligner, boxes, dense=dense, refine=refine)


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="python -m model.align_images", description=(
        "Find and align every face in images; writes annotated copies and results.json. "
        "Example: python -m model.align_images ../shared/assets/cleardusk/3DDFA/samples/test1.jpg --out out/align"))
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--weights", default="auto", help="model name or checkpoint path (default auto)")
    p.add_argument("--detector", default="auto", choices=["auto", "yunet", "haar"])
    p.add_argument("--score", type=float, default=0.6, help="detector score threshold (0-1)")
    p.add_argument("--refine", type=int, default=REFINE, help=f"re-crops of each face from its own landmarks after the "
                   f"detector crop, one more network pass each (default {REFINE}: the calibrated detector crop alone)")
    p.add_argument("--expression", choices=["true", "false"], default="true",
                   help="the expression stage (eyelids, lips) after the network, as run_stream.py runs it "
                        "(default true)")
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
    from model.checkpoint import model_label
    from model.detect import FaceDetector

    store = AssetStore(a.assets)
    try:
        aligner = Aligner.from_checkpoint(a.weights, device=a.device, store=store,
                                          expression=a.expression == "true")
        detector = FaceDetector.create(a.detector, store, score_threshold=a.score)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"model: {model_label(aligner.name, aligner.backbone, aligner.why)}; detector: {detector.kind}",
          file=sys.stderr)
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


def _images_of(faces: object) -> set[str]:
    """Annotated image names (plain file names in the --out folder) that an entry's faces refer to."""
    names = {f.get("image") for f in faces if isinstance(f, dict)} if isinstance(faces, list) else set()
    return {n for n in names if isinstance(n, str) and n and Path(n).name == n}


def load_results(out_dir: Path) -> tuple[dict, dict]:
    """(results, models) of an earlier run's ``results.json`` in ``out_dir``: image path -> faces and -> model
    name; ({}, {}) when there is none or it is not ours."""
    try:
        data = json.loads((out_dir / RESULTS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}, {}
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        return {}, {}
    models = data.get("models") if isinstance(data.get("models"), dict) else {}
    return data["results"], {p: models.get(p, data.get("model")) for p in data["results"]}


def merge_results(old: dict, old_models: dict, new: dict, model: str, out_dir: Path) -> tuple[dict, dict, set[str]]:
    """This run's entries (``new``: image path -> faces, by ``model``) over an earlier run's in ``out_dir``.
    Returns (results, models, stale): an earlier entry stays unless this run has its image again, wrote an annotated
    image of the same name, or its annotated image is gone; ``stale`` are the earlier annotated images that no entry
    refers to any more (to delete), so the folder and the results agree."""
    written = {n for faces in new.values() for n in _images_of(faces)}
    results, models = {}, {}
    for path, faces in old.items():
        names = _images_of(faces)
        if path in new or names & written or not all((out_dir / n).is_file() for n in names):
            continue
        results[path], models[path] = faces, old_models.get(path)
    for path, faces in new.items():
        results[path], models[path] = faces, model
    kept = {n for faces in results.values() for n in _images_of(faces)}
    stale = {n for faces in old.values() for n in _images_of(faces)} - kept
    return results, models, stale


def _save_results(out_dir: Path, model: str, new: dict, inputs: list[str], earlier: tuple[dict, dict]) -> None:
    """Write ``results.json``: this run's entries merged with the ``earlier`` run's (``merge_results``); remove the
    earlier annotated images that no entry refers to any more."""
    results, models, stale = merge_results(*earlier, new, model, out_dir)
    _write_file(out_dir / RESULTS, json.dumps({"model": model, "models": models, "results": results},
                                              indent=1).encode(), inputs)
    for name in stale:
        path = out_dir / name
        if path.is_file() and not any(Path(i).is_file() and path.samefile(i) for i in inputs):
            path.unlink()


def _image_name(path: str, taken: set[str]) -> str:
    """``<stem>_aligned.jpg`` for the input ``path``, ``<stem>-2_aligned.jpg``... when another input has that name."""
    stem, k = Path(path).stem, 1
    while (name := f"{stem}{f'-{k}' if k > 1 else ''}_aligned.jpg") in taken:
        k += 1
    return name


def _align_all(images: list[str], out_dir: Path, aligner, detector, refine: int = REFINE) -> int:
    results, problems = {}, 0
    earlier = load_results(out_dir)
    try:
        for path in images:
            try:
                img = read_image(path)
            except ImageError as exc:
                print(f"{exc}; skipped", file=sys.stderr)
                problems += 1
                continue
            boxes, scores, res = detect_and_align(img, aligner, detector, dense=True, refine=refine)
            if len(boxes) == 0:  # not an error: an empty entry (nothing to annotate), one warning line
                print(f"warning: {no_face_message(path, 1, 'image')}", file=sys.stderr)
                results[path] = []
                continue
            others = {**earlier[0], **results}  # names other inputs have: an image re-aligned keeps its own
            name = _image_name(path, {n for p, faces in others.items() if p != path for n in _images_of(faces)})
            ok, jpg = cv2.imencode(".jpg", annotate(img, res, boxes, aligner.morph.grid_shape, aligner.morph.tri))
            if not ok:
                raise OSError(5, "JPEG encoding failed", str(out_dir / name))
            _write_file(out_dir / name, jpg.tobytes(), images)
            results[path] = [{"box": boxes[i].tolist(), "score": float(scores[i]), "roi": res.roi[i].tolist(),
                              "yaw": float(res.pose[i, 0]), "pitch": float(res.pose[i, 1]),
                              "roll": float(res.pose[i, 2]), "landmarks": res.landmarks[i].round(2).tolist(),
                              "params": res.params[i].tolist(), "image": name} for i in range(len(res))]
            print(f"{path}: {len(res)} face(s) -> {out_dir / name}", file=sys.stderr)
    except BaseException:  # interrupted or a full disk: the images written so far are listed too
        with contextlib.suppress(OSError):
            _save_results(out_dir, aligner.name, results, images, earlier)
        raise
    _save_results(out_dir, aligner.name, results, images, earlier)
    return 1 if problems == len(images) else 0


if __name__ == "__main__":
    sys.exit(main())
