"""Backbone registry: every network that regresses the 62 parameters from a 120x120 crop.

- ``damdnet``: the product (``model.damdnet_net.DAMDNet``), v1 whitening, v1 decode convention.
- ``mobilenet_v1``: 3DDFA_V2's MobileNetV1 (``widen_factor`` 0.5 or 1.0), V2 whitening, v2 convention; loads
  ``mb05_120x120.pth`` / ``mb1_120x120.pth`` (head stored as ``fc_param``; the extra ``fc_lm`` head is dropped).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from model.damdnet_net import DAMDNet


class DepthWiseBlock(nn.Module):
    """3x3 depthwise + BN + ReLU, 1x1 pointwise + BN + ReLU: (N, cin, H, W) -> (N, cout, H/stride, W/stride)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False)
        self.bn_dw = nn.BatchNorm2d(cin)
        self.conv_sep = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn_sep = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn_dw(self.conv_dw(x)))
        return self.relu(self.bn_sep(self.conv_sep(x)))


_MB_LAYOUT = [  # name, cin, cout, stride (in units of the width factor)
    ("dw2_1", 32, 64, 1), ("dw2_2", 64, 128, 2), ("dw3_1", 128, 128, 1), ("dw3_2", 128, 256, 2),
    ("dw4_1", 256, 256, 1), ("dw4_2", 256, 512, 2), ("dw5_1", 512, 512, 1), ("dw5_2", 512, 512, 1),
    ("dw5_3", 512, 512, 1), ("dw5_4", 512, 512, 1), ("dw5_5", 512, 512, 1), ("dw5_6", 512, 1024, 2),
    ("dw6", 1024, 1024, 1),
]


class MobileNetV1(nn.Module):
    """3DDFA_V2's MobileNetV1 regressor: (N, 3, 120, 120) -> (N, num_classes)."""

    def __init__(self, widen_factor: float = 0.5, num_classes: int = 62) -> None:
        super().__init__()
        w = lambda c: int(c * widen_factor)  # noqa: E731
        self.conv1 = nn.Conv2d(3, w(32), 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w(32))
        self.relu = nn.ReLU(inplace=True)
        self.block_names = [name for name, *_ in _MB_LAYOUT]
        for name, cin, cout, stride in _MB_LAYOUT:
            setattr(self, name, DepthWiseBlock(w(cin), w(cout), stride))
        self.fc = nn.Linear(w(1024), num_classes)
        self.widen_factor = widen_factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for name in self.block_names:
            x = getattr(self, name)(x)
        return self.fc(x.mean(dim=(2, 3)))

    def head(self) -> nn.Linear:
        return self.fc


BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "damdnet": DAMDNet,
    "mobilenet_v1": MobileNetV1,
}

# Whitening and decode convention each backbone's published weights use.
DEFAULT_SPACE = {"damdnet": "v1", "mobilenet_v1": "v2"}


def build_backbone(name: str, **kwargs: Any) -> nn.Module:
    """Construct backbone ``name`` (see ``BACKBONES``) with keyword arguments (e.g. ``widen_factor``)."""
    try:
        return BACKBONES[name](**kwargs)
    except KeyError:
        raise ValueError(f"unknown backbone '{name}' (known: {', '.join(BACKBONES)})") from None


def adapt_state_dict(name: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map an upstream state dict to ours: strip ``module.``, rename 3DDFA_V2's ``fc_param`` head, drop ``fc_lm``."""
    out = {}
    for k, v in state.items():
        k = k[7:] if k.startswith("module.") else k
        if name == "mobilenet_v1":
            if k.startswith("fc_lm."):
                continue
            if k.startswith("fc_param."):
                k = "fc." + k[len("fc_param."):]
        out[k] = v
    return out
