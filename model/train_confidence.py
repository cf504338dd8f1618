"""Train the face/no-face classifier of ``model.confidence`` on this machine (minutes on 2 CPU cores).

    python -m model.train_confidence cache [--out ~/.cache/damdnet/confcache]   # teacher-fit a photo subset (~2 min)
    python -m model.train_confidence train [--cache DIR] [--out model/weights/face_confidence.pth]

Data (all generated here from training images; evaluation-only photos never enter, ``photos.EXCLUDE``):

- **faces** (label 1), from a photo cache (``model.data.cache``) of a seeded subset of ``faces/`` (UTKFace, LFW grey,
  face-mask, deepface) and all of ``faces300w/`` (box from the human 68 points): plain crops jittered like a
  tracker's crop (shift up to 0.15 of the crop side, scale 0.8-1.3, roll +-25 degrees), **profiled** crops
  (``model.data.profile``, yaw up to +-90 degrees), occlusions, colour/grey/blur/noise, and faces cut by the frame
  border (a black band of up to 0.3 of the crop side, the aligner's zero padding);
- **non-faces** (label 0): the same photos' crops shifted off the face by 0.55-1.1 face sizes (half faces), zoomed
  into a face part (0.25-0.45x) or out of it (2.6-4x: a tiny face), crowds of tiny faces, background regions of the
  ``faces300w/`` photos, of ``davisking/dlib`` group photos and of frames of the talking-head videos d11/d14 (d18
  held out; no face within the crop), procedural textures (gradients and shapes, foliage, stripes, checkers,
  noise), skin-coloured hand-like blobs, drawn face-like patterns (posters, smileys) and crops mostly off the frame.

Photos are split by name (one in ten held out); the held-out photos, d18 and fresh seeds give the held-out crops on
which accuracy is reported per kind of crop.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from model.confidence import INPUT, POOL, WEIGHTS, FaceNet, save_scorer
from model.data.cache import CONTEXT, Item, PhotoCache, every_nth_frame
from model.data.photos import (Augment, crop_with_clutter, jitter_roi, list_images, photometric,
                               random_background)
from model.roi import CROP_SIZE, box_from_landmarks, crop_roi

DEFAULT_CACHE = "~/.cache/damdnet/confcache"
TRAIN_VIDEOS = ("d11", "d14")
HELDOUT_VIDEOS = ("d18",)
POS_AUG = Augment(shift=0.15, scale=(0.8, 1.3), rotate=25.0, flip=0.5, colour=0.8, grey=0.15, blur=0.25,
                  noise=0.2, occlude=0.3)
NEG_AUG = Augment(shift=0.0, scale=(1.0, 1.0), rotate=25.0, flip=0.5, colour=0.8, grey=0.15, blur=0.25, noise=0.2,
                  occlude=0.1)


def held_out(name: str) -> bool:
    """One photo in ten (by a hash of its name) is held out of training."""
    return int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) % 10 == 0


def read_pts(path: Path) -> np.ndarray:
    """A 300-W ``.pts`` file -> (68, 2) float32."""
    lines = path.read_text().splitlines()
    a = lines.index("{") + 1
    return np.array([[float(v) for v in ln.split()] for ln in lines[a:a + 68]], np.float32)


def subset_items(assets: Path, per_source: int = 300, n300w: int = 700, seed: int = 0) -> tuple[int, object]:
    """A seeded subset of ``faces/`` (``per_source`` per folder) and ``n300w`` ``faces300w/`` faces with their
    boxes from the human 68 points."""
    rng = np.random.default_rng(seed)
    faces = assets / "faces"
    chosen: list[Path] = []
    for sub in sorted(p for p in faces.iterdir() if p.is_dir()):
        paths = list_images(sub)
        if not paths or any(part in ("mmpose_testdata_faces",) for part in sub.parts):
            continue
        idx = rng.permutation(len(paths))[:per_source]
        chosen += [paths[i] for i in sorted(idx)]
    pts = sorted((assets / "faces300w").rglob("*.pts"))
    pts = [pts[i] for i in sorted(rng.permutation(len(pts))[:n300w])]

    def gen():
        for p in chosen:
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is not None and min(img.shape[:2]) >= 24:
                yield Item(img, None, str(p.relative_to(faces)), p.relative_to(faces).parts[0])
        for p in pts:
            img = cv2.imread(str(p.with_suffix(".jpg")), cv2.IMREAD_COLOR)
            if img is None:
                continue
            box = box_from_landmarks(read_pts(p)[None])[0]
            yield Item(img, box, str(p.relative_to(assets)), "faces300w")

    return len(chosen) + len(pts), gen()


# -- non-face crops ---------------------------------------------------------------------------------------------------
def _blank(rng: np.random.Generator) -> np.ndarray:
    return random_background(rng).astype(np.float32)


def foliage(rng: np.random.Generator, size: int = CROP_SIZE) -> np.ndarray:
    """Leaves: many rotated ellipses in greens/yellows/browns with veins and light spots, over a dark base."""
    base = rng.uniform(10, 90, 3)
    img = np.empty((size, size, 3), np.float32)
    img[:] = base
    for _ in range(int(rng.integers(15, 60))):
        c = (int(rng.integers(-10, size + 10)), int(rng.integers(-10, size + 10)))
        ax = (int(rng.integers(6, 40)), int(rng.integers(3, 14)))
        hue = rng.uniform(0, 1)
        col = np.array([rng.uniform(10, 90), rng.uniform(60, 220), rng.uniform(20, 200) * hue], np.float32)
        cv2.ellipse(img, c, ax, float(rng.uniform(0, 180)), 0, 360, tuple(float(v) for v in col), -1)
        if rng.random() < 0.4:
            cv2.ellipse(img, c, (ax[0], 1), float(rng.uniform(0, 180)), 0, 360,
                        tuple(float(v) for v in col * 0.6), 1)
    for _ in range(int(rng.integers(0, 8))):
        c = (int(rng.integers(0, size)), int(rng.integers(0, size)))
        cv2.circle(img, c, int(rng.integers(2, 12)), tuple(float(v) for v in rng.uniform(150, 255, 3)), -1)
    return cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 2.0))


def pattern(rng: np.random.Generator, size: int = CROP_SIZE) -> np.ndarray:
    """Stripes, checkers, noise or a gradient, in random colours."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    a, b = rng.uniform(0, 255, 3).astype(np.float32), rng.uniform(0, 255, 3).astype(np.float32)
    k = int(rng.integers(4))
    if k == 0:
        ang = rng.uniform(0, np.pi)
        t = (np.sin((x * np.cos(ang) + y * np.sin(ang)) * rng.uniform(0.05, 0.6)) > 0).astype(np.float32)
    elif k == 1:
        s = rng.uniform(4, 30)
        t = ((np.floor(x / s) + np.floor(y / s)) % 2).astype(np.float32)
    elif k == 2:
        t = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), rng.uniform(0.5, 8))
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    else:
        t = np.clip((x * rng.uniform(-1, 1) + y * rng.uniform(-1, 1)) / size + 0.5, 0, 1)
    return a + t[..., None] * (b - a)


def skin_colour(rng: np.random.Generator) -> np.ndarray:
    """A BGR skin tone."""
    v = rng.uniform(0.35, 1.0)
    return np.array([rng.uniform(90, 170), rng.uniform(120, 200), rng.uniform(170, 250)], np.float32) * v


def hand(rng: np.random.Generator, size: int = CROP_SIZE) -> np.ndarray:
    """A skin-coloured palm with four or five finger capsules, shaded, over a background."""
    img = _blank(rng)
    col = skin_colour(rng)
    c = np.array([rng.uniform(0.3, 0.7) * size, rng.uniform(0.45, 0.8) * size])
    r = rng.uniform(0.18, 0.3) * size
    mask = np.zeros((size, size), np.float32)
    cv2.circle(mask, tuple(int(v) for v in c), int(r), 1.0, -1)
    ang0 = rng.uniform(-0.5, 0.5)
    for j in range(int(rng.integers(4, 6))):
        ang = ang0 - np.pi / 2 + (j - 2) * 0.35
        tip = c + np.array([np.cos(ang), np.sin(ang)]) * r * rng.uniform(1.6, 2.3)
        cv2.line(mask, tuple(int(v) for v in c), tuple(int(v) for v in tip), 1.0, int(r * 0.35))
    shade = cv2.GaussianBlur(rng.normal(1, 0.15, (size, size)).astype(np.float32), (0, 0), 6)
    mask = cv2.GaussianBlur(mask, (0, 0), 1.0)[..., None]
    return img * (1 - mask) + col * shade[..., None] * mask


def face_drawing(rng: np.random.Generator, size: int = CROP_SIZE) -> np.ndarray:
    """A drawn face-like pattern (poster, smiley, mask-like oval with two eyes and a mouth): not a face."""
    img = _blank(rng)
    cx, cy = size / 2 + rng.uniform(-10, 10), size / 2 + rng.uniform(-10, 10)
    rx, ry = rng.uniform(25, 45), rng.uniform(30, 50)
    col = skin_colour(rng) if rng.random() < 0.5 else rng.uniform(0, 255, 3)
    cv2.ellipse(img, (int(cx), int(cy)), (int(rx), int(ry)), 0, 0, 360, tuple(float(v) for v in col), -1)
    dark = tuple(float(v) for v in rng.uniform(0, 80, 3))
    for s in (-1, 1):
        cv2.circle(img, (int(cx + s * rx * 0.4), int(cy - ry * 0.25)), int(rng.uniform(3, 9)), dark, -1)
    if rng.random() < 0.7:
        cv2.ellipse(img, (int(cx), int(cy + ry * 0.4)), (int(rx * 0.4), int(ry * 0.15)), 0, 0, 180, dark,
                    int(rng.integers(1, 5)))
    return img


class Negatives:
    """Non-face crop generators over a photo cache (for face parts) and real background images."""

    def __init__(self, cache: PhotoCache, photo_ids: np.ndarray, backgrounds: list[tuple[np.ndarray, np.ndarray]]):
        self.cache = cache
        self.ids = photo_ids
        self.backgrounds = backgrounds  # (image, face boxes (K, 4)) pairs
        self.base = np.array([(CONTEXT - CROP_SIZE) / 2, (CONTEXT - CROP_SIZE) / 2,
                              (CONTEXT + CROP_SIZE) / 2, (CONTEXT + CROP_SIZE) / 2], np.float32)
        yy, xx = np.mgrid[0:CONTEXT, 0:CONTEXT]
        self._xx, self._yy = xx, yy

    def _photo(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        i = int(self.ids[rng.integers(len(self.ids))])
        x1, y1, x2, y2 = self.cache.inside[i]
        inside = (self._xx >= x1) & (self._xx <= x2) & (self._yy >= y1) & (self._yy <= y2)
        return self.cache.image(i), inside

    def off_face(self, rng: np.random.Generator) -> np.ndarray:
        """The face's crop moved by 0.55-1.1 face sizes (face = crop side / sqrt 2): a half face at most."""
        img, inside = self._photo(rng)
        side = CROP_SIZE * rng.uniform(0.85, 1.2)
        d = CROP_SIZE / np.sqrt(2) * rng.uniform(0.55, 1.1)
        a = rng.uniform(0, 2 * np.pi)
        c = CONTEXT / 2 + d * np.array([np.cos(a), np.sin(a)])
        roi = np.array([c[0] - side / 2, c[1] - side / 2, c[0] + side / 2, c[1] + side / 2], np.float32)
        return crop_with_clutter(img, inside, roi, rng.uniform(-20, 20), rng, pooled=True)[0].astype(np.float32)

    def zoom(self, rng: np.random.Generator) -> np.ndarray:
        """Into a face part (0.25-0.45x the crop side) or out to a tiny face (2.6-4x)."""
        img, inside = self._photo(rng)
        if rng.random() < 0.5:
            s = CROP_SIZE * rng.uniform(0.25, 0.45)
            c = CONTEXT / 2 + rng.uniform(-30, 30, 2)
        else:
            s = CROP_SIZE * rng.uniform(2.6, 4.0)
            c = CONTEXT / 2 + rng.uniform(-0.3, 0.3, 2) * s
        roi = np.array([c[0] - s / 2, c[1] - s / 2, c[0] + s / 2, c[1] + s / 2], np.float32)
        return crop_with_clutter(img, inside, roi, rng.uniform(-20, 20), rng, pooled=True)[0].astype(np.float32)

    def crowd(self, rng: np.random.Generator) -> np.ndarray:
        """A grid of 3x3 to 6x6 tiny faces over a background."""
        img = _blank(rng)
        n = int(rng.integers(3, 7))
        cell = CROP_SIZE / n
        for r in range(n):
            for c in range(n):
                if rng.random() < 0.15:
                    continue
                face = self._photo(rng)[0][12:132, 12:132]
                s = max(int(cell * rng.uniform(0.6, 1.0)), 4)
                small = cv2.resize(face, (s, s), interpolation=cv2.INTER_AREA).astype(np.float32)
                y0 = int(min(r * cell + rng.uniform(0, cell - s + 1), CROP_SIZE - s))
                x0 = int(min(c * cell + rng.uniform(0, cell - s + 1), CROP_SIZE - s))
                img[y0:y0 + s, x0:x0 + s] = small
        return img

    def background(self, rng: np.random.Generator) -> np.ndarray:
        """A region of a real photo or frame holding no face (overlap with any face box under 15% of its area)."""
        img, boxes = self.backgrounds[int(rng.integers(len(self.backgrounds)))]
        h, w = img.shape[:2]
        for _ in range(30):
            s = rng.uniform(0.12, 0.7) * min(h, w)
            x, y = rng.uniform(-0.1 * s, w - 0.9 * s), rng.uniform(-0.1 * s, h - 0.9 * s)
            roi = np.array([x, y, x + s, y + s], np.float32)
            if len(boxes):
                ix = np.clip(np.minimum(roi[2], boxes[:, 2]) - np.maximum(roi[0], boxes[:, 0]), 0, None)
                iy = np.clip(np.minimum(roi[3], boxes[:, 3]) - np.maximum(roi[1], boxes[:, 1]), 0, None)
                area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
                if np.any(ix * iy > 0.15 * area):
                    continue
            return crop_roi(img, roi).astype(np.float32)
        return _blank(rng)

    def off_frame(self, rng: np.random.Generator) -> np.ndarray:
        """A crop mostly beyond the frame: 60-95% black from one side, clutter or a face edge on the rest."""
        src = self.background(rng) if rng.random() < 0.5 else self.off_face(rng)
        return black_band(src, rng, 0.6, 0.95)

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        kinds = [("off_face", 0.2), ("zoom", 0.12), ("crowd", 0.08), ("background", 0.22), ("clutter", 0.06),
                 ("foliage", 0.1), ("pattern", 0.07), ("hand", 0.07), ("drawing", 0.04), ("off_frame", 0.04)]
        k = kinds[int(rng.choice(len(kinds), p=[p for _, p in kinds]))][0]
        fn = {"off_face": self.off_face, "zoom": self.zoom, "crowd": self.crowd, "background": self.background,
              "clutter": _blank, "foliage": foliage, "pattern": pattern, "hand": hand, "drawing": face_drawing,
              "off_frame": self.off_frame}[k]
        x = np.clip(fn(rng), 0, 255).astype(np.uint8)
        if rng.random() < 0.5:
            x = np.ascontiguousarray(x[:, ::-1])
        return photometric(x, NEG_AUG, rng), k


def black_band(crop: np.ndarray, rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    """Zero a band of ``lo``-``hi`` of the crop side from a random side (the aligner's padding beyond the frame)."""
    out = np.array(crop, copy=True)
    n = int(round(rng.uniform(lo, hi) * CROP_SIZE))
    side = int(rng.integers(4))
    if side == 0:
        out[:, :n] = 0
    elif side == 1:
        out[:, CROP_SIZE - n:] = 0
    elif side == 2:
        out[:n] = 0
    else:
        out[CROP_SIZE - n:] = 0
    return out


def positive(sampler, ids: np.ndarray, rng: np.random.Generator, profiled: bool) -> np.ndarray:
    """A face crop (plain or profiled) jittered like a tracker crop; a quarter cut by the frame border."""
    i = int(ids[rng.integers(len(ids))])
    if profiled and len(sampler.profilable):
        pool = np.intersect1d(sampler.profilable, ids)
        i = int(pool[rng.integers(len(pool))])
    crop = sampler.sample(i, rng, profiled=profiled)[0]
    if rng.random() < 0.25:
        crop = black_band(crop, rng, 0.05, 0.3)
    return crop


def load_backgrounds(assets: Path, videos: tuple[str, ...], photos: bool, train: bool, every: int = 25
                     ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, face boxes) pairs: ``faces300w`` photos (boxes from the 68 points; split by ``held_out``), the dlib
    group photos (train only; YuNet boxes padded 30%) and every ``every``-th frame of the named talking-head
    videos (YuNet boxes padded 30%)."""
    from model.detect import FaceDetector

    out: list[tuple[np.ndarray, np.ndarray]] = []
    det = FaceDetector.create("auto")

    def padded(boxes: np.ndarray) -> np.ndarray:
        b = np.asarray(boxes, np.float32).reshape(-1, 4)
        wh = (b[:, 2:] - b[:, :2]) * 0.3
        return np.concatenate([b[:, :2] - wh, b[:, 2:] + wh], 1)

    if photos:
        for p in sorted((assets / "faces300w").rglob("*.pts")):
            if held_out(str(p.relative_to(assets))) == train:
                continue
            img = cv2.imread(str(p.with_suffix(".jpg")))
            if img is not None:
                out.append((img, padded(box_from_landmarks(read_pts(p)[None]))))
        if train:
            for p in sorted((assets / "davisking/dlib/examples/faces").glob("*.jpg")):
                img = cv2.imread(str(p))
                out.append((img, padded(det(img)[0])))
    for v in videos:
        for _, frame in every_nth_frame(assets / f"KwaiVGI/LivePortrait/assets/examples/driving/{v}.mp4", every):
            out.append((frame, padded(det(frame)[0])))
    return out


def make_set(sampler, cache: PhotoCache, ids: np.ndarray, backgrounds, n: int, seed: int,
             profiled_share: float = 0.4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n crops (half faces, half not), pooled to (n, 60, 60, 3) uint8, labels (n,) and kinds (n,) str."""
    rng = np.random.default_rng(seed)
    neg = Negatives(cache, ids, backgrounds)
    x = np.empty((n, INPUT, INPUT, 3), np.uint8)
    y = np.zeros(n, np.float32)
    kinds = []
    for k in range(n):
        if k % 2 == 0:
            prof = rng.random() < profiled_share
            crop, kind = positive(sampler, ids, rng, prof), "face_profiled" if prof else "face"
            y[k] = 1
        else:
            crop, kind = neg.sample(rng)
        x[k] = pool_crop(crop)
        kinds.append(kind)
    return x, y, np.array(kinds)


def pool_crop(crop: np.ndarray) -> np.ndarray:
    """(120, 120, 3) uint8 -> (60, 60, 3) uint8, the 2x2 average ``FaceNet`` pools to."""
    c = crop.astype(np.float32).reshape(INPUT, POOL, INPUT, POOL, 3).mean((1, 3))
    return np.clip(np.round(c), 0, 255).astype(np.uint8)


def to_tensor(x: np.ndarray) -> torch.Tensor:
    return (torch.from_numpy(x).permute(0, 3, 1, 2).float() - 127.5) / 128.0


def pooled_logits(net: FaceNet, x: torch.Tensor) -> torch.Tensor:
    """Logits of already pooled (N, 3, 60, 60) inputs."""
    return net.head(net.features(x).flatten(1))[:, 0]


def evaluate(net: FaceNet, x: np.ndarray, y: np.ndarray, kinds: np.ndarray, threshold: float = 0.5) -> dict:
    """Accuracy per kind of crop (share classified right at ``threshold``) and overall."""
    net.eval()
    with torch.no_grad():
        p = torch.cat([torch.sigmoid(pooled_logits(net, to_tensor(x[i:i + 512]))) for i in range(0, len(x), 512)])
    p = p.numpy()
    right = (p >= threshold) == (y > 0.5)
    out = {"overall": float(right.mean()), "n": int(len(y))}
    for k in np.unique(kinds):
        m = kinds == k
        out[str(k)] = {"accuracy": float(right[m].mean()), "n": int(m.sum()),
                       "median_score": float(np.median(p[m]))}
    return out


def train(cache_dir: str, out: Path, n_train: int = 10000, n_test: int = 2000, epochs: int = 6, seed: int = 0,
          threads: int = 2, data: str | None = None) -> dict:
    """Generate the sets (or load them from ``data``, an npz this function wrote before), train FaceNet, measure
    it on held-out crops, save it. Returns the metrics."""
    from model.assets import resolve_root
    from model.data.sampler import CacheSampler, ProfileConfig
    from model.morphable import MorphableModel

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    assets = resolve_root()
    cache = PhotoCache.load(Path(cache_dir).expanduser())
    morph = MorphableModel.load()
    sampler = CacheSampler(cache, morph, augment=POS_AUG, profile=ProfileConfig(fraction=0.4, max_yaw=90.0))
    hold = np.array([held_out(str(n)) for n in cache.name])
    tr_ids, te_ids = np.flatnonzero(~hold), np.flatnonzero(hold)
    t0 = time.perf_counter()
    if data and Path(data).is_file():
        z = np.load(data)
        xtr, ytr, xte, yte, kte = (z[k] for k in ("xtr", "ytr", "xte", "yte", "kte"))
        n_train, n_test = len(ytr), len(yte)
    else:
        bg_tr = load_backgrounds(assets, TRAIN_VIDEOS, True, True)
        bg_te = load_backgrounds(assets, HELDOUT_VIDEOS, True, False)
        xtr, ytr, _ = make_set(sampler, cache, tr_ids, bg_tr, n_train, seed + 1)
        xte, yte, kte = make_set(sampler, cache, te_ids, bg_te, n_test, seed + 2)
        if data:
            np.savez(data, xtr=xtr, ytr=ytr, xte=xte, yte=yte, kte=kte)
    t_data = time.perf_counter() - t0
    print(f"data: {n_train} train, {n_test} held-out crops in {t_data:.0f} s", file=sys.stderr)
    net = FaceNet()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    batch = 128
    steps = epochs * (n_train // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    t1 = time.perf_counter()
    _fit(net, opt, sched, xtr, ytr, epochs, batch, seed)
    t_train = time.perf_counter() - t1
    metrics = evaluate(net, xte, yte, kte)
    n_params = sum(p.numel() for p in net.parameters())
    meta = {"trained": time.strftime("%Y-%m-%d"), "train_crops": n_train, "heldout_crops": n_test, "epochs": epochs,
            "params": n_params, "data_s": round(t_data), "train_s": round(t_train), "heldout": metrics,
            "cache_photos": int(len(cache)), "seed": seed}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_scorer(out, net, meta)
    return meta


def finetune(weights: Path, data: str, extra: str, out: Path, epochs: int = 2, threads: int = 2,
             seed: int = 0) -> dict:
    """Continue training ``weights`` on the saved crops of ``data`` plus the crops of ``extra`` (an npz with
    ``x`` (N, 60, 60, 3) uint8 pooled crops and ``y`` (N,) labels, e.g. ``python -m stream.confidence_crops``:
    the synthetic source's faces), lr 1e-3 -> 0 linearly."""
    from model.confidence import FaceScorer

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    z = np.load(data)
    e = np.load(extra)
    xs, ys = e["x"], e["y"].astype(np.float32)
    t_data = float(e["seconds"]) if "seconds" in e else 0.0
    xtr, ytr = np.concatenate([z["xtr"], xs]), np.concatenate([z["ytr"], ys])
    sc = FaceScorer.load(weights)
    net = sc.net
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    batch = 128
    steps = epochs * (len(ytr) // batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1.0 - k / max(steps, 1))
    t1 = time.perf_counter()
    _fit(net, opt, sched, xtr, ytr, epochs, batch, seed)
    meta = dict(sc.meta)
    meta.update({"finetune": {"synthetic_crops": int(len(ys)), "epochs": epochs, "data_s": round(t_data),
                              "train_s": round(time.perf_counter() - t1), "train_crops": int(len(ytr))},
                 "heldout": evaluate(net, z["xte"], z["yte"], z["kte"])})
    save_scorer(out, net, meta)
    return meta


def _fit(net: FaceNet, opt, sched, xtr: np.ndarray, ytr: np.ndarray, epochs: int, batch: int, seed: int) -> None:
    """Minibatch BCE training with flips and brightness jitter (``sched`` steps per batch)."""
    loss_fn = nn.BCEWithLogitsLoss()
    xt, yt = to_tensor(xtr), torch.from_numpy(ytr)
    g = torch.Generator().manual_seed(seed)
    n = len(ytr)
    for ep in range(epochs):
        net.train()
        perm = torch.randperm(n, generator=g)
        total = 0.0
        for b in range(n // batch):
            idx = perm[b * batch:(b + 1) * batch]
            xb = xt[idx]
            flip = torch.rand(len(idx), generator=g) < 0.5
            xb[flip] = xb[flip].flip(-1)
            xb = xb * torch.empty(len(idx), 1, 1, 1).uniform_(0.85, 1.15, generator=g)
            loss = loss_fn(pooled_logits(net, xb), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        print(f"epoch {ep + 1}/{epochs} loss {total / (n // batch):.4f}", file=sys.stderr)
    net.eval()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.train_confidence", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cache", help="teacher-fit the training photo subset into a photo cache")
    c.add_argument("--out", default=DEFAULT_CACHE)
    c.add_argument("--per-source", type=int, default=300)
    c.add_argument("--n300w", type=int, default=700)
    t = sub.add_parser("train", help="train and measure the classifier, write the weights")
    t.add_argument("--cache", default=DEFAULT_CACHE)
    t.add_argument("--out", default=str(WEIGHTS))
    t.add_argument("--train", type=int, default=10000)
    t.add_argument("--test", type=int, default=2000)
    t.add_argument("--epochs", type=int, default=6)
    t.add_argument("--data", default=None, help="npz of generated crops: written on the first run, reused after")
    f = sub.add_parser("finetune", help="continue training on the saved crops plus synthetic-source crops")
    f.add_argument("--weights", default=str(WEIGHTS))
    f.add_argument("--data", required=True)
    f.add_argument("--extra", required=True, help="npz of more crops (python -m stream.confidence_crops)")
    f.add_argument("--out", default=str(WEIGHTS))
    f.add_argument("--epochs", type=int, default=2)
    t.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    from model.assets import resolve_root
    from model.data.cache import build

    if a.cmd == "cache":
        n = build(None, a.out, items=subset_items(resolve_root(), a.per_source, a.n300w), progress=False)
        print(f"{n} faces cached in {a.out}")
        return 0
    if a.cmd == "finetune":
        meta = finetune(Path(a.weights), a.data, a.extra, Path(a.out), a.epochs)
        print(json.dumps(meta, indent=1))
        return 0
    meta = train(a.cache, Path(a.out), a.train, a.test, a.epochs, threads=a.threads, data=a.data)
    print(json.dumps(meta, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
