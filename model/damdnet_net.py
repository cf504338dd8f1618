"""DAMDNet: the Dual Attention MobDenseNet of "Robust 3D Face Alignment" (ICCV 2019 workshop).

Input (N, 3, 120, 120) float32, a BGR crop normalised as (x - 127.5) / 128; output (N, 62) whitened 3DMM parameters.
Stem 3x3/2 (32 ch) -> seven stages of MobDense blocks (widths 16, 24, 32, 64, 96, 160, 320; repeats 1, 2, 3, 4, 3, 3, 1;
expansion 1 then 6; strides 1, 2, 2, 2, 1, 2, 1), each block 1x1 expand -> 3x3 depthwise -> 1x1 project -> Spatial
Group-wise Enhance, then a dense connection (concatenate the block input, through a strided 1x1 on a stage's first block)
and a 1x1 transition back to the stage width; after each stage a squeeze-excitation channel attention; then 1x1 to
1280, 4x4 average pool, 1x1 to 62. Module names follow the authors' so their checkpoints load strictly.
"""
from __future__ import annotations

import torch
from torch import nn

STAGES = (  # (width, repeats, stride, expansion)
    (16, 1, 1, 1),
    (24, 2, 2, 6),
    (32, 3, 2, 6),
    (64, 4, 2, 6),
    (96, 3, 1, 6),
    (160, 3, 2, 6),
    (320, 1, 1, 6),
)


class SpatialGroupEnhance(nn.Module):
    """Spatial Group-wise Enhance over ``groups`` channel groups; (N, C, H, W) -> same.

    Per group: similarity of each position to the group's global average, normalised over positions (mean 0,
    unbiased std + 1e-5), affinely scaled by (weight, bias) and used as a sigmoid gate. The normalisation and the
    affine are folded into one ``addcmul`` (``sim * a + c`` with ``a = weight / (std + 1e-5)``,
    ``c = bias - mean * a``) after one fused ``std_mean``: fewer kernels per call than normalising the full map.
    Written with ``reshape`` so it accepts channels_last tensors.
    """

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups
        self.weight = nn.Parameter(torch.zeros(1, groups, 1, 1))
        self.bias = nn.Parameter(torch.ones(1, groups, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g = self.groups
        sim = (x * x.mean(dim=(2, 3), keepdim=True)).reshape(b, g, c // g, h, w).sum(dim=2)  # (b, g, h, w)
        std, mean = torch.std_mean(sim, dim=(2, 3), keepdim=True)
        a = self.weight / (std + 1e-5)
        gate = torch.sigmoid(torch.addcmul(self.bias - mean * a, sim, a))
        return (x.reshape(b, g, c // g, h, w) * gate.unsqueeze(2)).reshape(b, c, h, w)


class SELayer(nn.Module):
    """Squeeze-excitation channel attention (reduction 16, no biases); (N, C, H, W) -> same."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = channels // reduction
        self.fc = nn.Sequential(nn.Linear(channels, hidden, bias=False), nn.ReLU(inplace=True),
                                nn.Linear(hidden, channels, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x.mean(dim=(2, 3)))
        return x * y[:, :, None, None]


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))


class MobDenseBlock(nn.Module):
    """One MobDense block: (N, inplanes, H, W) -> (N, planes, H/stride, W/stride)."""

    def __init__(self, inplanes: int, planes: int, stride: int, expansion: int, first: bool) -> None:
        super().__init__()
        mid = inplanes * expansion
        self.conv1 = nn.Conv2d(inplanes, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _conv_bn(inplanes, inplanes, stride) if first else None
        self.transition_layer = _conv_bn(inplanes + planes, planes)
        self.sge = SpatialGroupEnhance(planes // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.sge(self.bn3(self.conv3(out)))
        skip = self.downsample(x) if self.downsample is not None else x
        out = torch.relu(torch.cat([out, skip], dim=1))
        return self.transition_layer(out)


class DAMDNet(nn.Module):
    """The DAMDNet_v1 network (2,755,456 parameters for 62 outputs)."""

    def __init__(self, num_classes: int = 62) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.relu = nn.ReLU(inplace=True)
        inplanes = 32
        for i, (planes, repeats, stride, expansion) in enumerate(STAGES, start=1):
            blocks = [MobDenseBlock(inplanes, planes, stride, expansion, first=True)]
            blocks += [MobDenseBlock(planes, planes, 1, expansion, first=False) for _ in range(repeats - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            setattr(self, f"seLayer{i}", SELayer(planes))
            inplanes = planes
        self.conv8 = nn.Conv2d(320, 1280, 1, bias=False)
        self.avgpool = nn.AvgPool2d(4, stride=1)
        self.conv9 = nn.Conv2d(1280, num_classes, 1, bias=False)
        self.num_classes = num_classes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 120, 120) -> (N, 32, 60, 60): the first convolution."""
        return self.relu(self.bn1(self.conv1(x)))

    def stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Stage ``i`` (1-based, ``len(STAGES)`` of them): its MobDense blocks, then its channel attention."""
        return getattr(self, f"seLayer{i}")(getattr(self, f"layer{i}")(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 120, 120) -> (N, 320, 4, 4) after the last stage's attention."""
        x = self.stem(x)
        for i in range(1, len(STAGES) + 1):
            x = self.stage(i, x)
        return x

    def regress(self, features: torch.Tensor) -> torch.Tensor:
        """(N, 320, 4, 4) features -> (N, num_classes) whitened parameters."""
        return self.conv9(self.avgpool(self.conv8(features))).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.regress(self.features(x))

    def head(self) -> nn.Conv2d:
        """The last layer (initialised by the trainer so the net starts at the mean parameters)."""
        return self.conv9
