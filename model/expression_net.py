"""The expression stage's network: eyelid and lip points from small gray patches (``model.expression_patches``).

Two small CNNs, one for an eye patch (32x48; the left eye comes mirrored) and one for the mouth patch (56x48). Each
regresses its part's 68-point positions in anchor units (``expression_patches.to_units``). Input: (N, 1, H, W)
float32, gray / 255 - 0.5. Weights: ``model/weights/expression.pth`` (``python -m model.train_expression``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from model.expression_patches import EYE_SIZE, MOUTH_SIZE, PARTS

WEIGHTS = Path(__file__).resolve().parent / "weights" / "expression.pth"


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class PartNet(nn.Module):
    """Patch (N, 1, H, W) -> points (N, P, 2) in anchor units."""

    def __init__(self, size: tuple[int, int], n_points: int, width: int = 8) -> None:
        super().__init__()
        w = width
        self.n_points = n_points
        # about 2.2 M multiply-adds for an eye patch, 3.3 M for the mouth (0.5 ms a face on one CPU core)
        self.features = nn.Sequential(_block(1, w, 2), _block(w, 2 * w, 1), _block(2 * w, 3 * w, 2),
                                      _block(3 * w, 4 * w, 1), _block(4 * w, 6 * w, 2))
        h, wd = (size[0] + 7) // 8, (size[1] + 7) // 8
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(6 * w * h * wd, 64), nn.LeakyReLU(0.1, inplace=True),
                                  nn.Linear(64, 2 * n_points))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).view(-1, self.n_points, 2)


class ExpressionNet(nn.Module):
    """``eye`` (a PartNet for both eyes) and ``mouth``; ``mean_eye`` / ``mean_mouth`` buffers (P, 2) anchor units:
    the training set's mean points, which the heads predict offsets from."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.eye = PartNet(EYE_SIZE, len(PARTS[0].points), width)
        self.mouth = PartNet(MOUTH_SIZE, len(PARTS[2].points), width)
        self.register_buffer("mean_eye", torch.zeros(len(PARTS[0].points), 2))
        self.register_buffer("mean_mouth", torch.zeros(len(PARTS[2].points), 2))

    def forward(self, eyes: torch.Tensor, mouths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """eyes (2N, 1, 32, 48), mouths (N, 1, 56, 48) -> eye points (2N, 6, 2), mouth points (N, 20, 2)."""
        return self.eye(eyes) + self.mean_eye, self.mouth(mouths) + self.mean_mouth


def _export_bytes(net: nn.Module) -> bytes:
    import io
    import warnings

    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(2, 1, *EYE_SIZE), torch.zeros(1, 1, *MOUTH_SIZE)), buf,
                          input_names=["eyes", "mouths"], output_names=["eye_points", "mouth_points"],
                          dynamic_axes={"eyes": {0: "n2"}, "mouths": {0: "n"}, "eye_points": {0: "n2"},
                                        "mouth_points": {0: "n"}}, opset_version=17, dynamo=False)
    return buf.getvalue()


def build_runner(net: ExpressionNet, fast_path: bool = True, threads: int | None = None
                 ) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``run(eyes (2N, 1, 32, 48), mouths (N, 1, 56, 48)) -> (eye points, mouth points)``, float32 numpy.

    ``fast_path``: through ONNX Runtime (the export cached like the aligner's, ``model.ort_forward``), checked
    against the eager network within 1e-4 on random patches; eager torch when ORT is missing or disagrees."""
    net = net.eval()

    def eager(e: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            pe, pm = net(torch.from_numpy(e), torch.from_numpy(m))
        return pe.numpy(), pm.numpy()

    eager.kind = "eager"  # type: ignore[attr-defined]
    if not fast_path:
        return eager
    try:
        from model.ort_forward import cached_session

        session = cached_session(net, threads, exporter=_export_bytes)
    except Exception:  # onnxruntime missing, or the export failed on this torch build
        return eager

    def ort(e: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pe, pm = session.run(["eye_points", "mouth_points"], {"eyes": e, "mouths": m})
        return pe, pm

    rng = np.random.default_rng(0)
    e = rng.uniform(-0.5, 0.5, (6, 1, *EYE_SIZE)).astype(np.float32)
    m = rng.uniform(-0.5, 0.5, (3, 1, *MOUTH_SIZE)).astype(np.float32)
    (a, b), (c, d) = ort(e, m), eager(e, m)
    if max(float(np.abs(a - c).max()), float(np.abs(b - d).max())) > 1e-4:
        return eager
    ort.kind = "onnxruntime"  # type: ignore[attr-defined]
    return ort


def save_expression_net(path: str | Path, net: ExpressionNet, meta: dict[str, Any]) -> None:
    """Write the state dict with its metadata (training data, validation figures, width)."""
    torch.save({"state_dict": net.state_dict(), "meta": meta}, str(path))


def load_expression_net(path: str | Path | None = None) -> tuple[ExpressionNet, dict[str, Any]]:
    """(net in eval mode, metadata) from ``path`` (default ``WEIGHTS``). A missing, unreadable or mismatched file is a
    one-line ``CheckpointError`` (a broken install: the file ships with the package)."""
    from model.checkpoint import CheckpointError

    where = Path(path or WEIGHTS)
    hint = "reinstall the package, or run without the expression stage (--expression false)"
    if not where.is_file():
        raise CheckpointError(f"the expression stage's weights are missing: {where} ({hint})")
    try:
        ck = torch.load(str(where), map_location="cpu", weights_only=True)
        net = ExpressionNet(width=int(ck["meta"].get("width", 8)))
        net.load_state_dict(ck["state_dict"])
    except Exception as e:  # truncated, not a checkpoint, another network's layout
        raise CheckpointError(f"the expression stage's weights do not load: {where}: {type(e).__name__}: "
                              f"{str(e).splitlines()[0][:160] if str(e) else ''} ({hint})") from None
    return net.eval(), ck["meta"]
