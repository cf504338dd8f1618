"""An eager re-implementation of the authors' DAMDNet_v1 forward pass, as the speed baseline.

Written for this project from reading LeiJiangJNU/DAMDNet (``DAMDNet.py``, ``utils/se_module.py``); it keeps their
computation step for step, including what makes it slower than ours: the ``view``-based Spatial Group-wise Enhance with
an ``AdaptiveAvgPool2d`` and a separate ``nn.Sigmoid``, the ``nn.Sequential`` SE layer with ``AdaptiveAvgPool2d`` +
``view`` + ``expand_as``, Sequential downsample / transition layers. Module names equal theirs, so the authors'
checkpoints (and ``compat/damdnet_v1_random_init.pth.tar``) load strictly after stripping ``module.``.

    net = authors_damdnet_v1(); net.load_state_dict(state); net.eval()

Not used by the product; ``bench/bench_model.py`` checks it against ``model.damdnet_net.DAMDNet`` (1e-4) before timing.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class AuthorsSGE(nn.Module):
    """Spatial Group-wise Enhance as the authors wrote it: group view, pooled similarity, normalise, sigmoid gate."""

    def __init__(self, groups: int = 64) -> None:
        super().__init__()
        self.groups = groups
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.weight = nn.Parameter(torch.zeros(1, groups, 1, 1))
        self.bias = nn.Parameter(torch.ones(1, groups, 1, 1))
        self.sig = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.size()
        x = x.view(b * self.groups, -1, h, w)  # (b*g, c/g, h, w): needs a contiguous NCHW tensor
        xn = (x * self.avg_pool(x)).sum(dim=1, keepdim=True)
        t = xn.view(b * self.groups, -1)
        t = t - t.mean(dim=1, keepdim=True)
        t = t / (t.std(dim=1, keepdim=True) + 1e-5)
        t = t.view(b, self.groups, h, w) * self.weight + self.bias
        t = t.view(b * self.groups, 1, h, w)
        x = x * self.sig(t)
        return x.view(b, c, h, w)


class AuthorsSELayer(nn.Module):
    """Squeeze-excitation as in the authors' utils/se_module.py."""

    def __init__(self, channel: int, reduction: int = 16) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(channel, channel // reduction, bias=False), nn.ReLU(inplace=True),
                                nn.Linear(channel // reduction, channel, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, _, _ = x.size()
        y = self.avg_pool(x).view(b, c)
        y = self.fc(y).view(b, c, 1, 1)
        return x * y.expand_as(x)


class AuthorsBottleneck(nn.Module):
    """MobDense block: expand, depthwise, project, SGE; concatenate the (downsampled) input; ReLU; transition."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 transition_layer: nn.Module | None = None, expansion: int = 1) -> None:
        super().__init__()
        mid = inplanes * expansion
        self.conv1 = nn.Conv2d(inplanes, mid, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, kernel_size=3, stride=stride, padding=1, bias=False, groups=mid)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.transition_layer = transition_layer
        self.stride = stride
        self.sge = AuthorsSGE(int(planes / 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.sge(self.bn3(self.conv3(out)))
        if self.downsample is not None:
            residual = self.downsample(x)
        out = torch.cat([out, residual], 1)
        out = self.relu(out)
        return self.transition_layer(out)


class AuthorsDAMDNet(nn.Module):
    """The authors' DAMDNet class layout (layerN / seLayerN / conv8 / avgpool / conv9)."""

    def __init__(self, layers: tuple[int, ...] = (1, 2, 3, 4, 3, 3, 1), num_classes: int = 62) -> None:
        super().__init__()
        self.inplanes = 32
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.relu = nn.ReLU(inplace=True)
        spec = ((16, 1, 1), (24, 2, 6), (32, 2, 6), (64, 2, 6), (96, 1, 6), (160, 2, 6), (320, 1, 6))
        for i, ((planes, stride, expansion), n) in enumerate(zip(spec, layers), start=1):
            setattr(self, f"layer{i}", self._make_layer(planes, n, stride, expansion))
            setattr(self, f"seLayer{i}", AuthorsSELayer(planes))
        self.conv8 = nn.Conv2d(320, 1280, kernel_size=1, stride=1, bias=False)
        self.avgpool = nn.AvgPool2d(4, stride=1)
        self.conv9 = nn.Conv2d(1280, num_classes, kernel_size=1, stride=1, bias=False)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / n))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()

    def _transition(self, planes: int) -> nn.Sequential:
        # the authors' ``_downsample`` helper: a 1x1 from (current inplanes + planes) to planes, then BatchNorm
        return nn.Sequential(nn.Conv2d(self.inplanes + planes, planes, kernel_size=1, stride=1, bias=False),
                             nn.BatchNorm2d(planes))

    def _make_layer(self, planes: int, blocks: int, stride: int, expansion: int) -> nn.Sequential:
        downsample = nn.Sequential(nn.Conv2d(self.inplanes, self.inplanes, kernel_size=1, stride=stride, bias=False),
                                   nn.BatchNorm2d(self.inplanes))
        layers = [AuthorsBottleneck(self.inplanes, planes, stride=stride, downsample=downsample,
                                    transition_layer=self._transition(planes), expansion=expansion)]
        self.inplanes = planes
        for _ in range(1, blocks):
            layers.append(AuthorsBottleneck(self.inplanes, planes, transition_layer=self._transition(planes),
                                            expansion=expansion))
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.seLayer1(self.layer1(x))
        x = self.seLayer2(self.layer2(x))
        x = self.seLayer3(self.layer3(x))
        x = self.seLayer4(self.layer4(x))
        x = self.seLayer5(self.layer5(x))
        x = self.seLayer6(self.layer6(x))
        x = self.seLayer7(self.layer7(x))
        x = self.conv8(x)
        x = self.avgpool(x)
        x = self.conv9(x)
        return x.view(x.size(0), -1)


def authors_damdnet_v1(**kwargs) -> AuthorsDAMDNet:
    """DAMDNet_v1: stage repeats 1, 2, 3, 4, 3, 3, 1."""
    return AuthorsDAMDNet((1, 2, 3, 4, 3, 3, 1), **kwargs)


def load_authors_checkpoint(path: str) -> AuthorsDAMDNet:
    """The authors' ``{'state_dict': {'module.*': ...}}`` checkpoint into the authors' structure, strictly, eval mode.

    Only for checksum-verified files (it unpickles with ``weights_only=False`` when a plain load fails)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    state = obj.get("state_dict", obj)
    state = {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}
    net = authors_damdnet_v1()
    net.load_state_dict(state, strict=True)
    return net.eval()
