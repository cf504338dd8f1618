"""The inference fast path and the fused SGE: same outputs as the authors'-style computation, any memory layout."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from model.damdnet_net import DAMDNet, SpatialGroupEnhance
from model.fastpath import FastPathError, build_fast_path, build_torchscript, fold_all_bn

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
def test_fused_and_export_sge_equal_authors_reference(shape, channels_last):
    """Ours (any layout) and the constant-size export form (model.ort_forward.ExportSGE) against the authors' SGE."""
    from model.ort_forward import ExportSGE

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
        export = ExportSGE(sge, c, h, w)(xin)
    assert out.shape == ref.shape == export.shape
    assert (out - ref).abs().max().item() < 1e-5
    assert (export - ref).abs().max().item() < 1e-5


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
def test_torchscript_within_1e4_of_eager_on_compat_weights(compat_net, channels_last):
    torch.manual_seed(1)
    fast = build_torchscript(compat_net, channels_last=channels_last)
    assert fast.kind == "torchscript"
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


# -- ONNX Runtime ---------------------------------------------------------------------------------------------------
def _trained_like(net: DAMDNet) -> DAMDNet:
    """Random BatchNorm statistics and SGE affines, so folding and the SGE rewrite have something to get wrong."""
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            elif isinstance(m, SpatialGroupEnhance):
                m.weight.normal_(generator=gen)
                m.bias.normal_(generator=gen)
    return net.eval()


def test_export_damdnet_equals_eager_and_folds_the_head():
    from model.ort_forward import ExportDAMDNet

    net = _trained_like(DAMDNet())
    export = ExportDAMDNet(fold_all_bn(net))
    assert export.head.shape == (62, 320)
    x = torch.randn(3, 3, 120, 120)
    with torch.no_grad():
        assert (export(x) - net(x)).abs().max().item() < 1e-4


def test_ort_fast_path_matches_eager_and_authors(compat_net):
    sys.path.insert(0, str(REPO / "bench"))
    from authors_structure import load_authors_checkpoint
    from model.assets import AssetStore

    fast = build_fast_path(compat_net, kind="onnxruntime")
    assert fast.kind == "onnxruntime"
    authors = load_authors_checkpoint(str(AssetStore().path("compat-checkpoint")))
    torch.manual_seed(3)
    for n in (1, 5, 17):
        x = torch.randn(n, 3, 120, 120)
        with torch.inference_mode():
            assert (fast(x) - compat_net(x)).abs().max().item() < 1e-4
            assert (fast(x) - authors(x)).abs().max().item() < 1e-4
    assert fast(torch.randn(2, 3, 120, 120).contiguous(memory_format=torch.channels_last)).shape == (2, 62)


def test_ort_export_has_no_shape_arithmetic():
    """The constant-size SGE keeps Shape/Gather/Concat chains out of the graph (they cost ~1.4 ms at batch 1)."""
    import onnx
    from model.ort_forward import export_module, export_onnx_bytes

    model = onnx.load_from_string(export_onnx_bytes(export_module(fold_all_bn(DAMDNet().eval()))))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Shape") == 0 and ops.count("Gather") == 0, sorted(set(ops))
    assert ops.count("MatMul") >= 17  # one per SGE (17 blocks) + the head


def test_ort_export_cache_reused_and_repaired(tmp_path, monkeypatch):
    import model.ort_forward as of

    monkeypatch.setenv("DAMDNET_ONNX_CACHE", str(tmp_path))
    net = _trained_like(DAMDNet())
    calls = []
    real_export = of.export_onnx_bytes
    monkeypatch.setattr(of, "export_onnx_bytes", lambda m: calls.append(1) or real_export(m))
    x = torch.randn(1, 3, 120, 120)
    with torch.inference_mode():
        ref = net(x)
    f1 = build_fast_path(net, kind="onnxruntime")
    files = list(tmp_path.glob("*.onnx"))
    assert len(calls) == 1 and len(files) == 1
    f2 = build_fast_path(net, kind="onnxruntime")
    assert len(calls) == 1  # read from the cache
    assert (f2(x) - ref).abs().max().item() < 1e-4 and torch.equal(f1(x), f2(x))
    files[0].write_bytes(files[0].read_bytes()[:1000])  # a truncated file is exported again
    f3 = build_fast_path(net, kind="onnxruntime")
    assert len(calls) == 2 and (f3(x) - ref).abs().max().item() < 1e-4
    other = _trained_like(DAMDNet())
    with torch.no_grad():
        other.conv9.weight.mul_(2)  # other weights, other file
    build_fast_path(other, kind="onnxruntime")
    assert len(list(tmp_path.glob("*.onnx"))) == 2


def test_fast_path_kinds_and_fallbacks(monkeypatch):
    import model.ort_forward as of

    net = DAMDNet().eval()
    with pytest.raises(FastPathError, match="not one of"):
        build_fast_path(net, kind="tensorrt")
    with pytest.raises(FastPathError, match="runs on the CPU"):
        build_fast_path(net, device="cuda", kind="onnxruntime")
    assert build_fast_path(net, kind="none").kind == "eager"

    def unavailable(*a, **k):
        raise of.OrtUnavailable("onnxruntime is not installed (test)")

    monkeypatch.setattr(of, "build_ort_forward", unavailable)
    with pytest.raises(FastPathError, match="not installed"):
        build_fast_path(net, kind="onnxruntime")
    with pytest.warns(UserWarning, match="using TorchScript"):
        assert build_fast_path(net, kind="auto").kind == "torchscript"


def test_config_offers_exactly_the_fast_paths():
    from model.fastpath import FAST_PATHS
    from stream.config import CHOICES

    assert CHOICES["fast_path"] == FAST_PATHS
