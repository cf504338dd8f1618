"""On-the-fly teacher labels: 3DDFA_V2's MobileNetV1 (mb05) on exactly the student's crop, in DAMDNet's v1 space.

The teacher predicts V2-whitened parameters in the v2 decode convention (``x - 1``, ``y = 120 - y``); DAMDNet uses
the v1 convention (``y = 120 + 1 - y``). The same frame landmarks need, in v1, the offset ``t_x - 1`` and ``t_y + 1``
(``t_z - 1`` too, z being shifted the same way; it is not observable in 2D). Then the real parameters are whitened with
DAMDNet's v1 whitening.

Flip test-time averaging: the teacher also sees the horizontally mirrored crop; its parameters are mirrored back
(``mirror_params``) and averaged with the direct ones.

Mirror of the parameters (v1 projected crop coordinates, before the y flip; crop pixel x maps to ``MIRROR_C - x``
with ``MIRROR_C = 119`` for a 120-pixel crop flipped with ``cv2.flip``): the BFM is left/right symmetric about its
model plane x = x0 (the shape and expression coefficients are kept), so with ``D = diag(-1, 1, 1)`` the mirrored
camera is ``R' = D R D`` (sign flips of R[0,1], R[0,2], R[1,0], R[2,0]) and ``t' = D t + C e_x + 2 x0 D R e_x``. The decoded
landmarks then equal the mirrored landmarks with the 68-point left/right permutation ``FLIP_68``.
"""
from __future__ import annotations

import numpy as np
import torch

from model.morphable import Whitening

MIRROR_C = 119.0

# 68-point left/right permutation: landmark k of a mirrored face is landmark FLIP_68[k] of the original, mirrored.
FLIP_68 = np.array(
    list(range(16, -1, -1))  # jaw
    + list(range(26, 21, -1)) + list(range(21, 16, -1))  # eyebrows
    + [27, 28, 29, 30] + [35, 34, 33, 32, 31]  # nose
    + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40]  # eyes
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]  # outer lips
    + [64, 63, 62, 61, 60, 67, 66, 65],  # inner lips
    dtype=np.int64)

_SIGN = np.ones(12, np.float32)
_SIGN[[1, 2, 4, 8]] = -1.0  # R[0,1], R[0,2], R[1,0], R[2,0] in the row-major 3x4 P


def v2_to_v1(real: torch.Tensor) -> torch.Tensor:
    """Real params in the v2 decode convention -> the same frame geometry in the v1 convention (N, 62)."""
    out = real.clone()
    out[:, 3] -= 1.0
    out[:, 7] += 1.0
    out[:, 11] -= 1.0
    return out


def model_mirror_plane(morph) -> float:
    """Model-space x of the BFM's left/right symmetry plane: the mean x of the 68 landmarks (a symmetric set)."""
    return float(np.asarray(morph.sparse.u)[:, 0].mean())


def mirror_params(real: torch.Tensor | np.ndarray, c: float = MIRROR_C, x0: float = 0.0) -> torch.Tensor | np.ndarray:
    """Real v1 params (N, 62) of a crop -> params of the horizontally mirrored crop (N, 62).

    ``x0`` is the model-space symmetry plane (``model_mirror_plane``): model points mirror as ``x -> 2 x0 - x``, so
    ``t' = D t + c e_x + 2 x0 D R e_x`` with ``R' = D R D``. Shape and expression are kept (the bases are close to
    symmetric: about 0.25 px mean landmark error on real faces).
    """
    sign = torch.as_tensor(_SIGN, dtype=real.dtype, device=real.device) if isinstance(real, torch.Tensor) else _SIGN
    out = real.clone() if isinstance(real, torch.Tensor) else np.array(real, copy=True)
    out[:, :12] = out[:, :12] * sign
    out[:, 3] = c - real[:, 3] - 2 * x0 * real[:, 0]
    out[:, 7] = real[:, 7] + 2 * x0 * real[:, 4]
    out[:, 11] = real[:, 11] + 2 * x0 * real[:, 8]
    return out


def mirror_landmarks_crop(lm: np.ndarray | torch.Tensor, c: float = MIRROR_C):
    """Projected crop landmarks (N, 68, 3) -> those of the mirrored crop (x -> c - x, left/right permuted)."""
    out = lm[:, FLIP_68].clone() if isinstance(lm, torch.Tensor) else np.array(lm[:, FLIP_68])
    out[..., 0] = c - out[..., 0]
    return out


class Teacher:
    """Label uint8 BGR crops (N, 120, 120, 3) with v1-whitened DAMDNet targets (N, 62)."""

    def __init__(self, name: str = "3ddfa-v2-mb05", device: str | torch.device = "cpu", flip: bool = True,
                 store=None) -> None:
        from model.checkpoint import load_model

        loaded = load_model(name, store)
        if loaded.convention != "v2" and loaded.convention != "v1":
            raise ValueError(f"teacher {name}: unknown convention {loaded.convention}")
        self.device = torch.device(device)
        self.net = loaded.net.to(self.device).eval()
        self.src_whitening = loaded.whitening
        self.src_convention = loaded.convention
        self.whitening = Whitening.load("v1", store)
        from model.morphable import MorphableModel

        self.x0 = model_mirror_plane(MorphableModel.load(store))
        self.flip = flip
        self.name = name

    @torch.no_grad()
    def real_params(self, crops: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Crops (N, 120, 120, 3) uint8 (numpy or tensor) -> real v1 params (N, 62), flip-averaged when enabled."""
        if not self.flip:
            return self._real(crops, False)
        direct, mirrored = self.real_params_pair(crops)
        return 0.5 * (direct + mirrored)

    @torch.no_grad()
    def real_params_pair(self, crops: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Crops -> (direct, mirrored-back) real v1 params, each (N, 62): their disagreement measures how sure the
        teacher is (``flip_disagreement``)."""
        real = self._real(crops, True)
        n = real.shape[0] // 2
        return real[:n], mirror_params(real[n:], MIRROR_C, self.x0)

    def _real(self, crops: np.ndarray | torch.Tensor, both: bool) -> torch.Tensor:
        x = crops if isinstance(crops, torch.Tensor) else torch.as_tensor(np.ascontiguousarray(crops))
        x = (x.to(self.device).permute(0, 3, 1, 2).float() - 127.5) / 128.0
        batch = torch.cat([x, x.flip(3)]) if both else x
        real = self.src_whitening.unwhiten(self.net(batch).float())
        return v2_to_v1(real) if self.src_convention == "v2" else real

    def __call__(self, crops: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Crops -> v1-WHITENED targets (N, 62) for DAMDNet."""
        return self.whitening.whiten(self.real_params(crops))
