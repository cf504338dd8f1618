"""Unlabelled face photos (``../shared/assets/faces``) -> augmented 120x120 crops for teacher labelling.

Every image is a face crop (see the folder's MANIFEST). Its face box is the whole image (or a box given by the caller,
e.g. from a detector); the crop ROI follows inference's rule (``roi_from_box``). Once the teacher has seen an image,
``set_roi`` replaces that ROI with ``roi_from_landmarks`` of the teacher's landmarks (the evaluation and tracking
rule), so later crops are framed like the crops the student sees at test time.

Augmentation (all optional, per sample, from a numpy ``Generator``): crop jitter (shift), scale, in-plane rotation,
horizontal flip, colour (brightness, contrast, per-channel gain), greyscale, blur, noise, occlusion patches. The
teacher labels the final crop, so no label needs transforming.

Never list evaluation-only photos: ``EXCLUDE`` drops the mmpose test samples (labelled 300W/AFLW/... images).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from model.roi import CROP_SIZE, roi_from_box

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
EXCLUDE = ("mmpose_testdata_faces", "AFLW2000", "aflw2000")


def list_images(root: str | Path, exclude: tuple[str, ...] = EXCLUDE) -> list[Path]:
    """All images under ``root`` (recursive, sorted), skipping paths with any part in ``exclude``."""
    root = Path(root)
    out = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file()
           and not any(part in exclude for part in p.relative_to(root).parts)]
    return sorted(out)


@dataclass
class Augment:
    """Augmentation strengths (probabilities and ranges); ``Augment.off()`` disables everything."""

    shift: float = 0.06  # max centre shift, fraction of the ROI side
    scale: tuple[float, float] = (0.88, 1.15)  # ROI side multiplier
    rotate: float = 20.0  # max in-plane rotation, degrees
    flip: float = 0.5
    colour: float = 0.8
    grey: float = 0.1
    blur: float = 0.15
    noise: float = 0.15
    occlude: float = 0.2

    @classmethod
    def off(cls) -> "Augment":
        return cls(0.0, (1.0, 1.0), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def crop_matrix(roi: np.ndarray, angle_deg: float = 0.0, size: int = CROP_SIZE) -> np.ndarray:
    """The (2, 3) float64 affine map image px -> crop px of :func:`warp_crop` (a similarity: scale x rotation)."""
    x1, y1, x2, y2 = (float(v) for v in roi)
    side = max(x2 - x1, 1.0)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    s = size / side
    a = np.radians(angle_deg)
    c, si = np.cos(a) * s, np.sin(a) * s
    # maps image -> crop: rotate about the ROI centre, scale, move the centre to the crop centre; pixel centres at
    # +0.5 like cv2.resize, so without rotation this equals ``model.roi.crop_roi`` (the inference crop)
    cx, cy, h = cx - 0.5, cy - 0.5, size / 2 - 0.5
    return np.array([[c, si, h - c * cx - si * cy], [-si, c, h + si * cx - c * cy]], np.float64)


def warp_crop(image: np.ndarray, roi: np.ndarray, angle_deg: float = 0.0, size: int = CROP_SIZE,
              border: int = cv2.BORDER_CONSTANT) -> np.ndarray:
    """Crop a square ROI (4,) rotated by ``angle_deg`` about its centre to (size, size, 3) uint8 (zero padding)."""
    m = crop_matrix(roi, angle_deg, size)
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=border)


def random_background(rng: np.random.Generator, size: int = CROP_SIZE) -> np.ndarray:
    """(size, size, 3) float32 clutter: a colour gradient, blurred noise and a few shapes.

    Face photos in the training set are tight crops, so their crop ROIs reach past the image; filled with black the
    student learns "a face inside a black frame", which no test or camera image looks like.
    """
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    c0, c1, c2 = (rng.uniform(0, 255, 3).astype(np.float32) for _ in range(3))
    img = c0 + np.multiply.outer(x, c1 - c0) + np.multiply.outer(y, c2 - c0) * 0.5
    noise = cv2.GaussianBlur(rng.normal(0, 1, (size, size, 3)).astype(np.float32), (0, 0), rng.uniform(1, 6))
    img += noise * rng.uniform(5, 40)
    for _ in range(int(rng.integers(0, 5))):
        colour = tuple(float(v) for v in rng.uniform(0, 255, 3))
        p1 = tuple(int(v) for v in rng.integers(0, size, 2))
        p2 = tuple(int(v) for v in rng.integers(0, size, 2))
        if rng.random() < 0.5:
            cv2.rectangle(img, p1, p2, colour, -1)
        else:
            cv2.line(img, p1, p2, colour, int(rng.integers(1, 8)))
    return np.clip(img, 0, 255)


def jitter_roi(roi: np.ndarray, aug: Augment, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """A randomly scaled, shifted square ROI (4,) around ``roi`` and an in-plane angle (degrees)."""
    x1, y1, x2, y2 = (float(v) for v in roi)
    side = (x2 - x1) * rng.uniform(*aug.scale)
    cx = (x1 + x2) / 2 + rng.uniform(-1, 1) * aug.shift * (x2 - x1)
    cy = (y1 + y2) / 2 + rng.uniform(-1, 1) * aug.shift * (y2 - y1)
    out = np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], np.float32)
    return out, float(rng.uniform(-1, 1) * aug.rotate)


_BACKGROUNDS: list[np.ndarray] = []


def pooled_background(rng: np.random.Generator, pool: int = 96) -> np.ndarray:
    """A clutter background from a fixed pool (built once per process from seed 0), randomly flipped and rolled:
    ``random_background`` costs about 1 ms, this a few microseconds."""
    if not _BACKGROUNDS:
        g = np.random.default_rng(0)
        _BACKGROUNDS.extend(random_background(g) for _ in range(pool))
    b = _BACKGROUNDS[int(rng.integers(len(_BACKGROUNDS)))]
    k = int(rng.integers(8))
    if k & 1:
        b = b[:, ::-1]
    if k & 2:
        b = b[::-1]
    if k & 4:
        b = b.transpose(1, 0, 2)
    return b


def crop_with_clutter(image: np.ndarray, inside: np.ndarray | None, roi: np.ndarray, angle: float,
                      rng: np.random.Generator, pooled: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The rotated ROI crop (CROP_SIZE, CROP_SIZE, 3) uint8 with clutter wherever it leaves the photo, and its map.

    ``inside`` (H, W) bool marks the photo's real pixels (None: the whole image). Returns (crop, image -> crop
    affine (2, 3)). ``pooled``: take the clutter from :func:`pooled_background` (fast) rather than a new one.
    """
    m = crop_matrix(roi, angle)
    crop = cv2.warpAffine(image, m, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    mask = np.full(image.shape[:2], 255, np.uint8) if inside is None else inside.astype(np.uint8) * 255
    ins = cv2.warpAffine(mask, m, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    if ins.min() < 255:  # the crop reaches past the photo: put a background there, never plain black
        alpha = (ins.astype(np.float32) / 255.0)[..., None]
        bg = pooled_background(rng) if pooled else random_background(rng)
        crop = (crop * alpha + bg * (1 - alpha)).astype(np.uint8)
    return crop, m


def photometric(crop: np.ndarray, aug: Augment, rng: np.random.Generator) -> np.ndarray:
    """Colour, greyscale, blur, noise and occlusion on a uint8 crop (returns a new array)."""
    x = crop.astype(np.float32)
    if rng.random() < aug.colour:
        gain = rng.uniform(0.85, 1.15, 3).astype(np.float32)
        contrast = rng.uniform(0.7, 1.3)
        bright = rng.uniform(-30, 30)
        m = x.mean()
        x = (x - m) * contrast + m + bright
        x = x * gain
    if rng.random() < aug.grey:
        g = x @ np.array([0.114, 0.587, 0.299], np.float32)
        x = np.repeat(g[..., None], 3, axis=2)
    if rng.random() < aug.blur:
        k = int(rng.choice([3, 5]))
        x = cv2.GaussianBlur(x, (k, k), 0)
    if rng.random() < aug.noise:
        x = x + rng.normal(0, rng.uniform(2, 10), x.shape).astype(np.float32)
    if rng.random() < aug.occlude:
        h, w = x.shape[:2]
        ph, pw = int(rng.uniform(0.15, 0.4) * h), int(rng.uniform(0.15, 0.4) * w)
        py, px = int(rng.integers(0, h - ph)), int(rng.integers(0, w - pw))
        x[py:py + ph, px:px + pw] = rng.uniform(0, 255, 3) if rng.random() < 0.5 else rng.uniform(0, 255, (ph, pw, 3))
    return np.clip(x, 0, 255).astype(np.uint8)


@dataclass
class PhotoDataset:
    """Augmented crops of face photos: ``sample(i, rng) -> (crop (120, 120, 3) uint8, weight)``.

    ``weights``: per-source weight by the image's top folder name under ``root`` (default 1.0). ``boxes``: optional
    face boxes (x1, y1, x2, y2) per image path (e.g. from a detector); otherwise the whole image is the face box.
    """

    paths: list[Path]
    root: Path | None = None
    augment: Augment = field(default_factory=Augment)
    weights: dict[str, float] = field(default_factory=dict)
    boxes: dict[str, np.ndarray] = field(default_factory=dict)
    rois: dict[int, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_folder(cls, root: str | Path, limit: int | None = None, **kw) -> "PhotoDataset":
        paths = list_images(root)
        if limit:
            paths = paths[:limit]
        if not paths:
            raise FileNotFoundError(f"no images under {root}")
        return cls(paths, Path(root), **kw)

    def __len__(self) -> int:
        return len(self.paths)

    def source(self, i: int) -> str:
        p = self.paths[i]
        if self.root is None:
            return p.parent.name
        rel = p.relative_to(self.root).parts
        return rel[0] if len(rel) > 1 else ""

    def weight(self, i: int) -> float:
        return float(self.weights.get(self.source(i), 1.0))

    def image(self, i: int) -> np.ndarray:
        img = cv2.imread(str(self.paths[i]), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"cannot read image {self.paths[i]}")
        return img

    def base_roi(self, i: int, image: np.ndarray) -> np.ndarray:
        """The un-augmented crop ROI (4,): the teacher-refined one once known, else ``roi_from_box`` of the box."""
        if i in self.rois:
            return self.rois[i]
        box = self.boxes.get(str(self.paths[i]))
        if box is None:
            h, w = image.shape[:2]
            box = np.array([0, 0, w, h], np.float32)
        return roi_from_box(np.asarray(box, np.float32)[None])[0]

    def set_roi(self, i: int, roi: np.ndarray) -> None:
        self.rois[i] = np.asarray(roi, np.float32).reshape(4)

    def has_roi(self, i: int) -> bool:
        return i in self.rois

    def plain_crop(self, i: int) -> np.ndarray:
        """The un-augmented crop of image ``i`` (what the teacher uses to refine the ROI)."""
        img = self.image(i)
        return warp_crop(img, self.base_roi(i, img))

    def sample(self, i: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        img = self.image(i)
        roi, angle = jitter_roi(self.base_roi(i, img), self.augment, rng)
        crop, _ = crop_with_clutter(img, None, roi, angle, rng)
        if rng.random() < self.augment.flip:
            crop = np.ascontiguousarray(crop[:, ::-1])
        return photometric(crop, self.augment, rng), self.weight(i)
