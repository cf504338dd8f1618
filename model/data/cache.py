"""A compact, teacher-fitted cache of face photos: one binary file of encoded context crops and one index.

    python -m model.data.cache build --photos ../shared/assets/faces --out ~/.cache/damdnet/photocache [--limit N]
        [--videos a.mp4 b.mp4 --every 15]
    python -m model.data.cache build-human --pts ../shared/assets/faces300w --out ~/.cache/damdnet/humancache
    python -m model.data.cache info ~/.cache/damdnet/photocache

Why: training on a lent GPU machine needs its data carried there (64 MiB for everything), and re-reading and
re-framing 22k JPEGs per epoch wastes the CPU that augmentation needs. Per photo the cache keeps:

- a **context crop** ``(CONTEXT, CONTEXT)`` (144 px) whose centre ``CROP_SIZE`` (120 px) square, at ``OFFSET`` (12 px),
  is exactly the evaluation-rule crop (``roi_from_landmarks`` of the teacher's landmarks on the whole-photo crop);
  the margin leaves room for jitter, rotation and face profiling. Encoded as WebP (grey photos as one channel);
- the teacher's flip-averaged **real v1 parameters** of that centre crop (what face profiling starts from), and its
  **flip gap**: the mean landmark distance between its direct and mirrored-back fits over the face size (sqrt of the
  landmark box area): a wrong fit (a small face in a big photo, a hidden face) disagrees with itself;
- the photo's source folder (for per-source loss weights) and its path relative to the photo root.

Files: ``DIR/images.bin`` (concatenated encodings) and ``DIR/index.npz`` (``offsets`` (N+1,) int64, ``params``
(N, 62) float32, ``flip_gap`` (N,) float32, ``grey`` (N,) bool, ``inside`` (N, 4) float32, ``source`` (N,) str, ``name`` (N,) str, ``teacher`` str, ``context``/``offset``
int). Evaluation-only photos are never listed (``photos.EXCLUDE``).

**Human-fit caches** (``build-human``): images with 68 human ``.pts`` landmarks (300-W convention). Each face is framed
by the evaluation rule on its human landmarks, the teacher's flip-averaged fit of the centre crop is the start, and
``model.fit_landmarks`` fits pose, shape and expression to the human landmarks (landmark marching on the jaw); the fit
is stored as ``params`` and is an EXACT label. Extra index arrays (optional: a cache without them is all teacher
rows): ``label`` (N,) str (``"teacher"`` or ``"human-fit"``), ``landmarks`` (N, 68, 2) float32 human landmarks in
context pixels (NaN rows for teacher rows) and ``fit_nme`` (N,) float32 (% of the landmark box, marched contour).
``DIR/fit_report.md`` holds the NME table of the fits and of their teacher starts against the human landmarks. Training mixes caches by listing several folders (``data.cache: [teacher, human]``,
``PhotoCache.load_many``).
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from model.roi import CROP_SIZE, roi_from_box, roi_from_landmarks

CONTEXT = 144
OFFSET = (CONTEXT - CROP_SIZE) // 2
WEBP_QUALITY = 75
TEACHER_LABEL = "teacher"
HUMAN_LABEL = "human-fit"
# folders whose labelled photos are evaluation data: never fitted into a training cache (substrings, any case)
EVAL_ONLY_PARTS = ("aflw2000", "aflw-2000", "2dasl", "prnet", "menpo", "patrikhuber", "mmpose", "lfpw")


def context_roi(roi: np.ndarray) -> np.ndarray:
    """Crop ROIs (N, 4) -> the context ROIs around them (N, 4): same centre, side x CONTEXT / CROP_SIZE."""
    r = np.asarray(roi, np.float64).reshape(-1, 4)
    c = (r[:, :2] + r[:, 2:]) / 2
    half = (r[:, 2:] - r[:, :2]) / 2 * (CONTEXT / CROP_SIZE)
    return np.concatenate([c - half, c + half], 1).astype(np.float32)


def is_grey(image: np.ndarray, tol: float = 2.0) -> bool:
    """True when the three channels of a BGR uint8 image agree within ``tol`` (mean absolute difference)."""
    x = image.astype(np.int16)
    return bool(np.abs(x[..., 0] - x[..., 1]).mean() < tol and np.abs(x[..., 1] - x[..., 2]).mean() < tol)


@dataclass
class PhotoCache:
    """A loaded cache: ``image(i)`` -> (CONTEXT, CONTEXT, 3) uint8 BGR; ``params`` (N, 62) real v1 (centre crop)."""

    data: np.ndarray  # uint8 (bytes of images.bin)
    offsets: np.ndarray
    params: np.ndarray
    grey: np.ndarray
    flip_gap: np.ndarray  # (N,) float32: the teacher's direct vs mirrored fit, mean landmark distance / face size
    inside: np.ndarray  # (N, 4) float32: the photo's rectangle in context px (x1, y1, x2, y2); beyond it is padding
    source: np.ndarray
    name: np.ndarray
    teacher: str = ""
    label: np.ndarray | None = None  # (N,) str: "teacher" | "human-fit"; None: all teacher
    landmarks: np.ndarray | None = None  # (N, 68, 2) float32 human landmarks in context px, NaN where none
    fit_nme: np.ndarray | None = None  # (N,) float32 human-fit NME (%), NaN for teacher rows

    def __post_init__(self) -> None:
        n = len(self.params)
        if self.label is None:
            self.label = np.full(n, TEACHER_LABEL)
        if self.landmarks is None:
            self.landmarks = np.full((n, 68, 2), np.nan, np.float32)
        if self.fit_nme is None:
            self.fit_nme = np.full(n, np.nan, np.float32)

    @property
    def human(self) -> np.ndarray:
        """(N,) bool: rows whose params are a fit to human landmarks (exact labels)."""
        return self.label == HUMAN_LABEL

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "PhotoCache":
        folder = Path(os.path.expanduser(str(folder)))
        idx, blob = folder / "index.npz", folder / "images.bin"
        if not (idx.is_file() and blob.is_file()):
            raise FileNotFoundError(f"no photo cache in {folder} (build it: python -m model.data.cache build "
                                    f"--photos PHOTOS --out {folder})")
        z = np.load(idx, allow_pickle=False)
        data = np.fromfile(blob, np.uint8)
        offsets = z["offsets"].astype(np.int64)
        if offsets[-1] != data.size:
            raise ValueError(f"{blob}: {data.size} bytes, the index expects {offsets[-1]} (rebuild the cache)")
        if int(z["context"]) != CONTEXT or int(z["offset"]) != OFFSET:
            raise ValueError(f"{folder}: context {int(z['context'])} px, this code expects {CONTEXT} (rebuild)")
        opt = {k: z[k] for k in ("label", "landmarks", "fit_nme") if k in z.files}
        return cls(data, offsets, z["params"].astype(np.float32), z["grey"].astype(bool), z["flip_gap"], z["inside"], z["source"],
                   z["name"], str(z["teacher"]), **opt)

    @classmethod
    def load_many(cls, folders: "str | os.PathLike | list") -> "PhotoCache":
        """One cache or several concatenated (e.g. the teacher photo cache and a human-fit cache), in order."""
        if isinstance(folders, (str, os.PathLike)):
            return cls.load(folders)
        caches = [cls.load(f) for f in folders]
        if not caches:
            raise ValueError("no photo cache folders given")
        if len(caches) == 1:
            return caches[0]
        return cls.concat(caches)

    @classmethod
    def concat(cls, caches: list) -> "PhotoCache":
        """Caches joined row-wise (the image bytes are copied once)."""
        sizes = np.cumsum([0] + [c.data.size for c in caches])
        offsets = np.concatenate([caches[0].offsets[:1]] + [c.offsets[1:] + base for c, base in zip(caches, sizes)])

        def cat(name):
            return np.concatenate([getattr(c, name) for c in caches])

        teachers = sorted({c.teacher for c in caches if c.teacher})
        return cls(np.concatenate([c.data for c in caches]), offsets, cat("params"), cat("grey"), cat("flip_gap"),
                   cat("inside"), cat("source"), cat("name"), "+".join(teachers), cat("label"), cat("landmarks"),
                   cat("fit_nme"))

    def __len__(self) -> int:
        return len(self.params)

    def image(self, i: int) -> np.ndarray:
        buf = self.data[self.offsets[i]:self.offsets[i + 1]]
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"photo cache entry {i} ({self.name[i]}) does not decode")
        return img


@dataclass
class Item:
    """One face to cache: its image, a face box (x1, y1, x2, y2) or None for "the whole image", name and source."""

    image: np.ndarray
    box: np.ndarray | None
    name: str
    source: str


def photo_items(root: str | os.PathLike, limit: int | None = None) -> tuple[int, object]:
    """(count, iterator of ``Item``) for the photos under ``root`` (each a face crop: box None); unreadable or tiny
    files are skipped with a count on stderr at the end."""
    from model.data.photos import list_images

    root = Path(root)
    paths = list_images(root)[: limit or None]
    if not paths:
        raise FileNotFoundError(f"no images under {root}")

    def gen():
        skipped = 0
        for p in paths:
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is None or min(img.shape[:2]) < 24:
                skipped += 1
                continue
            rel = p.relative_to(root).parts
            yield Item(img, None, "/".join(rel), rel[0] if len(rel) > 1 else "")
        if skipped:
            print(f"skipped {skipped} unreadable or tiny images", file=sys.stderr)

    return len(paths), gen()


def every_nth_frame(path: str | os.PathLike, every: int = 1):
    """(frame index, BGR frame) of every ``every``-th frame of a video, from frame 0; nothing if it does not open."""
    cap = cv2.VideoCapture(str(path))
    try:
        k = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if k % every == 0:
                yield k, frame
            k += 1
    finally:
        cap.release()


def video_items(paths: list[str | os.PathLike], every: int = 15, min_face: int = 48,
                detector: str = "auto") -> tuple[int, object]:
    """(approximate count, iterator of ``Item``): every ``every``-th frame of each video, one item per detected face
    at least ``min_face`` px tall; the source is ``video:<file stem>``."""
    from model.detect import FaceDetector

    det = FaceDetector.create(detector)
    total = 0
    for v in paths:
        cap = cv2.VideoCapture(str(v))
        if not cap.isOpened():
            raise FileNotFoundError(f"cannot open video {v}")
        total += int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) // max(every, 1) + 1
        cap.release()

    def gen():
        for v in paths:
            for k, frame in every_nth_frame(v, every):
                boxes, _ = det(frame)
                for j, b in enumerate(boxes):
                    if b[3] - b[1] >= min_face:
                        yield Item(frame, np.asarray(b[:4], np.float32), f"{Path(v).name}#{k}.{j}",
                                   f"video:{Path(v).stem}")

    return total, gen()


def centre_crop(context: np.ndarray) -> np.ndarray:
    """The (CROP_SIZE, CROP_SIZE) evaluation crop at the centre of a context crop."""
    return context[OFFSET:OFFSET + CROP_SIZE, OFFSET:OFFSET + CROP_SIZE]


def teacher_fit(teacher, morph, centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre crops (N, 120, 120, 3) -> (flip-averaged real v1 params (N, 62), flip gap (N,)) (see the docstring)."""
    import torch

    with torch.no_grad():
        direct, mirrored = teacher.real_params_pair(centre)
        fit = (0.5 * (direct + mirrored)).cpu().numpy()
        a, b = morph.landmarks_crop(direct.cpu()).numpy(), morph.landmarks_crop(mirrored.cpu()).numpy()
    gap = np.linalg.norm((a - b)[..., :2], axis=-1).mean(1) / np.sqrt(
        np.ptp(a[..., 0], axis=1) * np.ptp(a[..., 1], axis=1)).clip(1.0)
    return fit, gap


class CacheWriter:
    """Writes a cache folder entry by entry (``add``), then the index (``finish``); files appear only when done."""

    def __init__(self, out: str | os.PathLike) -> None:
        self.out = Path(os.path.expanduser(str(out)))
        self.out.mkdir(parents=True, exist_ok=True)
        self.tmp = self.out / ".images.bin.part"
        self.f = None
        self.rows: dict[str, list] = {k: [] for k in ("params", "flip_gap", "grey", "inside", "source", "name",
                                                      "label", "landmarks", "fit_nme")}
        self.offsets = [0]

    def __enter__(self) -> "CacheWriter":
        self.f = open(self.tmp, "wb")
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()

    def add(self, item: Item, context: np.ndarray, ctx_roi: np.ndarray, params: np.ndarray, flip_gap: float,
            label: str = TEACHER_LABEL, landmarks: np.ndarray | None = None, fit_nme: float = float("nan")) -> None:
        """One face: its context crop (CONTEXT, CONTEXT, 3), the context ROI in the photo, real v1 params of the
        centre crop, the teacher's flip gap; human rows also their landmarks (68, 2) in context px and fit NME."""
        from model.data.photos import crop_matrix

        from_photo = item.image
        g = is_grey(from_photo)
        # beyond the image the context repeats its edge (cheap to encode); ``inside`` keeps the image's
        # rectangle in context pixels so training can put clutter there instead
        m = crop_matrix(ctx_roi, 0.0, CONTEXT)
        h, w = from_photo.shape[:2]
        r = self.rows
        r["inside"].append([m[0, 0] * -0.5 + m[0, 2], m[1, 1] * -0.5 + m[1, 2],
                            m[0, 0] * (w - 0.5) + m[0, 2], m[1, 1] * (h - 0.5) + m[1, 2]])
        enc = cv2.imencode(".webp", context[..., 0] if g else context, [cv2.IMWRITE_WEBP_QUALITY, WEBP_QUALITY])[1]
        self.f.write(enc.tobytes())
        self.offsets.append(self.offsets[-1] + enc.size)
        r["params"].append(params)
        r["flip_gap"].append(flip_gap)
        r["grey"].append(g)
        r["source"].append(item.source)
        r["name"].append(item.name)
        r["label"].append(label)
        r["landmarks"].append(np.full((68, 2), np.nan, np.float32) if landmarks is None else landmarks)
        r["fit_nme"].append(fit_nme)

    def finish(self, teacher_name: str) -> int:
        """Move the images into place and write the index; returns the entry count."""
        r = self.rows
        if not r["params"]:
            self.tmp.unlink(missing_ok=True)
            raise ValueError("no faces found to cache")
        os.replace(self.tmp, self.out / "images.bin")
        tmp_idx = self.out / ".index.part.npz"
        extra = {"label": np.array(r["label"])}
        if any(lab != TEACHER_LABEL for lab in r["label"]):  # teacher-only caches stay as they were (+ label)
            extra.update(landmarks=np.array(r["landmarks"], np.float32), fit_nme=np.array(r["fit_nme"], np.float32))
        np.savez_compressed(tmp_idx, offsets=np.array(self.offsets, np.int64), params=np.array(r["params"], np.float32),
                            flip_gap=np.array(r["flip_gap"], np.float32), grey=np.array(r["grey"], bool),
                            inside=np.array(r["inside"], np.float32), source=np.array(r["source"]),
                            name=np.array(r["name"]), teacher=np.array(teacher_name), context=np.array(CONTEXT),
                            offset=np.array(OFFSET), **extra)
        os.replace(tmp_idx, self.out / "index.npz")
        return len(r["params"])


def build(photos: str | os.PathLike | None, out: str | os.PathLike, limit: int | None = None, batch: int = 64,
          teacher_name: str = "3ddfa-v2-mb05", device: str = "cpu", progress: bool = True,
          videos: list | None = None, every: int = 15, items: tuple[int, object] | None = None) -> int:
    """Fit every photo under ``photos`` (and faces in every ``every``-th frame of ``videos``) with the teacher and
    write the cache to ``out``; returns the entry count. ``items``: more faces, as ``(count, iterator of Item)``
    (e.g. photos with a known face box).

    Two teacher passes per face: on the crop of its box (``roi_from_box``; a photo's box is the whole image) to place
    the landmarks, then, flip-averaged, on the evaluation-rule crop framed by them, whose parameters are stored.
    """
    import itertools

    import torch
    from tqdm import tqdm

    from model.data.photos import crop_matrix, warp_crop
    from model.data.teacher import Teacher
    from model.morphable import MorphableModel, crop_to_frame

    sources = []
    if photos is not None:
        sources.append(photo_items(photos, limit))
    if videos:
        sources.append(video_items(list(videos), every))
    if items is not None:
        sources.append(items)
    if not sources:
        raise ValueError("nothing to cache: give photos and/or videos")
    total = sum(n for n, _ in sources)
    items = itertools.chain.from_iterable(it for _, it in sources)
    teacher = Teacher(teacher_name, device, flip=True)
    morph = MorphableModel.load()
    writer = CacheWriter(out)
    with writer, tqdm(total=total, disable=not progress, desc="cache", unit="face") as bar:
        while True:
            chunk = list(itertools.islice(items, batch))
            if not chunk:
                break
            bar.update(len(chunk))
            boxes = [np.array([0, 0, it.image.shape[1], it.image.shape[0]], np.float32) if it.box is None else it.box
                     for it in chunk]
            rois = roi_from_box(np.stack(boxes))
            with torch.no_grad():
                real = teacher.real_params(np.stack([warp_crop(it.image, r) for it, r in zip(chunk, rois)])).cpu()
            lm = crop_to_frame(morph.landmarks_crop(real), torch.from_numpy(rois), "v1").numpy()
            ctx_rois = context_roi(roi_from_landmarks(lm))
            ctx = [warp_crop(it.image, r, 0.0, CONTEXT, cv2.BORDER_REPLICATE) for it, r in zip(chunk, ctx_rois)]
            fit, gap = teacher_fit(teacher, morph, np.stack([centre_crop(c) for c in ctx]))
            for it, c, r, prm, gp in zip(chunk, ctx, ctx_rois, fit, gap):
                writer.add(it, c, r, prm, gp)
    return writer.finish(teacher_name)


def human_items(root: str | os.PathLike, limit: int | None = None) -> tuple[int, object, list]:
    """(count, iterator of (``Item``, landmarks (68, 2) image px), skipped messages) for every image with a 68-point
    ``.pts`` beside it under ``root`` (recursive). Evaluation-only folders (``EVAL_ONLY_PARTS``) are refused."""
    from model.data.gt_datasets import _image_for
    from model.groundtruth import read_pts

    root = Path(os.path.expanduser(str(root)))
    if not root.is_dir():
        raise FileNotFoundError(f"no folder {root}")
    bad = [p for p in root.resolve().parts if any(e in p.lower() for e in EVAL_ONLY_PARTS)]
    if bad:
        raise ValueError(f"{root} is an evaluation-only set ({bad[0]}); never train on it")
    labels = sorted(p for p in root.rglob("*.pts") if _image_for(p) is not None
                    and not any(e in q.lower() for q in p.relative_to(root).parts for e in EVAL_ONLY_PARTS))
    labels = labels[: limit or None]
    if not labels:
        raise FileNotFoundError(f"no .pts labels beside images under {root}")
    skipped: list = []

    def gen():
        for lab in labels:
            img = cv2.imread(str(_image_for(lab)), cv2.IMREAD_COLOR)
            try:
                lm = read_pts(lab)
            except (ValueError, StopIteration) as exc:
                skipped.append(f"{lab}: {exc or 'no point block'}")
                continue
            if img is None or lm.shape != (68, 2) or not np.isfinite(lm).all():
                skipped.append(f"{lab}: unreadable image or not 68 points")
                continue
            rel = lab.relative_to(root).parts
            yield Item(img, None, "/".join(rel), rel[0] if len(rel) > 1 else ""), lm

    return len(labels), gen(), skipped


def build_human(pts: str | os.PathLike, out: str | os.PathLike, limit: int | None = None, batch: int = 64,
                teacher_name: str = "3ddfa-v2-mb05", device: str = "cpu", progress: bool = True,
                fit=None) -> tuple[int, str]:
    """Fit every image + 68-point ``.pts`` under ``pts`` to its human landmarks and write a human-fit cache to
    ``out`` (rows labelled ``"human-fit"``: exact labels). Returns (entry count, the fit report (markdown)).

    Per face: the evaluation-rule crop of its human landmarks (``roi_from_landmarks``) in a CONTEXT crop; the
    teacher's flip-averaged fit of the centre crop is the start; ``model.fit_landmarks`` (``fit``: a ``FitConfig``)
    fits pose, 40 shape and 10 expression parameters to the landmarks with the jaw contour marched.
    """
    import itertools
    import time

    from tqdm import tqdm

    from model.data.photos import crop_matrix, warp_crop
    from model.data.teacher import Teacher
    from model.fit_landmarks import FitConfig, LandmarkFitter, fit_report
    from model.morphable import MorphableModel, Whitening

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # the fit runs on small matrices: BLAS threads only add contention
        import contextlib

        def threadpool_limits(_n):
            return contextlib.nullcontext()

    total, items, skipped = human_items(pts, limit)
    teacher = Teacher(teacher_name, device, flip=True)
    morph = MorphableModel.load()
    fitter = LandmarkFitter.create(morph, Whitening.load("v1"), fit or FitConfig())
    writer = CacheWriter(out)
    stats: dict[str, list] = {"target": [], "teacher": [], "fit": [], "fit3d": [], "yaw": []}
    t0 = time.monotonic()
    with writer, threadpool_limits(1), tqdm(total=total, disable=not progress, desc="human fits", unit="face") as bar:
        while True:
            chunk = list(itertools.islice(items, batch))
            if not chunk:
                break
            bar.update(len(chunk))
            lms = np.stack([lm for _, lm in chunk])
            ctx_rois = context_roi(roi_from_landmarks(lms))
            ctx = [warp_crop(it.image, r, 0.0, CONTEXT, cv2.BORDER_REPLICATE) for (it, _), r in zip(chunk, ctx_rois)]
            start, gap = teacher_fit(teacher, morph, np.stack([centre_crop(c) for c in ctx]))
            for (it, lm), c, r, p0, gp in zip(chunk, ctx, ctx_rois, start, gap):
                m = crop_matrix(r, 0.0, CONTEXT)
                lm_ctx = (lm.astype(np.float64) @ m[:, :2].T + m[:, 2]).astype(np.float32)
                target = lm_ctx - OFFSET
                res = fitter.fit(p0, target)
                stats["target"].append(target)
                stats["fit"].append(res.landmarks)
                stats["fit3d"].append(fitter.landmarks(res.params, fitter.landmark_vertices))
                stats["teacher"].append(fitter.landmarks(p0, fitter.landmark_vertices))
                stats["yaw"].append(res.yaw)
                writer.add(it, c, r, res.params, float(gp), HUMAN_LABEL, lm_ctx, nme_percent(res.landmarks, target))
    if skipped:
        print(f"skipped {len(skipped)} labels: {skipped[0]}" + (" ..." if len(skipped) > 1 else ""), file=sys.stderr)
    n = writer.finish(teacher_name)
    report = fit_report({k: np.array(v) for k, v in stats.items()}, time.monotonic() - t0, str(pts))
    (writer.out / "fit_report.md").write_text(report)
    return n, report


def nme_percent(pred: np.ndarray, gt: np.ndarray) -> float:
    """NME (%) of one face's 68 points: mean distance over sqrt(w h) of the ground-truth box (``model.metrics``)."""
    from model.metrics import nme

    return float(nme(pred, gt))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.data.cache", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="fit the photos with the teacher and write the cache")
    b.add_argument("--photos", default=None, help="folder of face photos (searched recursively)")
    b.add_argument("--videos", nargs="+", default=None, help="video files: faces detected every --every frames")
    b.add_argument("--every", type=int, default=15, help="video frame step")
    b.add_argument("--out", required=True, help="cache folder (outside the repository)")
    b.add_argument("--limit", type=int, default=None, help="only the first N photos")
    b.add_argument("--device", default="cpu")
    b.add_argument("--no-progress", action="store_true")
    h = sub.add_parser("build-human", help="fit images with 68-point human .pts landmarks: exact 'human-fit' rows")
    h.add_argument("--pts", required=True, help="folder of images with .pts beside them (searched recursively)")
    h.add_argument("--out", required=True, help="cache folder (outside the repository)")
    h.add_argument("--limit", type=int, default=None, help="only the first N labelled images")
    h.add_argument("--device", default="cpu")
    h.add_argument("--prior", type=float, default=None, help="shape and expression prior weight (FitConfig)")
    h.add_argument("--jaw-weight", type=float, default=None, help="weight of the contour points 0-16")
    h.add_argument("--no-march", action="store_true", help="fixed 3D jaw points instead of landmark marching")
    h.add_argument("--no-progress", action="store_true")
    i = sub.add_parser("info", help="entries, size and sources of a cache")
    i.add_argument("folder")
    a = p.parse_args(argv)
    try:
        if a.cmd == "build":
            n = build(a.photos, a.out, a.limit, device=a.device, progress=not a.no_progress, videos=a.videos,
                      every=a.every)
            print(f"{n} photos cached in {a.out}")
        elif a.cmd == "build-human":
            from model.fit_landmarks import FitConfig

            cfg = FitConfig(march=not a.no_march)
            if a.prior is not None:
                cfg.prior_shape = cfg.prior_exp = a.prior
            if a.jaw_weight is not None:
                cfg.jaw_weight = a.jaw_weight
            n, report = build_human(a.pts, a.out, a.limit, device=a.device, progress=not a.no_progress, fit=cfg)
            print(report)
            print(f"{n} human-fit faces cached in {a.out}")
        else:
            c = PhotoCache.load(a.folder)
            src, cnt = np.unique(c.source, return_counts=True)
            print(f"{len(c)} photos, {c.data.size / 2**20:.1f} MiB, teacher {c.teacher}; grey {int(c.grey.sum())}; "
                  f"human-fit {int(c.human.sum())}")
            for s, k in zip(src, cnt):
                print(f"  {s or '(top)'}: {k}")
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
