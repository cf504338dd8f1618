"""A vertex set of the 3DMM in its 40 + 10 (+ extension) coefficient space, batched decode to model space."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

N_SHAPE = 40
N_EXP = 10


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


@dataclass
class Basis:
    """A vertex set in the 40 + 10 space: mean (V, 3), shape basis (V, 3, 40), expression basis (V, 3, 10); float32.

    ``w_ext`` (V, 3, N_EXT) or None: the extended expression (``model.expression_ext``: closed eyes, mouth corners,
    jaw), added as ``ext @ w_ext`` when a decode is given ``ext``; None decodes ``ext`` as zero.
    """

    u: np.ndarray
    w_shp: np.ndarray
    w_exp: np.ndarray
    w_ext: np.ndarray | None = None
    _torch: dict = field(default_factory=dict, repr=False)  # derived arrays: torch copies per device, the flat basis

    @property
    def n(self) -> int:
        return self.u.shape[0]

    def __getstate__(self) -> dict:  # pickled into data-loader workers: never ship device tensors
        d = self.__dict__.copy()
        d["_torch"] = {k: v for k, v in self._torch.items() if k in ("flat", "ext")}
        return d

    def flat(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean (3V,) and the joint basis (3V, 50) with rows x, y, z interleaved per vertex (built once)."""
        if "flat" not in self._torch:
            w = np.concatenate([self.w_shp, self.w_exp], axis=2).reshape(-1, N_SHAPE + N_EXP)
            self._torch["flat"] = (self.u.reshape(-1), w)
        return self._torch["flat"]

    def flat_ext(self) -> np.ndarray | None:
        """The extension's basis (3V, N_EXT), rows x, y, z interleaved per vertex; None without one."""
        if self.w_ext is None:
            return None
        if "ext" not in self._torch:
            self._torch["ext"] = self.w_ext.reshape(-1, self.w_ext.shape[-1])
        return self._torch["ext"]

    def torch(self, device: Any, dtype: Any) -> tuple[Any, Any]:
        import torch

        key = (str(device), dtype)
        if key not in self._torch:
            u, w = self.flat()
            self._torch[key] = (torch.as_tensor(u, device=device, dtype=dtype),
                                torch.as_tensor(w, device=device, dtype=dtype))
        return self._torch[key]

    def shape_model(self, params: Any, ext: Any = None) -> Any:
        """Model-space vertices (N, V, 3) from parameters (N, 62) (pose ignored) and the extended expression
        ``ext`` (N, N_EXT) or None (zero)."""
        coeffs = params[:, 12:]
        if _is_torch(params):
            u, w = self.torch(params.device, params.dtype)
        else:
            u, w = self.flat()
            u, w = u.astype(params.dtype, copy=False), w.astype(params.dtype, copy=False)
        s = u + coeffs @ w.T
        we = self.flat_ext() if ext is not None else None
        if we is not None:
            if _is_torch(params):
                import torch

                s = s + torch.as_tensor(ext, dtype=params.dtype, device=params.device) @ \
                    torch.as_tensor(we, dtype=params.dtype, device=params.device).T
            else:
                s = s + np.asarray(ext, dtype=params.dtype).reshape(params.shape[0], we.shape[1]) @ we.T.astype(params.dtype)
        return s.reshape(params.shape[0], self.n, 3)  # explicit V: -1 cannot be inferred for N = 0


