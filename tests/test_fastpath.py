"""The inference fast path and the fused SGE: same outputs as the authors'-style computation, any memory layout."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from model.damdnet import DAMDNet, SpatialGroupEnhance
from model.fastpath import build_fast_path

REPO = Path(__file__).resolve().parent.parent


def authors_sge(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int) -> torch.Tensor:
    """The authors' SGE step for step (view to (b*g, c/g, h, w), pooled similarity, normalise, sigmoid gate)."""
    b, c, h, w = x.size()
    x = x.contiguous().view(b * groups, -1, h, w)
    xn = (x * x.mean(dim=(2, 3), keepdim=True)).sum(dim=1, keepdim=True)
    t = xn.view(b * groups, -1)
    t = t - t.mean(dim=1, keepdim=True)
    t = t / (t.std(dim=1, keepdim=True) + 1e-5)
    t = t.view(b, groups, h, w) * weight + bias
    return (x * torch.sigmoid(t.view(b * groups, 1, h, w))).view(b, c, h, w)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", [(1, 16, 60, 60), (3, 64, 8, 8), (2, 320, 4, 4)])
def test_fused_sge_equals_authors_reference(shape, channels_last):
    torch.manual_seed(0)
    b, c, h, w = shape
    sge = SpatialGroupEnhance(c // 2)
    with torch.no_grad():
        sge.weight.normal_()
        sge.bias.normal_()
    x = torch.randn(shape) * 3
    xin = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    with torch.no_grad():
        out = sge(xin)
        ref = authors_sge(x, sge.weight, sge.bias, c // 2)
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() < 1e-5


def test_sge_state_dict_keys_unchanged():
    assert set(SpatialGroupEnhance(8).state_dict()) == {"weight", "bias"}


@pytest.fixture(scope="module")
def compat_net():
    from model.assets import AssetError, AssetStore
    from model.checkpoint import load_file

    store = AssetStore()
    try:
        path = store.path("compat-checkpoint")
    except AssetError as exc:
        pytest.skip(str(exc))
    return load_file(path, store).net.eval()


@pytest.mark.parametrize("channels_last", [None, True, False])
def test_fast_path_within_1e4_of_eager_on_compat_weights(compat_net, channels_last):
    torch.manual_seed(1)
    fast = build_fast_path(compat_net, channels_last=channels_last)
    for n in (1, 5):
        x = torch.randn(n, 3, 120, 120)
        with torch.inference_mode():
            ref = compat_net(x)
        for xin in (x, x.contiguous(memory_format=torch.channels_last)):
            assert (fast(xin) - ref).abs().max().item() < 1e-4


def test_fast_path_matches_authors_structure(compat_net):
    sys.path.insert(0, str(REPO / "bench"))
    from authors_structure import load_authors_checkpoint
    from model.assets import AssetStore

    authors = load_authors_checkpoint(str(AssetStore().path("compat-checkpoint")))
    fast = build_fast_path(compat_net)
    x = torch.randn(2, 3, 120, 120)
    with torch.inference_mode():
        assert (fast(x) - authors(x)).abs().max().item() < 1e-4


def test_fast_path_falls_back_to_eager_when_not_within_tolerance():
    net = DAMDNet().eval()
    with pytest.warns(UserWarning):
        fwd = build_fast_path(net, tol=-1.0)
    x = torch.randn(1, 3, 120, 120)
    with torch.inference_mode():
        assert torch.equal(fwd(x), net(x))


def test_exact_fp32_turns_tf32_off_and_restores_it():
    from model.fastpath import exact_fp32

    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = True
    try:
        with exact_fp32():
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
