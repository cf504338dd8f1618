"""A compact, teacher-fitted cache of face photos: one binary file of encoded context crops and one index.

    python -m model.data.cache build --photos ../shared/assets/faces --out ~/.cache/damdnet/photocache [--limit N]
        [--videos a.mp4 b.mp4 --every 15]
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
        return cls(data, offsets, z["params"].astype(np.float32), z["grey"].astype(bool), z["flip_gap"], z["inside"], z["source"],
                   z["name"], str(z["teacher"]))

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
            cap = cv2.VideoCapture(str(v))
            k = 0
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                if k % every == 0:
                    boxes, _ = det(frame)
                    for j, b in enumerate(boxes):
                        if b[3] - b[1] >= min_face:
                            yield Item(frame, np.asarray(b[:4], np.float32), f"{Path(v).name}#{k}.{j}",
                                       f"video:{Path(v).stem}")
                k += 1
            cap.release()

    return total, gen()


def build(photos: str | os.PathLike | None, out: str | os.PathLike, limit: int | None = None, batch: int = 64,
          teacher_name: str = "3ddfa-v2-mb05", device: str = "cpu", progress: bool = True,
          videos: list | None = None, every: int = 15) -> int:
    """Fit every photo under ``photos`` (and faces in every ``every``-th frame of ``videos``) with the teacher and
    write the cache to ``out``; returns the entry count.

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
    if not sources:
        raise ValueError("nothing to cache: give photos and/or videos")
    total = sum(n for n, _ in sources)
    items = itertools.chain.from_iterable(it for _, it in sources)
    teacher = Teacher(teacher_name, device, flip=True)
    morph = MorphableModel.load()
    out = Path(os.path.expanduser(str(out)))
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".images.bin.part"
    offsets, params, grey, source, name, inside, flip_gap = [0], [], [], [], [], [], []
    with open(tmp, "wb") as f, tqdm(total=total, disable=not progress, desc="cache", unit="face") as bar:
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
            centre = np.stack([c[OFFSET:OFFSET + CROP_SIZE, OFFSET:OFFSET + CROP_SIZE] for c in ctx])
            with torch.no_grad():
                direct, mirrored = teacher.real_params_pair(centre)
                fit = (0.5 * (direct + mirrored)).cpu().numpy()
                a, b = morph.landmarks_crop(direct.cpu()).numpy(), morph.landmarks_crop(mirrored.cpu()).numpy()
            gap = np.linalg.norm((a - b)[..., :2], axis=-1).mean(1) / np.sqrt(
                np.ptp(a[..., 0], axis=1) * np.ptp(a[..., 1], axis=1)).clip(1.0)
            for it, c, r, prm, gp in zip(chunk, ctx, ctx_rois, fit, gap):
                g = is_grey(it.image)
                # beyond the image the context repeats its edge (cheap to encode); ``inside`` keeps the image's
                # rectangle in context pixels so training can put clutter there instead
                m = crop_matrix(r, 0.0, CONTEXT)
                h, w = it.image.shape[:2]
                inside.append([m[0, 0] * -0.5 + m[0, 2], m[1, 1] * -0.5 + m[1, 2],
                               m[0, 0] * (w - 0.5) + m[0, 2], m[1, 1] * (h - 0.5) + m[1, 2]])
                enc = cv2.imencode(".webp", c[..., 0] if g else c, [cv2.IMWRITE_WEBP_QUALITY, WEBP_QUALITY])[1]
                f.write(enc.tobytes())
                offsets.append(offsets[-1] + enc.size)
                params.append(prm)
                flip_gap.append(gp)
                grey.append(g)
                source.append(it.source)
                name.append(it.name)
    if not params:
        tmp.unlink(missing_ok=True)
        raise ValueError("no faces found to cache")
    os.replace(tmp, out / "images.bin")
    tmp_idx = out / ".index.part.npz"
    np.savez_compressed(tmp_idx, offsets=np.array(offsets, np.int64), params=np.array(params, np.float32),
                        flip_gap=np.array(flip_gap, np.float32), grey=np.array(grey, bool),
                        inside=np.array(inside, np.float32), source=np.array(source), name=np.array(name),
                        teacher=np.array(teacher_name), context=np.array(CONTEXT), offset=np.array(OFFSET))
    os.replace(tmp_idx, out / "index.npz")
    return len(params)


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
    i = sub.add_parser("info", help="entries, size and sources of a cache")
    i.add_argument("folder")
    a = p.parse_args(argv)
    try:
        if a.cmd == "build":
            n = build(a.photos, a.out, a.limit, device=a.device, progress=not a.no_progress, videos=a.videos,
                      every=a.every)
            print(f"{n} photos cached in {a.out}")
        else:
            c = PhotoCache.load(a.folder)
            src, cnt = np.unique(c.source, return_counts=True)
            print(f"{len(c)} photos, {c.data.size / 2**20:.1f} MiB, teacher {c.teacher}; grey {int(c.grey.sum())}")
            for s, k in zip(src, cnt):
                print(f"  {s or '(top)'}: {k}")
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
