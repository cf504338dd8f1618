"""MediaPipe FaceMesh points (478, ``refine_landmarks=True``) -> our 68-point convention, for the eyes and the mouth.

MediaPipe labels eyelids and lips well through blinks and open mouths (it is a labelling and measuring tool here,
never a runtime dependency). Its points are not the 68-point convention's, so each of our eye and mouth points
(36-67) is written as a weighted sum of its ``K`` nearest MediaPipe points, weights summing to 1 (an affine-equivariant
combination: it commutes with any image motion), fitted by least squares on faces whose 68 points people placed
(``faces300w``). ``MediaPipeMap.fit(mp, human)`` learns it; ``map(mp)`` applies it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

TARGETS = np.arange(36, 68)  # eyes 36-47, mouth 48-67
K_NEAR = 6


@dataclass
class MediaPipeMap:
    """``index (32, K)`` MediaPipe point indices and ``weight (32, K)`` (rows sum to 1) for our points ``TARGETS``."""

    index: np.ndarray
    weight: np.ndarray

    def map(self, mp: np.ndarray) -> np.ndarray:
        """(N, 478, 2|3) MediaPipe points -> (N, 32, 2) our points 36-67, same pixels."""
        p = np.asarray(mp, dtype=np.float64)[..., :2]
        return np.einsum("nqkc,qk->nqc", p[:, self.index], self.weight)

    @classmethod
    def fit(cls, mp: np.ndarray, human: np.ndarray, k: int = K_NEAR, ridge: float = 1e-3) -> "MediaPipeMap":
        """Fit on (N, 478, 2+) MediaPipe points and (N, 68, 2) human points of the same faces (pixels).

        Each face's residuals are divided by its inter-ocular distance, so every face counts alike. ``ridge`` pulls
        the weights toward the nearest-point average (in face-size units).
        """
        mp = np.asarray(mp, dtype=np.float64)[..., :2]
        hu = np.asarray(human, dtype=np.float64)[..., :2]
        ok = np.isfinite(mp).all((1, 2)) & np.isfinite(hu).all((1, 2))
        mp, hu = mp[ok], hu[ok]
        iod = np.linalg.norm(hu[:, 36] - hu[:, 45], axis=1)[:, None, None]
        # nearest MediaPipe points of each target on the normalised average face (centred, inter-ocular = 1)
        c = hu.mean(1, keepdims=True)
        mean_mp = ((mp - c) / iod).mean(0)
        mean_hu = ((hu - c) / iod).mean(0)
        index = np.zeros((len(TARGETS), k), np.int64)
        weight = np.zeros((len(TARGETS), k))
        for q, j in enumerate(TARGETS):
            near = np.argsort(((mean_mp - mean_hu[j]) ** 2).sum(1))[:k]
            index[q] = near
            if k == 1:
                weight[q] = 1.0
                continue
            # w = w0 + B v with B a basis of {sum = 0}; least squares over faces and both coordinates
            a = ((mp[:, near] - mp[:, near[:1]]) / iod)[:, 1:]  # (N, k-1, 2): points relative to the first
            b = ((hu[:, j] - mp[:, near[0]]) / iod[:, 0])  # (N, 2)
            a2 = a.transpose(0, 2, 1).reshape(-1, k - 1)
            v = np.linalg.solve(a2.T @ a2 + ridge * len(a2) * np.eye(k - 1), a2.T @ b.reshape(-1))
            weight[q] = np.concatenate([[1 - v.sum()], v])
        return cls(index, weight)

    def save(self, path: str | Path) -> None:
        np.savez(path, index=self.index, weight=self.weight)

    @classmethod
    def load(cls, path: str | Path) -> "MediaPipeMap":
        z = np.load(path)
        return cls(z["index"], z["weight"])
