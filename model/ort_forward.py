"""CPU fast path through ONNX Runtime: the BatchNorm-folded network, rewritten for export, run by an ORT session.

``build_ort_forward(folded_net)`` returns a callable (N, 3, 120, 120) float32 tensor -> (N, 62) tensor, or raises
``OrtUnavailable`` (onnxruntime not installed, or the export failed). Exports are kept on disk by a hash of
the folded weights (``$DAMDNET_ONNX_CACHE``, else ``~/.cache/damdnet/onnx``), so a second load skips the export; a
damaged file in the cache is exported again.

Export rewrites (each exact to float rounding, checked by ``model.fastpath`` against the eager network):
- Spatial Group-wise Enhance with the crop's constant sizes: the group similarity as one MatMul and the unbiased std
  as a ReduceL2, so the graph has no Shape/Gather/Concat chains (about 300 nodes fewer for DAMDNet);
- DAMDNet's head ``conv8 (320->1280, 1x1) -> 4x4 average pool -> conv9 (1280->62, 1x1)`` is linear without biases,
  so it is one (62, 320) matrix on the spatially pooled features.
"""
from __future__ import annotations

import copy
import hashlib
import io
import os
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from model.damdnet_net import DAMDNet, SpatialGroupEnhance

CROP = 120
OPSET = 17


class OrtUnavailable(RuntimeError):
    """The ONNX Runtime path cannot be built here (missing package or failed export); the caller falls back."""


class ExportSGE(nn.Module):
    """SGE for a fixed (C, H, W): (N, C, H, W) -> same; the batch is the only dynamic size."""

    def __init__(self, sge: SpatialGroupEnhance, channels: int, height: int, width: int) -> None:
        super().__init__()
        self.g, self.cg, self.hw, self.h, self.w = sge.groups, channels // sge.groups, height * width, height, width
        self.weight = nn.Parameter(sge.weight.detach().reshape(1, self.g, 1, 1).clone(), requires_grad=False)
        self.bias = nn.Parameter(sge.bias.detach().reshape(1, self.g, 1, 1).clone(), requires_grad=False)
        self.inv_sqrt_n1 = 1.0 / float(np.sqrt(self.hw - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xg = x.reshape(-1, self.g, self.cg, self.hw)                       # (b, g, c/g, hw)
        m = xg.mean(dim=3, keepdim=True).transpose(2, 3)                   # (b, g, 1, c/g)
        sim = torch.matmul(m, xg)                                          # (b, g, 1, hw)
        centred = sim - sim.mean(dim=3, keepdim=True)
        std = torch.linalg.vector_norm(centred, dim=3, keepdim=True) * self.inv_sqrt_n1
        gate = torch.sigmoid(centred * (self.weight / (std + 1e-5)) + self.bias)
        return (xg * gate).reshape(-1, self.g * self.cg, self.h, self.w)


class ExportDAMDNet(nn.Module):
    """A folded DAMDNet with constant-size SGEs and the linear head as one matrix: (N, 3, 120, 120) -> (N, 62)."""

    def __init__(self, folded: DAMDNet) -> None:
        super().__init__()
        net = copy.deepcopy(folded).eval()
        shapes: dict[int, tuple[int, int, int]] = {}
        hooks = [m.register_forward_hook(lambda mod, inp, out: shapes.__setitem__(id(mod), tuple(out.shape[1:])))
                 for m in net.modules() if isinstance(m, SpatialGroupEnhance)]
        with torch.no_grad():
            net.features(torch.zeros(1, 3, CROP, CROP))
        for h in hooks:
            h.remove()
        for module in list(net.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, SpatialGroupEnhance):
                    setattr(module, name, ExportSGE(child, *shapes[id(child)]))
        self.net = net
        w8 = net.conv8.weight.detach().flatten(1)                         # (1280, 320)
        w9 = net.conv9.weight.detach().flatten(1)                         # (62, 1280)
        self.head = nn.Parameter((w9.double() @ w8.double()).float(), requires_grad=False)  # (62, 320)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.net.features(x).mean(dim=(2, 3))                          # 4x4 pool of a 4x4 map
        return f @ self.head.t()


def export_module(folded: nn.Module) -> nn.Module:
    """The module that is exported: DAMDNet rewritten (see the module docstring), any other network as it is."""
    if isinstance(folded, DAMDNet) and folded.conv8.bias is None and folded.conv9.bias is None:
        return ExportDAMDNet(folded).eval()
    return folded


def weights_digest(module: nn.Module) -> str:
    """sha256 over the module's class, parameter and buffer names, shapes and values (the export cache key)."""
    h = hashlib.sha256(f"{type(module).__qualname__}|opset{OPSET}|torch{torch.__version__}".encode())
    for name, t in list(module.state_dict().items()):
        arr = t.detach().cpu().contiguous().numpy()
        h.update(f"{name}:{arr.dtype}:{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()[:32]


def cache_dir() -> Path:
    """Where exports are kept: ``$DAMDNET_ONNX_CACHE``, else ``~/.cache/damdnet/onnx``."""
    return Path(os.environ.get("DAMDNET_ONNX_CACHE") or Path.home() / ".cache" / "damdnet" / "onnx")


def export_onnx_bytes(module: nn.Module) -> bytes:
    """ONNX model bytes of ``module`` for (N, 3, 120, 120) float32 input named ``crops``, dynamic batch."""
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(1, 3, CROP, CROP),), buf, input_names=["crops"],
                          output_names=["params"], dynamic_axes={"crops": {0: "n"}, "params": {0: "n"}},
                          opset_version=OPSET, dynamo=False)
    return buf.getvalue()


def cached_session(module: nn.Module, threads: int | None = None,
                   exporter: Callable[[nn.Module], bytes] | None = None):
    """An ORT session of ``module``'s export (``exporter(module) -> ONNX bytes``, default ``export_onnx_bytes``): from the cache when the file there
    loads, else exported now and written to the cache atomically (a damaged or truncated file is replaced)."""
    path = cache_dir() / f"{weights_digest(module)}.onnx"
    if path.is_file():
        try:
            return make_session(path.read_bytes(), threads)
        except Exception:  # damaged or truncated: export again
            pass
    data = (exporter or export_onnx_bytes)(module)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:  # a read-only home: run without the cache
        pass
    return make_session(data, threads)


def make_session(model_bytes: bytes, threads: int | None = None):
    """An ORT CPU session with all graph optimisations and ``threads`` intra-op threads (default torch's count)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = int(threads or torch.get_num_threads())
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def build_ort_forward(folded: nn.Module, threads: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """(N, 3, 120, 120) float32 CPU tensor -> (N, 62) float32 tensor through ONNX Runtime (see the module doc).

    Raises ``OrtUnavailable`` when onnxruntime is missing or the export fails."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise OrtUnavailable(f"onnxruntime is not installed ({exc})") from exc
    try:
        session = cached_session(export_module(folded.cpu().eval()), threads)
    except Exception as exc:  # export or session failure depends on the torch/ORT build
        raise OrtUnavailable(f"ONNX export or session failed ({type(exc).__name__}: {exc})") from exc
    run = session.run

    def forward(x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().cpu().contiguous().numpy()
        return torch.from_numpy(run(["params"], {"crops": arr})[0])

    forward.session = session  # type: ignore[attr-defined]
    return forward
