"""Inference fast path: fold BatchNorm into convolutions, then run the folded network through ONNX Runtime (CPU) or a
frozen TorchScript graph (CPU fallback, CUDA).

``build_fast_path(net, kind=...)`` returns a callable (N, 3, 120, 120) -> (N, 62) that matches the eager network
within ``tol`` (checked at build time on a random batch). Its ``kind`` attribute says what runs: ``onnxruntime``,
``torchscript`` or ``eager``. ``kind="auto"`` takes ONNX Runtime on the CPU (2.4-2.5x faster than TorchScript for
DAMDNet at batch 1: bench/RESULTS.md, "Fast path: ONNX Runtime"), TorchScript on CUDA, and falls back with a warning
(ORT -> TorchScript -> eager) when a build fails or disagrees with eager.
"""
from __future__ import annotations

import contextlib
import copy
import time
import warnings
from typing import Callable

import torch
from torch import nn

from model.bn_fold import fold_all_bn, fold_bn  # noqa: F401  (re-exported: the fast paths fold first)
from model.errors import UserError

Forward = Callable[[torch.Tensor], torch.Tensor]
FAST_PATHS = ("auto", "onnxruntime", "torchscript", "none")


class FastPathError(UserError, RuntimeError):
    """A fast path that was asked for by name cannot be built here (one line)."""


@contextlib.contextmanager
def exact_fp32():
    """Disable TF32 in CUDA convolutions and matmuls inside the block (restored after): fp32 means fp32."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def build_fast_path(net: nn.Module, device: torch.device | str = "cpu", channels_last: bool | None = None,
                    tol: float = 1e-4, batch: int = 2, kind: str = "auto") -> Forward:
    """The fast forward of ``net`` on ``device`` (``kind``: auto, onnxruntime, torchscript, none), verified against
    eager within ``tol``. ``onnxruntime`` named on CUDA, or failing, raises ``FastPathError``; ``auto`` falls back.
    The returned callable has a ``kind`` attribute (onnxruntime, torchscript, eager)."""
    if kind not in FAST_PATHS:
        raise FastPathError(f"fast path {kind!r} is not one of {', '.join(FAST_PATHS)}")
    device = torch.device(device)
    if kind == "none":
        return _eager(net.eval().to(device))
    if kind == "onnxruntime" and device.type != "cpu":
        raise FastPathError(f"the onnxruntime fast path runs on the CPU, not {device.type} "
                            "(use fast_path auto or torchscript there)")
    if kind in ("auto", "onnxruntime") and device.type == "cpu":
        try:
            return build_ort_checked(net, tol, batch)
        except FastPathError as exc:
            if kind == "onnxruntime":
                raise
            warnings.warn(f"{exc}; using TorchScript")
    return build_torchscript(net, device, channels_last, tol, batch)


def _example(batch: int, device: torch.device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1234)
    return torch.randn(batch, 3, 120, 120, generator=gen).to(device)


def build_ort_checked(net: nn.Module, tol: float = 1e-4, batch: int = 2) -> Forward:
    """ONNX Runtime forward of the folded ``net`` (CPU), checked against eager at batch ``batch`` and 1 within
    ``tol``; raises ``FastPathError`` when it cannot be built or disagrees."""
    from model.ort_forward import OrtUnavailable, build_ort_forward

    net = net.eval().cpu()
    try:
        fast = build_ort_forward(fold_all_bn(net))
    except OrtUnavailable as exc:
        raise FastPathError(f"onnxruntime fast path unavailable: {exc}") from None
    example = _example(batch, torch.device("cpu"))
    with torch.inference_mode():
        ref = net(example)
    err = max((fast(example) - ref).abs().max().item(), (fast(example[:1]) - ref[:1]).abs().max().item())
    if not err <= tol:
        raise FastPathError(f"onnxruntime fast path differs from eager by {err:.2e} > {tol}")
    fast.kind = "onnxruntime"  # type: ignore[attr-defined]
    return fast


def build_torchscript(net: nn.Module, device: torch.device | str = "cpu", channels_last: bool | None = None,
                      tol: float = 1e-4, batch: int = 2) -> Forward:
    """Folded, traced and frozen version of ``net`` on ``device``; verified against eager within ``tol``.

    Two builds, chosen by measurement (bench/RESULTS.md, "Fast path choices"): (a) channels_last, frozen *without*
    ``torch.jit.optimize_for_inference`` (its MKLDNN layout conversions around every non-conv op, e.g. DAMDNet's
    17 SGE and 7 SE layers, cost more than they save: 1.3-1.7x faster for DAMDNet at batch 1); (b) contiguous,
    frozen and ``optimize_for_inference``'d (better for a pure conv stack like MobileNetV1 at some batch sizes).
    Each is checked against eager on a contiguous and a channels_last input (within ``tol``); with
    ``channels_last=None`` both are built and the faster at batch 1 (median of 7 round-robin calls, ~0.2 s) is
    returned; ``True`` forces (a), ``False`` forces (b). Inputs are converted to the build's layout per call. If
    no build is within ``tol`` (or they fail), the eager network is returned with a warning.
    """
    device = torch.device(device)
    net = net.eval().to(device)
    example = _example(batch, device)
    folded = fold_all_bn(net)
    candidates = {None: [(True, False), (False, True)], True: [(True, False)], False: [(False, True)]}[channels_last]
    built = []
    with exact_fp32():  # verify the rewrite, not TF32 rounding (~1e-3 on an H100, which rejected every build)
        with torch.inference_mode():
            ref = net(example)
        for cl, ofi in candidates:
            fast, err = _trace_checked(folded, example, ref, cl, ofi)
            if fast is not None and err <= tol:
                built.append(_wrap(fast, cl))
            elif fast is not None:
                warnings.warn(f"fast path (channels_last={cl}) differs from eager by {err:.2e} > {tol}")
    if not built:
        warnings.warn("fast path unavailable; using the eager network")
        return _eager(net)
    return built[0] if len(built) == 1 else _fastest(built, example[:1])


def _fastest(forwards: list, x: torch.Tensor, rounds: int = 7) -> Forward:
    """The forward with the lowest median time on ``x`` over a few round-robin calls (all are verified)."""
    times: list[list[float]] = [[] for _ in forwards]
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    for r in range(rounds + 2):
        for i, f in enumerate(forwards):
            t0 = time.perf_counter()
            f(x)
            sync()
            if r >= 2:
                times[i].append(time.perf_counter() - t0)
    best = min(range(len(forwards)), key=lambda i: sorted(times[i])[len(times[i]) // 2])
    return forwards[best]


def _trace_checked(folded: nn.Module, example: torch.Tensor, ref: torch.Tensor, channels_last: bool,
                   optimize: bool = False):
    """(frozen TorchScript module or None, max abs error vs ``ref`` over contiguous and channels_last inputs)."""
    model = copy.deepcopy(folded)
    ex = example
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        ex = example.contiguous(memory_format=torch.channels_last)
    try:
        with torch.no_grad():
            fast = torch.jit.freeze(torch.jit.trace(model, ex, check_trace=False))
            if optimize:
                fast = torch.jit.optimize_for_inference(fast)
            for _ in range(3):  # let the profiling executor settle
                out = fast(ex)
            run = _wrap(fast, channels_last)
            err = max((run(example) - ref).abs().max().item(),
                      (run(example.contiguous(memory_format=torch.channels_last)) - ref).abs().max().item(),
                      (out - ref).abs().max().item())
    except Exception as exc:  # pragma: no cover - depends on torch build
        warnings.warn(f"fast path (channels_last={channels_last}) failed to build ({exc})")
        return None, float("inf")
    return fast, err


def _wrap(fast, channels_last: bool) -> Forward:
    if channels_last:
        def forward(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return fast(x.contiguous(memory_format=torch.channels_last))
    else:
        def forward(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return fast(x.contiguous())
    forward.kind = "torchscript"  # type: ignore[attr-defined]
    return forward


def _eager(net: nn.Module) -> Forward:
    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return net(x)

    forward.kind = "eager"  # type: ignore[attr-defined]
    return forward
