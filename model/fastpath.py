"""Inference fast path: fold BatchNorm into convolutions, then freeze a traced TorchScript graph.

``build_fast_path(net)`` returns a callable (N, 3, 120, 120) -> (N, 62) that matches the eager network within
``tol`` (checked at build time on a random batch; on a mismatch the eager network is returned and a warning printed).
"""
from __future__ import annotations

import copy
import warnings
from typing import Callable

import torch
from torch import nn

Forward = Callable[[torch.Tensor], torch.Tensor]


def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new conv equal to ``bn(conv(x))`` in eval mode (BatchNorm folded into weight and bias)."""
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        b = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        fused.bias.copy_((b - bn.running_mean) * scale + bn.bias)
    return fused.to(conv.weight.device)


def fold_all_bn(net: nn.Module) -> nn.Module:
    """Copy of ``net`` (eval) with every Conv2d immediately followed by a BatchNorm2d folded, in Sequentials and in
    modules whose attributes are named ``convX``/``bnX`` or ``conv_Y``/``bn_Y`` pairs; the BatchNorms become Identity."""
    net = copy.deepcopy(net).eval()
    for module in list(net.modules()):
        if isinstance(module, nn.Sequential):
            items = list(module._modules.items())
            for (ka, a), (kb, b) in zip(items, items[1:]):
                if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
                    module._modules[ka] = fold_bn(a, b)
                    module._modules[kb] = nn.Identity()
        children = dict(module.named_children())
        for name, child in children.items():
            if not isinstance(child, nn.Conv2d) or not name.startswith("conv"):
                continue
            bn_name = "bn" + name[len("conv"):]
            bn = children.get(bn_name)
            if isinstance(bn, nn.BatchNorm2d):
                setattr(module, name, fold_bn(child, bn))
                setattr(module, bn_name, nn.Identity())
    return net


def build_fast_path(net: nn.Module, device: torch.device | str = "cpu", channels_last: bool = False,
                    tol: float = 1e-4, batch: int = 2) -> Forward:
    """Folded, traced and frozen version of ``net`` on ``device``; verified against eager within ``tol``."""
    device = torch.device(device)
    net = net.eval().to(device)
    example = torch.randn(batch, 3, 120, 120, device=device)
    with torch.inference_mode():
        ref = net(example)
    folded = fold_all_bn(net)
    if channels_last:
        folded = folded.to(memory_format=torch.channels_last)
    try:
        with torch.no_grad():
            traced = torch.jit.trace(folded, example, check_trace=False)
            fast = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
            for _ in range(2):  # let the profiling executor settle
                out = fast(example)
    except Exception as exc:  # pragma: no cover - depends on torch build
        warnings.warn(f"fast path unavailable ({exc}); using the eager network")
        return _eager(net)
    err = (out - ref).abs().max().item()
    if err > tol:
        warnings.warn(f"fast path differs from eager by {err:.2e} > {tol}; using the eager network")
        return _eager(net)

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return fast(x)

    return forward


def _eager(net: nn.Module) -> Forward:
    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return net(x)

    return forward
