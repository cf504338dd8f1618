"""Training samples from the photo cache: augmented crops for the teacher, and face-profiled crops with exact labels.

``CacheSampler.sample(i, rng) -> (crop (120, 120, 3) uint8, label (62,) real v1 params or None, weight)``:

- with probability ``1 - profile.fraction`` a plain sample: the cached context is jittered (scale, shift, in-plane
  rotation), filled with clutter beyond the photo, maybe flipped, photometrically augmented; the label is None: the
  teacher labels exactly this crop on the fly;
- otherwise a **profiled** sample (``model.data.profile``) of a photo whose fit is trustworthy (flip gap at most
  ``max_flip_gap``, see ``model.data.cache``): the cached teacher fit is rotated to a new yaw (uniform in
  ``[-max_yaw, max_yaw]``, at least ``min_delta`` from the photo's) and pitch (``+-pitch``), re-rendered, framed with
  the evaluation rule (``roi_from_landmarks`` of the new landmarks), jittered and flipped like a plain sample; the
  label is the rotated fit carried through every image transform exactly. The teacher never labels these: large
  poses are where it is weakest.

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
from model.data.teacher import MIRROR_C, mirror_params, model_mirror_plane
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


@dataclass
class CacheSampler:
    cache: PhotoCache
    morph: object
    augment: Augment = field(default_factory=Augment)
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    weights: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.profiler = Profiler.from_morphable(self.morph, self.profile.ring)
        self.x0 = model_mirror_plane(self.morph)
        self.base = np.array([OFFSET, OFFSET, OFFSET + CROP_SIZE, OFFSET + CROP_SIZE], np.float32)
        self.profilable = np.flatnonzero(self.cache.flip_gap <= self.profile.max_flip_gap)
        yy, xx = np.mgrid[0:CONTEXT, 0:CONTEXT]
        self._xx, self._yy = xx, yy

    def __len__(self) -> int:
        return len(self.cache)

    def weight(self, i: int) -> float:
        return float(self.weights.get(str(self.cache.source[i]), 1.0))

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
        img = self.cache.image(i)
        inside = self.inside_mask(i)
        real = self.cache.params[i]
        if profiled is None:
            profiled = rng.random() < self.profile.fraction
        label = None
        base = self.base
        if profiled:
            dyaw, dpitch = self.target_pose(real, rng)
            # image-space yaw about the vertical axis turns the v1 parameter yaw the other way (y is flipped)
            img, f, face = self.profiler.render(img, self.context_affine(i), real, -dyaw, dpitch)
            inside = inside | face
            lm = apply_affine(f, self.morph.sparse.shape_model(real[None])[0])
            base = roi_from_landmarks(lm[None])[0]
        roi, angle = jitter_roi(base, self.augment, rng)
        crop, m = crop_with_clutter(img, inside, roi, angle, rng, pooled=True)
        if profiled:
            label = affine_to_params(transform_affine(f, m), real)
        if rng.random() < self.augment.flip:
            crop = np.ascontiguousarray(crop[:, ::-1])
            if label is not None:
                label = mirror_params(label[None], MIRROR_C, self.x0)[0]
        return photometric(crop, self.augment, rng), label, self.weight(i)


@dataclass
class BatchMaker:
    """Picklable batch builder for data-loader workers: ``make(step)`` -> dict of numpy arrays.

    ``crops`` (B, 120, 120, 3) uint8; ``labels`` (B, 62) float32 real v1 params, NaN rows for the teacher to label;
    ``weights`` (B,) float32. ``mats``: ground-truth datasets (``MatDataset``) drawn for ``mat_fraction`` of a batch.
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
        s = self.sampler
        for k in range(self.batch - n_mat):
            profiled = len(s.profilable) > 0 and rng.random() < s.profile.fraction
            i = s.profilable[rng.integers(len(s.profilable))] if profiled else rng.integers(len(s))
            c, lab, w = s.sample(int(i), rng, profiled)
            crops[k] = c
            weights[k] = w
            if lab is not None:
                labels[k] = lab
        for k in range(self.batch - n_mat, self.batch):
            ds = self.mats[int(rng.integers(len(self.mats)))]
            c, p, w = ds.sample(int(rng.integers(len(ds))), rng)
            crops[k], labels[k], weights[k] = c, p, w
        return {"crops": crops, "labels": labels, "weights": weights}


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
