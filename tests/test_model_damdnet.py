"""model.damdnet_net: parameter count, the authors' checkpoint format and recorded output, SGE, shapes."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from model.assets import AssetStore
from model.checkpoint import load_file
from model.damdnet_net import DAMDNet, SELayer, SpatialGroupEnhance


@pytest.fixture(scope="module")
def store(assets_dir) -> AssetStore:
    return AssetStore(root=assets_dir, allow_download=False)


def test_parameter_count_and_keys_match_the_authors(assets_dir):
    net = DAMDNet()
    assert sum(p.numel() for p in net.parameters()) == 2_755_456
    shapes = json.loads((assets_dir / "compat/damdnet_v1_state_dict_shapes.json").read_text())
    if isinstance(shapes, dict) and "shapes" in shapes:
        shapes = shapes["shapes"]
    ours = {k: list(v.shape) for k, v in net.state_dict().items()}
    theirs = {(k[7:] if k.startswith("module.") else k): list(v) for k, v in shapes.items()}
    assert ours == theirs


def test_output_shape_and_plain_module():
    net = DAMDNet().eval()
    assert isinstance(net, torch.nn.Module)
    with torch.no_grad():
        assert net(torch.randn(3, 3, 120, 120)).shape == (3, 62)
        assert DAMDNet(num_classes=10).eval()(torch.randn(1, 3, 120, 120)).shape == (1, 10)


def test_compat_checkpoint_reproduces_the_authors_output(store):
    path = store.path("compat-checkpoint")
    raw = torch.load(path, map_location="cpu", weights_only=False)
    assert isinstance(raw, dict) and "state_dict" in raw  # the authors' format, as the asset claims
    assert all(k.startswith("module.") for k in raw["state_dict"])
    loaded = load_file(path, store)  # strict load inside
    assert loaded.backbone == "damdnet" and loaded.convention == "v1" and loaded.whitening.name == "v1"
    assert not loaded.net.training
    io = np.load(store.path("compat-io"))
    x, want = torch.from_numpy(io["input"]), io["output"]
    assert x.shape == (4, 3, 120, 120) and want.shape == (4, 62)
    with torch.no_grad():
        got = loaded.net(x).numpy()
    err = float(np.abs(got - want).max())
    print(f"\ncompat checkpoint: max abs error vs the authors' recorded output {err:.3e} "
          f"(output scale {np.abs(want).max():.3g})")
    assert err < 1e-4
    # the check can fail: train-mode BatchNorm (batch statistics) changes the output visibly
    loaded.net.train()
    with torch.no_grad():
        assert np.abs(loaded.net(x).numpy() - want).max() > 1e-2
    loaded.net.eval()


def _sge_reference(x: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Spatial Group-wise Enhance written out group by group, sample by sample."""
    b, c, h, w = x.shape
    cg = c // groups
    out = torch.empty_like(x)
    for n in range(b):
        for g in range(groups):
            xs = x[n, g * cg:(g + 1) * cg].double()  # (cg, h, w)
            avg = xs.mean(dim=(1, 2))  # (cg,)
            sim = (xs * avg[:, None, None]).sum(0)  # (h, w)
            flat = sim.flatten()
            flat = (flat - flat.mean()) / (flat.std(unbiased=True) + 1e-5)
            t = flat.reshape(h, w) * weight[0, g, 0, 0].double() + bias[0, g, 0, 0].double()
            out[n, g * cg:(g + 1) * cg] = (xs * torch.sigmoid(t)).to(x.dtype)
    return out


@pytest.mark.parametrize("channels_last", [False, True])
def test_sge_matches_per_group_reference(channels_last):
    torch.manual_seed(0)
    sge = SpatialGroupEnhance(8)
    with torch.no_grad():
        sge.weight.normal_()
        sge.bias.normal_()
    x = torch.randn(2, 16, 7, 5)
    want = _sge_reference(x, 8, sge.weight, sge.bias)
    xin = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    if channels_last:
        assert not xin.is_contiguous()
    with torch.no_grad():
        got = sge(xin)
    assert got.shape == x.shape
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)


def test_whole_network_runs_channels_last(store):
    net = load_file(store.path("compat-checkpoint"), store).net
    x = torch.from_numpy(np.load(store.path("compat-io"))["input"])
    with torch.no_grad():
        ref = net(x)
        cl = net.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    assert (cl - ref).abs().max().item() < 1e-4


def test_se_layer_is_squeeze_excitation():
    torch.manual_seed(1)
    se = SELayer(32)
    assert [type(m).__name__ for m in se.fc] == ["Linear", "ReLU", "Linear", "Sigmoid"]
    assert se.fc[0].weight.shape == (2, 32) and se.fc[0].bias is None
    x = torch.randn(2, 32, 4, 4)
    with torch.no_grad():
        y = torch.sigmoid(torch.relu(x.mean((2, 3)) @ se.fc[0].weight.T) @ se.fc[2].weight.T)
        assert torch.allclose(se(x), x * y[:, :, None, None], atol=1e-6)


def test_bench_baseline_is_the_same_network(store):
    """bench/authors_structure.py (the speed baseline) loads the compat checkpoint and computes what ours does."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    try:
        from authors_structure import AuthorsSGE, load_authors_checkpoint
    finally:
        sys.path.pop(0)
    path = store.path("compat-checkpoint")
    theirs = load_authors_checkpoint(str(path))
    ours = load_file(path, store).net
    assert sum(p.numel() for p in theirs.parameters()) == 2_755_456
    io = np.load(store.path("compat-io"))
    x = torch.from_numpy(io["input"])
    with torch.no_grad():
        assert np.abs(theirs(x).numpy() - io["output"]).max() < 1e-4
        xr = torch.randn(3, 3, 120, 120)
        assert (theirs(xr) - ours(xr)).abs().max().item() < 1e-4
    sge = AuthorsSGE(4)
    with torch.no_grad():
        sge.weight.normal_()
    xs = torch.randn(2, 8, 5, 6)
    assert torch.allclose(sge(xs), _sge_reference(xs, 4, sge.weight, sge.bias), atol=1e-5)
