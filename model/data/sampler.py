"""Training samples from the photo cache: augmented crops for the teacher, and face-profiled crops with exact labels.

``CacheSampler.sample(i, rng) -> (crop (120, 120, 3) uint8, label (62,) real v1 params or None, weight)``:

- with probability ``1 - profile.fraction`` a plain sample: the cached context is jittered (scale, shift, in-plane
  rotation), filled with clutter beyond the photo, maybe flipped, photometrically augmented; the label is None: the
  teacher labels exactly this crop on the fly; with ``cached_labels`` it is the cached (flip-averaged) teacher fit
  carried through the same transforms, as for a profiled sample, and the teacher never runs in training;
- otherwise a **profiled** sample (``model.data.profile``) of a photo whose fit is trustworthy (flip gap at most
  ``max_flip_gap``, see ``model.data.cache``): the cached teacher fit is rotated to a new yaw (uniform in
  ``[-max_yaw, max_yaw]``, at least ``min_delta`` from the photo's) and pitch (``+-pitch``), re-rendered, framed with
  the evaluation rule (``roi_from_landmarks`` of the new landmarks), jittered and flipped like a plain sample; the
  label is the rotated fit carried through every image transform exactly. The teacher never labels these: large
  poses are where it is weakest.

**Human-fit rows** (``cache.human``: fits to 68 human landmarks, ``model.data.cache build-human``) are exact labels:
a plain sample carries the fit through the crop transforms like a profiled one (never the teacher), plus the human
landmarks themselves moved by the same transforms (``landmarks`` (68, 2) crop px, permuted and mirrored on a flip)
for a 2D landmark loss; a profiled one is the rotated fit (its human landmarks no longer apply: NaN). ``HumanConfig``:
their loss weight (times the source weight), their share of each batch and how many of them are profiled.
``TurnedConfig``: a share of the plain teacher rows drawn from the real photos at ``|yaw| >= min_yaw`` whose cached
fit agrees with its mirror (flip gap at most ``max_flip_gap``): a large cached yaw is as often a failed fit (a mask, a
tiny or cut face, no face) as a turned head, and there the teacher's labels of the augmented crop are noise.

``BatchMaker(step)`` draws one whole batch from a generator seeded by (seed, step), so a run is reproducible whatever
the number of data-loader workers that build batches in parallel.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from model.data.cache import CONTEXT, OFFSET, PhotoCache
from model.data.photos import Augment, crop_with_clutter, jitter_roi, photometric
from model.data.profile import Profiler, affine_to_params, apply_affine, params_to_affine, transform_affine
from model.data.teacher import FLIP_68, MIRROR_C, mirror_params, model_mirror_plane
from model.morphable import pose_from_params
from model.roi import CROP_SIZE, roi_from_landmarks


@dataclass
class ProfileConfig:
    """Face-profiling mix: share of samples, target |yaw| range (degrees), minimum yaw change, pitch change range."""

    fraction: float = 0.5
    max_yaw: float = 90.0
    min_delta: float = 10.0
    pitch: float = 20.0
    max_flip_gap: float = 0.08  # only photos whose teacher fit agrees with its mirror this well are profiled
    ring: int = 12  # grid rows/columns of surrounding head turned with the face (``profile.extend_grid``)


def known_keys(cls, d: dict | None, name: str) -> dict:
    """``d`` (a config mapping, or None) checked against the fields of dataclass ``cls``: an unknown key is an error
    naming it as ``name.key``."""
    d = dict(d or {})
    known = set(cls.__dataclass_fields__)
    for k in d:
        if k not in known:
            raise ValueError(f"{name}.{k}: unknown key (expected one of {', '.join(sorted(known))})")
    return d


@dataclass
class HumanConfig:
    """Human-fit rows in the mix (config ``data.human``)."""

    weight: float = 2.0  # loss weight of a human-fit row (plain or profiled) relative to a teacher row (x source)
    fraction: float | None = 0.25  # share of each batch drawn from human-fit rows; None: their share of the cache
    profile_fraction: float = 0.5  # share of those re-rendered at a new pose (``ProfileConfig`` ranges)
    max_fit_nme: float = 5.0  # % of the landmark box: worse fits (a mislabelled or odd face) are left out

    @classmethod
    def from_dict(cls, d: dict | None) -> "HumanConfig":
        """From a config mapping; an unknown key is an error naming it."""
        return cls(**known_keys(cls, d, "data.human"))


@dataclass
class TurnedConfig:
    """Real turned faces in the mix (config ``data.turned``): a share of the plain teacher rows drawn from the photos
    whose cached fit has ``|yaw| >= min_yaw`` (degrees). Real photos beyond 30 degrees are 6% of the photo cache, and
    the student trained on them at that rate stays far from the teacher on them (bench/RESULTS.md, issue 12)."""

    fraction: float = 0.0  # share of the plain (teacher-labelled) rows drawn from the turned photos
    min_yaw: float = 30.0
    # only photos whose teacher fit agrees with its mirror this well (``model.data.cache`` flip gap; null: any). Past
    # 45 deg of cached yaw the median gap is 0.10-0.21 against 0.014 overall: mostly failed fits of masked, tiny or
    # cut faces (bench/RESULTS.md, issue 12 session 4)
    max_flip_gap: float | None = 0.08

    @classmethod
    def from_dict(cls, d: dict | None) -> "TurnedConfig":
        """From a config mapping; an unknown key or a fraction outside 0..1 is an error naming it."""
        out = cls(**known_keys(cls, d, "data.turned"))
        if not 0.0 <= out.fraction <= 1.0:
            raise ValueError(f"data.turned.fraction: {out.fraction} is not within 0..1")
        return out


@dataclass
class Sample:
    """One training sample: crop (120, 120, 3) uint8, label (62,) real v1 params or None (teacher), human
    landmarks (68, 2) crop px or None, loss weight."""

    crop: np.ndarray
    label: np.ndarray | None
    landmarks: np.ndarray | None
    weight: float


@dataclass
class CacheSampler:
    cache: PhotoCache
    morph: object
    augment: Augment = field(default_factory=Augment)
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    weights: dict = field(default_factory=dict)
    human: HumanConfig = field(default_factory=HumanConfig)
    cached_labels: bool = False  # plain teacher rows: the cached fit carried through the crop (no teacher pass)
    turned: TurnedConfig = field(default_factory=TurnedConfig)

    def __post_init__(self) -> None:
        self.profiler = Profiler.from_morphable(self.morph, self.profile.ring)
        self.x0 = model_mirror_plane(self.morph)
        self.base = np.array([OFFSET, OFFSET, OFFSET + CROP_SIZE, OFFSET + CROP_SIZE], np.float32)
        c = self.cache
        is_h = self.is_human = c.human  # kept: ``cache.human`` compares the whole label column each call
        self.human_rows = np.flatnonzero(is_h & (np.nan_to_num(c.fit_nme, nan=np.inf) <= self.human.max_fit_nme))
        good = (~is_h & (c.flip_gap <= self.profile.max_flip_gap)) | np.isin(np.arange(len(c)), self.human_rows)
        if self.human.fraction is not None and len(self.human_rows):
            # human rows come in their own share of the batch: the rest is drawn from the teacher rows
            self.plain_pool = np.flatnonzero(~is_h)
            self.profilable = np.flatnonzero(good & ~is_h)
        else:
            self.plain_pool = np.flatnonzero(~is_h | np.isin(np.arange(len(c)), self.human_rows))
            self.profilable = np.flatnonzero(good)
        yaw = np.abs(pose_from_params(c.params[self.plain_pool])[:, 0]) if len(self.plain_pool) else np.zeros(0)
        turned = yaw >= self.turned.min_yaw
        if self.turned.max_flip_gap is not None:
            gap = np.nan_to_num(c.flip_gap[self.plain_pool], nan=np.inf)
            turned &= (gap <= self.turned.max_flip_gap) | is_h[self.plain_pool]
        self.turned_pool = self.plain_pool[turned]
        yy, xx = np.mgrid[0:CONTEXT, 0:CONTEXT]
        self._xx, self._yy = xx, yy

    def __len__(self) -> int:
        return len(self.cache)

    def weight(self, i: int) -> float:
        w = float(self.weights.get(str(self.cache.source[i]), 1.0))
        return w * self.human.weight if self.is_human[i] else w

    def inside_mask(self, i: int) -> np.ndarray:
        x1, y1, x2, y2 = self.cache.inside[i]
        return (self._xx >= x1) & (self._xx <= x2) & (self._yy >= y1) & (self._yy <= y2)

    def context_affine(self, i: int) -> np.ndarray:
        """Image-space affine (3, 4) of photo ``i``'s fit in context pixels."""
        f = params_to_affine(self.cache.params[i])
        f[0, 3] += OFFSET
        f[1, 3] += OFFSET
        return f

    def target_pose(self, real: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
        """(yaw change, pitch change) in degrees for a profiled sample of a face with params ``real``."""
        yaw = float(pose_from_params(real[None])[0, 0])
        p = self.profile
        for _ in range(8):
            target = rng.uniform(-p.max_yaw, p.max_yaw)
            if abs(target - yaw) >= p.min_delta:
                break
        return target - yaw, float(rng.uniform(-p.pitch, p.pitch))

    def sample(self, i: int, rng: np.random.Generator, profiled: bool | None = None
               ) -> tuple[np.ndarray, np.ndarray | None, float]:
        """(crop, label or None, weight) of ``sample_full``."""
        out = self.sample_full(i, rng, profiled)
        return out.crop, out.label, out.weight

    def sample_full(self, i: int, rng: np.random.Generator, profiled: bool | None = None) -> Sample:
        """A sample of photo ``i``: profiled (``profiled`` None: with probability ``profile.fraction``) or plain."""
        img = self.cache.image(i)
        inside = self.inside_mask(i)
        real = self.cache.params[i]
        exact = bool(self.is_human[i])
        if profiled is None:
            profiled = rng.random() < self.profile.fraction
        label, lm = None, None
        base = self.base
        f = self.context_affine(i)
        if profiled:
            dyaw, dpitch = self.target_pose(real, rng)
            # image-space yaw about the vertical axis turns the v1 parameter yaw the other way (y is flipped)
            img, f, face = self.profiler.render(img, f, real, -dyaw, dpitch)
            inside = inside | face
            lm3 = apply_affine(f, self.morph.sparse.shape_model(real[None])[0])
            base = roi_from_landmarks(lm3[None])[0]
        roi, angle = jitter_roi(base, self.augment, rng)
        crop, m = crop_with_clutter(img, inside, roi, angle, rng, pooled=True)
        if profiled or exact or self.cached_labels:  # exact (or cached) labels follow every image transform
            label = affine_to_params(transform_affine(f, m), real)
        if exact and not profiled:
            lm = (self.cache.landmarks[i].astype(np.float64) @ m[:, :2].T + m[:, 2]).astype(np.float32)
        if rng.random() < self.augment.flip:
            crop = np.ascontiguousarray(crop[:, ::-1])
            if label is not None:
                label = mirror_params(label[None], MIRROR_C, self.x0)[0]
            if lm is not None:
                lm = lm[FLIP_68]
                lm[:, 0] = MIRROR_C - lm[:, 0]
        return Sample(photometric(crop, self.augment, rng), label, lm, self.weight(i))


@dataclass
class BatchMaker:
    """Picklable batch builder for data-loader workers: ``make(step)`` -> dict of numpy arrays.

    ``crops`` (B, 120, 120, 3) uint8; ``labels`` (B, 62) float32 real v1 params, NaN rows for the teacher to label;
    ``weights`` (B,) float32; ``landmarks`` (B, 68, 2) float32 human landmarks in crop px, NaN rows where none.
    The first ``round(B * human.fraction)`` rows are human-fit rows (when the cache has any). ``mats``: ground-truth datasets (``MatDataset``) drawn for ``mat_fraction`` of a batch.
    """

    sampler: CacheSampler
    batch: int
    seed: int
    mats: list = field(default_factory=list)
    mat_fraction: float = 0.0

    def make(self, step: int) -> dict:
        rng = np.random.default_rng([self.seed, step])
        n_mat = int(round(self.batch * self.mat_fraction)) if self.mats else 0
        crops = np.empty((self.batch, CROP_SIZE, CROP_SIZE, 3), np.uint8)
        labels = np.full((self.batch, 62), np.nan, np.float32)
        weights = np.ones(self.batch, np.float32)
        lms = np.full((self.batch, 68, 2), np.nan, np.float32)
        s = self.sampler
        h = s.human
        n_h = int(round(self.batch * h.fraction)) if (h.fraction is not None and len(s.human_rows)) else 0
        n_h = min(n_h, self.batch - n_mat)
        for k in range(self.batch - n_mat):
            if k < n_h:
                profiled = rng.random() < h.profile_fraction
                i = s.human_rows[rng.integers(len(s.human_rows))]
            else:
                profiled = len(s.profilable) > 0 and rng.random() < s.profile.fraction
                if profiled:
                    i = s.profilable[rng.integers(len(s.profilable))]
                elif len(s.turned_pool) and s.turned.fraction > 0 and rng.random() < s.turned.fraction:
                    i = s.turned_pool[rng.integers(len(s.turned_pool))]
                else:
                    i = s.plain_pool[rng.integers(len(s.plain_pool))]
            out = s.sample_full(int(i), rng, profiled)
            crops[k] = out.crop
            weights[k] = out.weight
            if out.label is not None:
                labels[k] = out.label
            if out.landmarks is not None:
                lms[k] = out.landmarks
        for k in range(self.batch - n_mat, self.batch):
            ds = self.mats[int(rng.integers(len(self.mats)))]
            c, p, w = ds.sample(int(rng.integers(len(ds))), rng)
            crops[k], labels[k], weights[k] = c, p, w
        return {"crops": crops, "labels": labels, "weights": weights, "landmarks": lms}


class StepBatches:
    """A map-style dataset of the batches of steps [start, stop) (tensors), for a ``DataLoader`` with
    ``batch_size=None``: picklable, so workers may be spawned."""

    def __init__(self, maker: BatchMaker, start: int, stop: int) -> None:
        self.maker, self.start, self.stop = maker, start, stop

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)

    def __getitem__(self, k: int) -> dict:
        import torch

        return {key: torch.from_numpy(v) for key, v in self.maker.make(self.start + k).items()}


def worker_init(_: int) -> None:
    """Data-loader worker: one thread each for OpenCV and torch (the workers are the parallelism)."""
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
