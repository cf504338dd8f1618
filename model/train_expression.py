"""Train the expression stage's network (``model.expression_net``) on eyelid and lip points. CPU-sized.

Data (training roles only, DESIGN.md section 7):
- ``faces300w``: people placed the 68 points (eyelids and lips included);
- the training videos and the training photos (``faces/``, masked faces left out), labelled by MediaPipe FaceMesh
  (``bench/mediapipe_labels.py``, its own venv) and mapped to our 68-point convention by ``MediaPipeMap`` (fitted on
  ``faces300w``).
Each face is stored once as an upright gray context image (inter-ocular distance 100 px); every step cuts its eye and
mouth patches through anchors jittered like an aligner's corners, with photometric and resolution changes, and a
mirrored copy half the time. Closed eyes, winks and open mouths are rare in photos: they are drawn more often.
Loss: smooth-L1 of the points plus, twice over, of the gaps between facing lid and lip points (a rare wide gap is
what a small network otherwise hedges toward the mean face's).
Validation (checkpoint choice): held-out training videos (``--val-videos``: the correlation of the eye aspect ratio
and of the mouth opening with the labels) and a tenth of the photos and human-labelled faces held out
(``held_out_rare``: every closed eye and open mouth among them and as many others; the slopes of the predicted on the
labelled eye aspect ratio and mouth opening, 1 = as far as the labels).

    python -m model.train_expression --labels LABELS_DIR --minutes 20 --out model/weights/expression.pth
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from model.cliparse import OneLineParser
from model.data.mediapipe_map import MediaPipeMap
from model.expression_ext import eye_aspect_ratio, mouth_openness
from model.expression_net import ExpressionNet, save_expression_net
from model.expression_patches import LEFT_EYE, MOUTH, RIGHT_EYE, apply_affine, cut, part_affines, to_units

CTX = 256  # context image side, px
SLIVER = 0.08  # close_eye: what stays open of the gap when shut (a closed eye's labelled aspect is not 0)
REACH = 1.2  # close_eye: how far above the upper lid (x the eye's gap) the skin is stretched down
SYNTH_OPEN_EAR = 0.2  # close_eye only shuts eyes at least this open (their labels' aspect ratio)
IOD = 100.0  # inter-ocular distance in the context, px
MIRROR = np.arange(68)
for a, b in [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46), (48, 54), (49, 53), (50, 52), (55, 59),
             (56, 58), (60, 64), (61, 63), (65, 67)]:
    MIRROR[a], MIRROR[b] = b, a


@dataclass
class FaceSet:
    """Context images (N, CTX, CTX) uint8 gray, points (N, 68, 2) context px (rows 36-67 set, others NaN), source
    names (N,), and per-face draw weights (N,)."""

    images: np.ndarray
    points: np.ndarray
    source: np.ndarray
    weight: np.ndarray


def context_of(image: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Upright gray context (CTX, CTX) of a face and its points 36-67 (32, 2) image px -> context px."""
    p = np.asarray(pts, np.float64)
    right, left = p[0:6].mean(0), p[6:12].mean(0)  # eye centres (rows 36-41, 42-47)
    d = left - right
    s = IOD / max(np.linalg.norm(d), 1e-6)
    ang = np.arctan2(d[1], d[0])
    c = p.mean(0)
    rot = np.array([[np.cos(-ang), -np.sin(-ang)], [np.sin(-ang), np.cos(-ang)]]) * s
    a = np.concatenate([rot, (np.array([CTX / 2, CTX / 2 - 8]) - rot @ c)[:, None]], 1)
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    ctx = cv2.warpAffine(gray, a.astype(np.float32), (CTX, CTX), flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)
    return ctx, p @ a[:, :2].T + a[:, 2]


def draw_weights(points: np.ndarray) -> np.ndarray:
    """Oversampling of rare expressions: (N, 68, 2) -> (N,) weights (closed eye x8, half-closed x3, wink x4, open
    mouth x3, wide-open mouth (opening over half the mouth's width, 1-3% of photos) x8, gaping (over 0.8, 0.2%) x16)."""
    ear = eye_aspect_ratio(points)
    mo = mouth_openness(points)
    w = np.ones(len(points))
    w *= np.where(ear.min(1) < 0.12, 8.0, np.where(ear.min(1) < 0.18, 3.0, 1.0))
    w *= np.where(np.abs(ear[:, 0] - ear[:, 1]) > 0.08, 4.0, 1.0)
    w *= np.where(mo > 0.8, 16.0, np.where(mo > 0.5, 8.0, np.where(mo > 0.3, 3.0, 1.0)))
    return w


def _frames(path: str) -> list[np.ndarray]:
    cap = cv2.VideoCapture(path)
    out = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        out.append(f)
    return out


def build_faces(labels: Path, assets: Path, mp_map: MediaPipeMap, val_videos: set[str]) -> tuple[FaceSet, FaceSet]:
    """(training set, validation set) from the MediaPipe label files in ``labels`` and the human faces300w."""
    from model.groundtruth import read_pts

    imgs, pts, src = {"train": [], "val": []}, {"train": [], "val": []}, {"train": [], "val": []}

    def add(split: str, image: np.ndarray, p32: np.ndarray, name: str) -> None:
        if not np.all(np.isfinite(p32)):
            return
        ctx, q = context_of(image, p32)
        full = np.full((68, 2), np.nan)
        full[36:68] = q
        imgs[split].append(ctx)
        pts[split].append(full)
        src[split].append(name)

    vids = np.load(labels / "train_videos.npz")
    video_dirs = [assets / "KwaiVGI/LivePortrait/assets/examples/driving", assets / "KwaiVGI/LivePortrait/assets/examples/source",
                  assets / "OpenTalker/SadTalker/test/examples/source_image"]
    for name in vids["names"]:
        path = next(d / f"{name}.mp4" for d in video_dirs if (d / f"{name}.mp4").exists())
        mapped = mp_map.map(vids[name])
        split = "val" if name in val_videos else "train"
        for f, p in zip(_frames(str(path)), mapped):
            add(split, f, p, str(name))
    f300 = np.load(labels / "faces300w.npz")
    for path in f300["image_paths"]:
        img = cv2.imread(str(path))
        if img is not None:
            add("train", img, read_pts(str(path).replace(".jpg", ".pts"))[36:68, :2], "faces300w")
    photos = labels / "photos.npz"
    if photos.exists():
        z = np.load(photos)
        mapped = mp_map.map(z["images"])
        for path, p in zip(z["image_paths"], mapped):
            if "with_mask" in str(path) or not np.all(np.isfinite(p)):
                continue
            img = cv2.imread(str(path))
            if img is not None:
                add("train", img, p, "photos")

    def pack(split: str) -> FaceSet:
        p = np.stack(pts[split])
        return FaceSet(np.stack(imgs[split]), p, np.array(src[split]), draw_weights(p))

    return pack("train"), pack("val")


ANCHORS = (36, 39, 42, 45, 48, 54)


def aligner_anchors(images: np.ndarray, points: np.ndarray, weights: str, mean_shape: np.ndarray,
                    batch: int = 64) -> np.ndarray:
    """Where an aligner puts the anchors (eye and mouth corners) on each context image: (N, 6, 2) context px.

    The crop comes from the labelled points: the 3DMM mean shape's 68 points fitted (similarity) to the labelled
    36-67, then the landmark crop rule (``roi_from_landmarks``), as a tracker crops the next frame. So the network
    learns from anchors with the errors a real aligner makes (a blink, a smile, a turned head), not only jittered truth.
    """
    from model.aligner import Aligner
    from model.roi import roi_from_landmarks

    al = Aligner.from_checkpoint(weights, device="cpu", confidence=False, expression=False)
    src = mean_shape[36:68, :2] * np.array([1.0, -1.0])  # model y up -> image y down
    out = np.zeros((len(images), len(ANCHORS), 2), np.float32)
    for s in range(0, len(images), batch):
        items = []
        for i in range(s, min(s + batch, len(images))):
            dst = points[i, 36:68]
            a, _ = cv2.estimateAffinePartial2D(src.astype(np.float32), dst.astype(np.float32))
            full = (mean_shape[:, :2] * np.array([1.0, -1.0])) @ a[:, :2].T + a[:, 2]
            items.append((cv2.cvtColor(images[i], cv2.COLOR_GRAY2BGR), roi_from_landmarks(full[None])))
        for k, res in enumerate(al.align_many(items)):
            out[s + k] = res.landmarks[0, list(ANCHORS), :2]
    return out


def make_batch(faces: FaceSet, idx: np.ndarray, rng: np.random.Generator, augment: bool = True,
               anchors_from: np.ndarray | None = None, aligner_share: float = 0.6,
               fixed_anchors: np.ndarray | None = None, video_like: float = 0.0, synth_blink: float = 0.0
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Patches and labels of faces ``idx``: eyes (2B, 32, 48) uint8 (right eyes, then mirrored left eyes), eye
    points (2B, 6, 2) anchor units, mouths (B, 56, 48), mouth points (B, 20, 2). ``anchors_from`` (N, M, 6, 2):
    aligners' anchors per face (``aligner_anchors``), used for ``aligner_share`` of the faces (one aligner drawn at
    random), with a little jitter on top; the rest jitter the labelled corners. ``video_like``: the share of patches
    that also get a video's losses (``_video_like``). ``synth_blink``: the share of faces with both eyes open
    whose lids are shut part or all the way (:func:`close_eye`): three in four both eyes alike (a blink), the rest
    one eye (a wink)."""
    b = len(idx)
    eyes = np.empty((2 * b,) + RIGHT_EYE.size, np.uint8)
    mouths = np.empty((b,) + MOUTH.size, np.uint8)
    eye_pts = np.empty((2 * b, 6, 2))
    mouth_pts = np.empty((b, 20, 2))
    for k, i in enumerate(idx):
        img, p = faces.images[i], faces.points[i].copy()
        anchors = p.copy()
        real = augment and anchors_from is not None and rng.random() < aligner_share
        if real:
            anchors[list(ANCHORS)] = anchors_from[i, rng.integers(anchors_from.shape[1])]
        if fixed_anchors is not None:
            anchors[list(ANCHORS)] = fixed_anchors[k]
        if augment and rng.random() < 0.5:
            img = img[:, ::-1]
            p = p[MIRROR]
            p[:, 0] = CTX - 1 - p[:, 0]
            anchors = anchors[MIRROR]
            anchors[:, 0] = CTX - 1 - anchors[:, 0]
        if augment:  # an aligner's corners: each off by a few % of the part's width (less on real ones)
            sd = 0.5 if real else 1.0
            for a0, a1 in ((36, 39), (42, 45), (48, 54)):
                w = np.linalg.norm(p[a1] - p[a0])
                anchors[[a0, a1]] += rng.normal(0, sd * 0.06 * w, (2, 2)) + rng.normal(0, sd * 0.04 * w, (1, 2))
        shut = (0.0, 0.0)
        if augment and synth_blink > 0 and rng.random() < synth_blink and \
                eye_aspect_ratio(p[None]).min() >= SYNTH_OPEN_EAR:
            t = rng.uniform(0.3, 1.0)
            if rng.random() < 0.75:
                shut = (t, float(np.clip(t + rng.normal(0, 0.05), 0.0, 1.0)))
            else:
                shut = (t, 0.0) if rng.random() < 0.5 else (0.0, t)
        aff = part_affines(anchors[None])
        for spec, dest, j, lab, tk in ((RIGHT_EYE, eyes, k, eye_pts, shut[0]),
                                       (LEFT_EYE, eyes, b + k, eye_pts, shut[1]), (MOUTH, mouths, k, mouth_pts, 0.0)):
            a = aff[spec.name]
            patch = cut(np.ascontiguousarray(img), a[0], spec)
            q = apply_affine(a, p[list(spec.points)][None])[0]
            if tk > 0:
                patch, q = close_eye(patch, q, tk)
            if augment:
                patch = _photometric(patch, rng)
                if video_like > 0 and rng.random() < video_like:
                    patch = _video_like(patch, rng)
            dest[j] = patch
            lab[j] = to_units(q, spec)
    return eyes, eye_pts, mouths, mouth_pts


def _photometric(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x = patch.astype(np.float32)
    if rng.random() < 0.4:  # a small face: lose resolution
        f = rng.uniform(0.3, 0.8)
        h, w = patch.shape
        small = cv2.resize(x, (max(4, int(w * f)), max(4, int(h * f))), interpolation=cv2.INTER_AREA)
        x = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    x = (x / 255.0) ** rng.uniform(0.7, 1.4) * 255.0
    x = x * rng.uniform(0.6, 1.4) + rng.uniform(-30, 30)
    if rng.random() < 0.5:
        x = x + rng.normal(0, rng.uniform(1, 6), x.shape)
    return np.clip(x, 0, 255).astype(np.uint8)


def close_eye(patch: np.ndarray, pts: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
    """An open eye's patch (H, W) uint8 with its lids ``t`` of the way shut (0 as it is, 1 the upper lid down on the
    lower one but for ``SLIVER`` of the gap), and its six points (6, 2) patch px (``RIGHT_EYE`` roles: outer corner,
    two upper, inner corner, two lower) moved with it.

    Column by column the upper lid comes down as in a blink: the skin above it (up to ``REACH`` x the eye's largest
    gap above the lid) is stretched down to the new lid line, the eyeball between the lids is squeezed into what
    stays open, the lower lid and everything below it stay put; at the corners (no gap) nothing moves, so the warp is
    continuous. Rows are sampled 4x finer and averaged back (the squeezed eyeball is area-averaged, not aliased)."""
    h, w = patch.shape
    q = np.asarray(pts, np.float64)
    if t <= 0:
        return patch, q
    c0, c1 = (q[0], q[3]) if q[0, 0] <= q[3, 0] else (q[3], q[0])
    up = np.array([c0, *sorted([q[1], q[2]], key=lambda r: r[0]), c1])
    lo = np.array([c0, *sorted([q[5], q[4]], key=lambda r: r[0]), c1])
    if np.any(np.diff(up[:, 0]) <= 0) or np.any(np.diff(lo[:, 0]) <= 0):
        return patch, q
    xs = np.arange(w, dtype=np.float64)
    u = np.interp(xs, up[:, 0], up[:, 1])
    low = np.interp(xs, lo[:, 0], lo[:, 1])
    gap = np.where((xs > c0[0]) & (xs < c1[0]), np.maximum(low - u, 0.0), 0.0)
    if gap.max() < 1.0:
        return patch, q
    u2 = u + t * (1.0 - SLIVER) * gap
    top = u - REACH * gap.max() - 1.0
    ys = (np.arange(4 * h, dtype=np.float64) + 0.5) / 4 - 0.5
    y = ys[:, None]
    src = np.repeat(y, w, axis=1)
    above = (y >= top) & (y < u2)
    src = np.where(above, top + (y - top) * (u - top) / np.maximum(u2 - top, 1e-6), src)
    between = (y >= u2) & (y <= low) & (gap > 0)
    src = np.where(between, u + (y - u2) * (low - u) / np.maximum(low - u2, 1e-6), src)
    mx = np.broadcast_to(xs[None], src.shape).astype(np.float32)
    tall = cv2.remap(patch.astype(np.float32), mx, src.astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)
    out = cv2.resize(tall, (w, h), interpolation=cv2.INTER_AREA)
    moved = (np.abs(src - y) > 1e-6).reshape(h, 4, w).any(1)  # pixels the warp reaches; the rest stay exactly
    out = np.where(moved, out, patch.astype(np.float32))
    q2 = q.copy()
    for k in (1, 2):
        x = q[k, 0]
        q2[k, 1] = q[k, 1] + t * (1.0 - SLIVER) * max(float(np.interp(x, lo[:, 0], lo[:, 1])) - q[k, 1], 0.0)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), q2


def _video_like(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What a video frame does to a patch that a photo does not: block compression (JPEG at quality 15-60, on the
    patch seen at 2-4x its size, as the frame holds it) and half the time a little motion blur (2-3 patch px long)."""
    h, w = patch.shape
    k = rng.uniform(2.0, 4.0)
    big = cv2.resize(patch, (int(w * k), int(h * k)), interpolation=cv2.INTER_LINEAR)
    ok, buf = cv2.imencode(".jpg", big, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(15, 61))])
    if ok:
        big = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    if rng.random() < 0.5:
        n = int(rng.integers(2, 4)) * int(round(k))
        kern = np.zeros((n, n), np.float32)
        ang = rng.uniform(0, np.pi)
        c = (n - 1) / 2
        for t in np.linspace(-c, c, 2 * n):
            kern[int(round(c + t * np.sin(ang))), int(round(c + t * np.cos(ang)))] = 1.0
        big = cv2.filter2D(big, -1, kern / kern.sum())
    return cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA)


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).float().div_(255.0).sub_(0.5).unsqueeze(1)


# lid and inner-lip points count double in the loss: they carry the blink and the mouth opening
EYE_LOSS_W = torch.tensor([1.0, 2.0, 2.0, 1.0, 2.0, 2.0])[None, :, None]
MOUTH_LOSS_W = torch.tensor([1.0] * 12 + [1.0, 2.0, 2.0, 2.0, 1.0, 2.0, 2.0, 2.0])[None, :, None]
# ... and so do the gaps themselves (upper lid/lip point minus the one facing it, by position in the part's points):
# a point loss alone lets a small network hedge a rare wide gap toward the mean face's
EYE_GAPS = ([1, 2], [5, 4])  # 37-41, 38-40
MOUTH_GAPS = ([13, 14, 15, 2, 3, 4], [19, 18, 17, 10, 9, 8])  # inner 61-67, 62-66, 63-65; outer 50-58, 51-57, 52-56
GAP_LOSS_W = 2.0


def part_loss(pred: torch.Tensor, label: torch.Tensor, point_w: torch.Tensor, gaps: tuple[list[int], list[int]],
              gap_w: float = GAP_LOSS_W) -> torch.Tensor:
    """Smooth-L1 of (B, P, 2) points (anchor units, weighted per point) plus ``gap_w`` x that of the gap vectors
    between the facing points ``gaps`` (upper, lower)."""
    f = torch.nn.functional.smooth_l1_loss
    up, lo = gaps
    gp, gl = pred[:, lo] - pred[:, up], label[:, lo] - label[:, up]
    return (f(pred, label, reduction="none", beta=0.02) * point_w).mean() + \
        gap_w * f(gp, gl, reduction="none", beta=0.02).mean()


def evaluate(net: ExpressionNet, faces: FaceSet, seed: int = 0, anchors: np.ndarray | None = None
             ) -> dict[str, float]:
    """Validation figures: mean eye and mouth point error (anchor units), and the correlation of the predicted with
    the labelled eye aspect ratio and mouth openness. Anchors: ``anchors`` (N, 6, 2) (an aligner's, as at run time)
    when given, else the labelled corners."""
    rng = np.random.default_rng(seed)
    net.eval()
    errs_e, errs_m, ear_p, ear_t, mo_p, mo_t = [], [], [], [], [], []
    with torch.inference_mode():
        for s in range(0, len(faces.images), 256):
            idx = np.arange(s, min(s + 256, len(faces.images)))
            e, ep, m, mp = make_batch(faces, idx, rng, augment=False, fixed_anchors=None if anchors is None else
                                      anchors[idx])
            pe, pm = net(_tensor(e), _tensor(m))
            pe, pm = pe.numpy(), pm.numpy()
            errs_e.append(np.linalg.norm(pe - ep, axis=-1).mean(1))
            errs_m.append(np.linalg.norm(pm - mp, axis=-1).mean(1))
            b = len(idx)

            def ear6(q: np.ndarray) -> np.ndarray:
                d = lambda a, c: np.linalg.norm(q[:, a] - q[:, c], axis=-1)  # noqa: E731
                return (d(1, 5) + d(2, 4)) / 2 / d(0, 3)
            ear_p.append((ear6(pe[:b]) + ear6(pe[b:])) / 2)
            ear_t.append((ear6(ep[:b]) + ear6(ep[b:])) / 2)
            mo_p.append(np.linalg.norm(pm[:, 14] - pm[:, 18], axis=-1) / np.linalg.norm(pm[:, 12] - pm[:, 16], axis=-1))
            mo_t.append(np.linalg.norm(mp[:, 14] - mp[:, 18], axis=-1) / np.linalg.norm(mp[:, 12] - mp[:, 16], axis=-1))
    c = lambda a, b: float(np.corrcoef(np.concatenate(a), np.concatenate(b))[0, 1])  # noqa: E731
    # least-squares slope of the predicted on the labelled opening: 1 = the gaps open as far as the labels'
    k = lambda a, b: float(np.polyfit(np.concatenate(b), np.concatenate(a), 1)[0])  # noqa: E731
    return {"eye_err": float(np.concatenate(errs_e).mean()), "mouth_err": float(np.concatenate(errs_m).mean()),
            "ear_corr": c(ear_p, ear_t), "mouth_corr": c(mo_p, mo_t), "ear_slope": k(ear_p, ear_t),
            "mouth_slope": k(mo_p, mo_t)}


def draw_probabilities(faces: FaceSet, video_share: float | None = None) -> np.ndarray:
    """(N,) draw probabilities: the rare-expression weights, with the training videos' frames (every source that is
    not a photo or a human-labelled face) scaled to ``video_share`` of the draws when it is given."""
    w = faces.weight.astype(np.float64).copy()
    video = ~np.isin(faces.source, ["faces300w", "photos"])
    if video_share is not None and video.any() and (~video).any():
        if not 0.0 < video_share < 1.0:
            raise ValueError(f"video_share must lie between 0 and 1, got {video_share}")
        w[video] *= video_share / w[video].sum()
        w[~video] *= (1.0 - video_share) / w[~video].sum()
    return w / w.sum()


def held_out_rare(faces: FaceSet, share: float = 0.1, seed: int = 123) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held): ``share`` of the photos and human-labelled faces leave training; of those, the faces
    with a closed or half-closed eye or an open mouth, and as many others, form ``held`` (a validation set that
    spans the whole range of openings, which the held-out videos do not: their mouths open to 0.3-0.5)."""
    rng = np.random.default_rng(seed)
    pool = np.where(np.isin(faces.source, ["faces300w", "photos"]))[0]
    out = np.sort(rng.choice(pool, int(len(pool) * share), replace=False))
    ear, mo = eye_aspect_ratio(faces.points[out]), mouth_openness(faces.points[out])
    rare = out[(ear.min(1) < 0.18) | (mo > 0.3)]
    common = out[~np.isin(out, rare)]
    held = np.sort(np.concatenate([rare, rng.choice(common, min(len(rare), len(common)), replace=False)]))
    return np.setdiff1d(np.arange(len(faces.images)), out), held


def subset(faces: FaceSet, idx: np.ndarray) -> FaceSet:
    return FaceSet(faces.images[idx], faces.points[idx], faces.source[idx], faces.weight[idx])


def train(faces: FaceSet, val: FaceSet, minutes: float, out: Path, batch: int = 96, lr: float = 1e-3,
          seed: int = 0, width: int = 8, log_every: int = 500, anchors: np.ndarray | None = None,
          val_anchors: np.ndarray | None = None, held: FaceSet | None = None, held_anchors: np.ndarray | None = None,
          init: str | None = None, parts: tuple[str, ...] = ("eye", "mouth"), video_share: float | None = None,
          mouth_gap_w: float = GAP_LOSS_W, video_like: float = 0.0, synth_blink: float = 0.0) -> dict:
    """Train (or, with ``init``, fine-tune) and keep the best checkpoint on validation in ``out``. ``parts``: the
    PartNets that learn (the others keep ``init``'s weights and batch-norm statistics); ``video_share``: the share of
    draws that come from the training videos' frames (default: as their rare-expression weights give);
    ``mouth_gap_w``: the weight of the lip gaps' loss; ``video_like``: the share of training patches given a video's
    compression and motion blur."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = ExpressionNet(width)
    own, same = net.state_dict(), {}
    if init:  # warm start: every tensor of the same shape (a part whose patch changed starts afresh)
        old = torch.load(init, map_location="cpu", weights_only=True)["state_dict"]
        same = {k: v for k, v in old.items() if k in own and own[k].shape == v.shape}
        net.load_state_dict(same, strict=False)
        print(f"warm start from {init}: {len(same)} of {len(own)} tensors", flush=True)
    e, ep, m, mp = make_batch(faces, rng.choice(len(faces.images), 2048), rng, augment=False)
    # a part's mean points (its head predicts offsets from them) come with its head: from the data unless the whole
    # part came from ``init``
    for part, mean, pts in (("eye", net.mean_eye, ep), ("mouth", net.mean_mouth, mp)):
        if not all(k in same for k in own if k.startswith(part + ".")):
            mean.copy_(torch.from_numpy(pts.mean(0)).float())
    frozen = [getattr(net, part) for part in ("eye", "mouth") if part not in parts]
    for m in frozen:
        m.requires_grad_(False)
    opt = torch.optim.AdamW([q for q in net.parameters() if q.requires_grad], lr=lr, weight_decay=1e-4)
    p = draw_probabilities(faces, video_share)
    t_end = time.time() + minutes * 60
    t0 = time.time()
    step, best, history = 0, None, []
    while time.time() < t_end:
        frac = (time.time() - t0) / (minutes * 60)
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + np.cos(np.pi * min(frac, 1.0)))
        net.train()
        for m in frozen:  # its batch-norm statistics stay init's
            m.eval()
        idx = rng.choice(len(faces.images), batch, p=p)
        e, ep, m, mp = make_batch(faces, idx, rng, anchors_from=anchors, video_like=video_like,
                                  synth_blink=synth_blink)
        pe, pm = net(_tensor(e), _tensor(m))
        loss = part_loss(pe, torch.from_numpy(ep).float(), EYE_LOSS_W, EYE_GAPS) + \
            part_loss(pm, torch.from_numpy(mp).float(), MOUTH_LOSS_W, MOUTH_GAPS, mouth_gap_w)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % log_every == 0 or time.time() >= t_end:
            v = evaluate(net, val, anchors=val_anchors)
            if held is not None:
                v.update({f"held_{k}": x for k, x in evaluate(net, held, anchors=held_anchors).items()})
            v.update(step=step, minutes=round((time.time() - t0) / 60, 1), loss=float(loss.detach()))
            history.append(v)
            print(json.dumps(v), flush=True)
            # chosen on what the product needs from it: lids and lips that follow the face (the correlations of
            # the eye aspect ratio and the mouth opening on the held-out videos) and open and close as far as the
            # labels (the slopes on the held-out faces, which span every opening); the point errors carry each
            # labeller's convention
            score = (1 - v["ear_corr"]) + (1 - v["mouth_corr"])
            if held is not None:
                score += abs(1 - v["held_ear_slope"]) + abs(1 - v["held_mouth_slope"])
            save_expression_net(out.with_suffix(".last.pth"), net, {"width": width, "validation": v, "steps": step})
            if best is None or score < best["score"]:
                best = {"score": score, **v}
                save_expression_net(out, net, {"width": width, "validation": v, "steps": step, "batch": batch,
                                               "train_faces": int(len(faces.images)),
                                               "sources": sorted(set(faces.source.tolist())),
                                               "val_faces": int(len(val.images))})
    return {"best": best, "history": history}


def main(argv: list[str] | None = None) -> int:
    ap = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", required=True, help="folder with train_videos.npz, faces300w.npz, photos.npz, mpmap.npz")
    ap.add_argument("--assets", default=None, help="assets folder (default: resolved as everywhere)")
    ap.add_argument("--minutes", type=float, default=20.0, help="training time (default 20)")
    ap.add_argument("--out", default="model/weights/expression.pth", help="checkpoint to write (the best on validation)")
    ap.add_argument("--val-videos", default="s32,WDA_EdMarkey0_000", help="training videos held out for validation")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default=None, help="NPZ of the built faces: read when present, else written")
    ap.add_argument("--aligners", default="3ddfa-v2-mb05,damdnet",
                    help="models whose anchors (eye and mouth corners) the training patches are cut from, besides "
                         "jittered labels ('' for none); cached beside --cache")
    ap.add_argument("--init", default=None,
                    help="checkpoint to start from (tensors of the same shape; e.g. the shipped eyes)")
    ap.add_argument("--lr", type=float, default=1e-3, help="peak learning rate, cosine to 0 (default 0.001)")
    ap.add_argument("--mouth-gap-weight", type=float, default=GAP_LOSS_W,
                    help=f"weight of the lip gaps' loss beside the points' (default {GAP_LOSS_W})")
    ap.add_argument("--video-like", type=float, default=0.0,
                    help="share of training patches given a video's compression and motion blur (default 0)")
    ap.add_argument("--synth-blink", type=float, default=0.0,
                    help="share of open-eyed training faces whose lids are shut by a warp (close_eye; default 0)")
    ap.add_argument("--parts", default="eye,mouth", help="the part networks that learn (default both; e.g. mouth)")
    ap.add_argument("--video-share", type=float, default=None,
                    help="share of the draws taken from the training videos' frames (default: by their weights)")
    args = ap.parse_args(argv)
    parts = tuple(x for x in args.parts.split(",") if x)
    if not parts or set(parts) - {"eye", "mouth"}:
        ap.error(f"--parts takes eye and/or mouth, got '{args.parts}'")
    from model.assets import resolve_root

    torch.set_num_threads(args.threads)
    labels = Path(args.labels)
    assets = resolve_root(args.assets)
    map_path = labels / "mpmap.npz"
    if not map_path.exists():  # fitted once on the human-labelled faces: MediaPipe's points -> our convention
        from model.groundtruth import read_pts

        f300 = np.load(labels / "faces300w.npz")
        human = np.stack([read_pts(str(p).replace(".jpg", ".pts"))[:, :2] for p in f300["image_paths"]])
        MediaPipeMap.fit(f300["images"], human).save(map_path)
    mp_map = MediaPipeMap.load(map_path)
    t = time.time()
    if args.cache and Path(args.cache).exists():
        z = np.load(args.cache)
        faces = FaceSet(z["images"], z["points"], z["source"], draw_weights(z["points"]))
        val = FaceSet(z["vimages"], z["vpoints"], z["vsource"], draw_weights(z["vpoints"]))
    else:
        faces, val = build_faces(labels, assets, mp_map, set(args.val_videos.split(",")))
        if args.cache:
            np.savez(args.cache, images=faces.images, points=faces.points, source=faces.source, vimages=val.images,
                     vpoints=val.points, vsource=val.source)
    print(f"faces: train {len(faces.images)} ({dict(zip(*np.unique(faces.source, return_counts=True)))}), "
          f"val {len(val.images)}, built in {time.time() - t:.0f} s", flush=True)
    anchors = val_anchors = None
    names = [w for w in args.aligners.split(",") if w]
    if names:
        from model.morphable import MorphableModel

        path = Path(args.cache).with_suffix(f".anchors-{'+'.join(names)}.npz") if args.cache else None
        if path is not None and path.exists():
            z = np.load(path)
            anchors, val_anchors = z["train"], z["val"]
        else:
            t = time.time()
            u = MorphableModel.load().sparse.u.astype(np.float64)
            anchors = np.stack([aligner_anchors(faces.images, faces.points, w, u) for w in names], axis=1)
            val_anchors = aligner_anchors(val.images, val.points, names[0], u)
            print(f"aligner anchors of {names} in {time.time() - t:.0f} s", flush=True)
            if path is not None:
                np.savez(path, train=anchors, val=val_anchors)
    keep, held_idx = held_out_rare(faces)
    held = subset(faces, held_idx)
    held_anchors = None if anchors is None else anchors[held_idx, 0]
    print(f"held out {len(faces.images) - len(keep)} photos and human-labelled faces; {len(held_idx)} of them "
          "(every closed eye and open mouth, as many others) validate the openings", flush=True)
    faces = subset(faces, keep)
    anchors = None if anchors is None else anchors[keep]
    res = train(faces, val, args.minutes, Path(args.out), seed=args.seed, anchors=anchors, val_anchors=val_anchors,
                held=held, held_anchors=held_anchors, init=args.init, parts=parts, video_share=args.video_share,
                lr=args.lr, mouth_gap_w=args.mouth_gap_weight, video_like=args.video_like,
                synth_blink=args.synth_blink)
    print(json.dumps(res["best"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
