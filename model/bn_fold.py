"""BatchNorm folding: a network's Conv2d + BatchNorm2d pairs as one biased Conv2d, and back.

``fold_all_bn(net)`` serves inference (the ONNX / TorchScript fast paths) and BN-free training (``model.train``,
``fold_bn: true``: about a third of a CPU training step is BatchNorm forward and backward). ``unfold_bn(folded,
template)`` writes a folded network back into the original layout (identity BatchNorms carrying the folded bias), so
a checkpoint trained folded loads like any other. Both are exact in eval mode up to float rounding.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def bn_pairs(net: nn.Module) -> list[tuple[str, str]]:
    """(conv path, bn path) of every Conv2d directly followed by a BatchNorm2d: consecutive entries of a Sequential,
    or attributes named ``convX``/``bnX`` (``conv_Y``/``bn_Y``) of one module. Paths as in ``named_modules``."""
    pairs = []
    for prefix, module in net.named_modules():
        pre = f"{prefix}." if prefix else ""
        if isinstance(module, nn.Sequential):
            items = list(module._modules.items())
            for (ka, a), (kb, b) in zip(items, items[1:]):
                if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
                    pairs.append((pre + ka, pre + kb))
        children = dict(module.named_children())
        for name, child in children.items():
            if isinstance(child, nn.Conv2d) and name.startswith("conv"):
                bn_name = "bn" + name[len("conv"):]
                if isinstance(children.get(bn_name), nn.BatchNorm2d):
                    pairs.append((pre + name, pre + bn_name))
    return list(dict.fromkeys(pairs))


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


def _parent(net: nn.Module, path: str) -> tuple[nn.Module, str]:
    head, _, leaf = path.rpartition(".")
    return (net.get_submodule(head) if head else net), leaf


def fold_all_bn(net: nn.Module) -> nn.Module:
    """Copy of ``net`` (eval) with every ``bn_pairs`` pair folded into one biased conv; the BatchNorms become
    Identity (same module paths, so the copy runs the original ``forward``)."""
    net = copy.deepcopy(net).eval()
    for conv_path, bn_path in bn_pairs(net):
        parent, conv_name = _parent(net, conv_path)
        bn_parent, bn_name = _parent(net, bn_path)
        setattr(parent, conv_name, fold_bn(net.get_submodule(conv_path), net.get_submodule(bn_path)))
        setattr(bn_parent, bn_name, nn.Identity())
    return net


def unfold_bn(folded: nn.Module, template: nn.Module) -> nn.Module:
    """Copy of ``template`` (the unfolded architecture) holding ``folded``'s weights: each conv takes the folded
    weight, each BatchNorm becomes an identity that adds the folded bias (mean 0, var 1, scale sqrt(1 + eps)). Every
    other parameter and buffer is copied by name. In eval mode the result equals ``folded``."""
    out = copy.deepcopy(template)
    src = dict(folded.named_parameters())
    src.update(dict(folded.named_buffers()))
    paired = set()
    with torch.no_grad():
        for conv_path, bn_path in bn_pairs(out):
            conv, bn = out.get_submodule(conv_path), out.get_submodule(bn_path)
            conv.weight.copy_(src[conv_path + ".weight"])
            bias = src.get(conv_path + ".bias")
            if conv.bias is not None:  # a template conv with a bias keeps it at 0: the BatchNorm carries it
                conv.bias.zero_()
                paired.add(conv_path + ".bias")
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0)
            bn.weight.fill_(float(torch.sqrt(torch.tensor(1.0 + bn.eps))))
            bn.bias.copy_(bias if bias is not None else torch.zeros_like(bn.bias))
            paired.update({conv_path + ".weight", bn_path + ".weight", bn_path + ".bias", bn_path + ".running_mean",
                           bn_path + ".running_var", bn_path + ".num_batches_tracked"})
        for name, t in list(out.named_parameters()) + list(out.named_buffers()):
            if name not in paired:
                t.copy_(src[name])
    return out
