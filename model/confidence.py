"""Face confidence: is there a face in this 120x120 aligner crop? A tiny CNN, independent of the detector and of
the 3DMM regressor, so it scores every model's crops alike (ours, the authors', 3DDFA_V2's) and holds at profile,
where the detector fails.

    scorer = FaceScorer.load()                   # model/weights/face_confidence.pth (trained by model.train_confidence)
    conf = scorer(crops)                         # crops (N, 120, 120, 3) uint8 BGR -> (N,) float32 in [0, 1]

Input: the crop exactly as the aligner cut it (``model.roi.crop_roi``: zero padding beyond the frame), 2x2
average-pooled to 60x60, normalised ``(x - 127.5) / 128``. Network: four 3x3 stride-2 conv + BN + ReLU layers
(16, 32, 48, 64 channels: 60 -> 30 -> 15 -> 8 -> 4), a linear layer on the 4x4x64 map, a sigmoid. 47,857
parameters; the weights file is 0.2 MB. It runs with plain torch on the aligner's device (batched with the
aligner's crops). A face counts as present when roughly the crop a tracker would cut holds it: framed within about
0.2 of the crop side, 0.75-1.4x the usual scale, any yaw up to profile, partly occluded or cut by the frame border.
Parts of a face (shifted off by more than half a face, zoomed into an eye), tiny faces and non-faces score low.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model.roi import CROP_SIZE

WEIGHTS = Path(__file__).resolve().parent / "weights" / "face_confidence.pth"
FORMAT = "face-confidence/1"
POOL = 2
INPUT = CROP_SIZE // POOL  # 60


class FaceNet(nn.Module):
    """(N, 3, 120, 120) float32 normalised crops -> (N,) logits of "a face fills this crop"."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 48, 64)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            c = w
        self.pool = nn.AvgPool2d(POOL)
        self.features = nn.Sequential(*layers)
        side = INPUT
        for _ in widths:
            side = (side + 1) // 2
        self.head = nn.Linear(c * side * side, 1)
        self.widths = tuple(widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(self.pool(x))
        return self.head(f.flatten(1))[:, 0]


def normalise(crops: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 crops (N, 120, 120, 3) BGR -> float32 (N, 3, 120, 120) ``(x - 127.5) / 128`` (the aligner's input)."""
    t = torch.as_tensor(np.ascontiguousarray(crops)) if isinstance(crops, np.ndarray) else crops
    return (t.permute(0, 3, 1, 2).float() - 127.5) / 128.0


class FaceScorer:
    """The loaded face/no-face classifier. ``scorer(crops uint8 (N,120,120,3))`` or ``scorer.score_tensor(x)`` on
    the aligner's normalised batch -> (N,) float32 confidence in [0, 1]. ``meta``: how it was trained and measured."""

    def __init__(self, net: FaceNet, device: str | torch.device = "cpu", meta: dict | None = None) -> None:
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.meta = meta or {}

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> "FaceScorer":
        """Load the committed weights (or ``path``); raises CheckpointError (one line) for a missing or foreign
        file."""
        from model.checkpoint import CheckpointError

        p = Path(path) if path is not None else WEIGHTS
        if not p.is_file():
            raise CheckpointError(f"face confidence weights not found: {p} (train them: python -m "
                                  f"model.train_confidence)")
        ck = torch.load(p, map_location="cpu", weights_only=True)
        if not isinstance(ck, dict) or ck.get("format") != FORMAT:
            raise CheckpointError(f"{p} is not a face confidence checkpoint (format {FORMAT})")
        net = FaceNet(tuple(ck["widths"]))
        net.load_state_dict(ck["state_dict"])
        return cls(net, device, ck.get("meta", {}))

    @torch.no_grad()
    def score_tensor(self, x: torch.Tensor) -> np.ndarray:
        """(N, 3, 120, 120) normalised float32 -> (N,) float32 in [0, 1]."""
        if x.shape[0] == 0:
            return np.zeros(0, np.float32)
        return torch.sigmoid(self.net(x.to(self.device).float())).cpu().numpy().astype(np.float32)

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        """uint8 crops (N, 120, 120, 3) BGR -> (N,) float32 confidence in [0, 1]."""
        crops = np.asarray(crops, np.uint8).reshape(-1, CROP_SIZE, CROP_SIZE, 3)
        return self.score_tensor(normalise(crops))


def save_scorer(path: str | os.PathLike, net: FaceNet, meta: dict) -> None:
    """Write ``net`` (CPU, eval) with ``meta`` in the format ``FaceScorer.load`` reads (weights_only-safe)."""
    sd = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    torch.save({"format": FORMAT, "widths": list(net.widths), "state_dict": sd, "meta": meta}, str(path))
