"""GPU check: CUDA outputs of DAMDNet (our shipped weights) and 3DDFA_V2 mb05 against the CPU, then faces/s per batch.

    python bench/gpu_check.py [--batches 1 8 64 256 1024] [--seconds 1.0] [--dry-run]

1. Agreement: the same crops through ``Aligner`` on CPU and on ``device="auto"`` (CUDA: pinned-memory upload,
   batched, fast path): whitened outputs fp32 (TF32 off) within 1e-3, with TF32 (PyTorch's default) within 5e-2; eager under fp16 autocast within 5e-2, bf16 within 0.25 (8 mantissa bits).
2. Throughput: faces/s at each batch size for the fast path (fp32), eager under fp16 autocast, eager channels_last
   fp16 autocast, and a CUDA graph of the fp32 fast path at batch 64; each cell runs ~``--seconds`` after warm-up.
Prints markdown tables. ``--dry-run`` runs the same logic on the CPU (bf16 autocast, batches 1 and 8, no graphs) so
the script can be checked where no GPU is lent. Exit status 1 when an agreement check fails.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DAMDNET_ASSETS", str(REPO.parent / "shared" / "assets"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from model.aligner import Aligner  # noqa: E402
from model.assets import AssetStore  # noqa: E402
from model.checkpoint import load_model  # noqa: E402
from model.fastpath import exact_fp32  # noqa: E402

TOL = {"fp32": 1e-3, "fp16": 5e-2, "bf16": 0.25}  # whitened outputs (std units); bf16 keeps 8 mantissa bits


def models(store: AssetStore) -> dict:
    return {"DAMDNet (ours)": lambda: load_model("damdnet", store),
            "3DDFA_V2 mb05": lambda: load_model("3ddfa-v2-mb05", store)}


def timed(fn, x: torch.Tensor, seconds: float, sync) -> float:
    """faces/s of ``fn`` on ``x`` after 3 warm-up calls, over about ``seconds`` (at least 3 calls)."""
    for _ in range(3):
        fn(x)
    sync()
    n, t0 = 0, time.perf_counter()
    while True:
        fn(x)
        n += 1
        if n >= 3 and time.perf_counter() - t0 >= seconds:
            break
        if n % 8 == 0:
            sync()
    sync()
    return n * x.shape[0] / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, nargs="+", default=None)
    p.add_argument("--seconds", type=float, default=1.0, help="timing per cell")
    p.add_argument("--graph-batch", type=int, default=64)
    p.add_argument("--dry-run", action="store_true", help="CPU only: check the script's logic")
    a = p.parse_args(argv)
    t_start = time.perf_counter()
    cuda = torch.cuda.is_available() and not a.dry_run
    if not cuda and not a.dry_run:
        print("error: CUDA is not available (use --dry-run to check the script on a CPU)", file=sys.stderr)
        return 2
    dev = torch.device("cuda" if cuda else "cpu")
    batches = a.batches or ([1, 8, 64, 256, 1024] if cuda else [1, 8])
    seconds = a.seconds if cuda else min(a.seconds, 0.3)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    half = [("fp16", torch.float16), ("bf16", torch.bfloat16)] if cuda else [("bf16", torch.bfloat16)]
    store = AssetStore()
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (16, 120, 120, 3), dtype=np.uint8)
    if cuda:
        print(f"device: {torch.cuda.get_device_name(0)}; torch {torch.__version__}, CUDA {torch.version.cuda}")
    else:
        print(f"dry run on the CPU; torch {torch.__version__}")

    ok = True
    agree_rows = ["| model | check | max abs error | tolerance | ok |", "|---|---|---:|---:|---|"]
    speed_rows = ["| model | variant | " + " | ".join(f"batch {b}" for b in batches) + " |",
                  "|---|---|" + "---:|" * len(batches)]
    for name, load in models(store).items():
        cpu = Aligner(load(), device="cpu", store=store)
        gpu = Aligner(load(), device="auto" if cuda else "cpu", store=store)
        assert gpu.device.type == dev.type, f"Aligner(device='auto') chose {gpu.device}, expected {dev}"
        # 1. agreement, through the aligner's own upload (pinned memory on CUDA) and fast path
        ref = cpu.predict_params(crops)
        x_cpu = torch.from_numpy(crops).permute(0, 3, 1, 2).float().sub(127.5).div(128.0)
        with torch.inference_mode():
            w_ref = cpu.net(x_cpu)
        with exact_fp32():  # strict fp32: the GPU path computes what the CPU computes
            out = gpu.predict_params(crops)
            w_fast = gpu.forward_crops(x_cpu.to(dev)).float().cpu()
        w_tf32 = gpu.forward_crops(x_cpu.to(dev)).float().cpu()  # PyTorch's CUDA default: TF32 convolutions
        checks = [("fast path fp32, TF32 off (whitened)", (w_fast - w_ref).abs().max().item(), TOL["fp32"]),
                  ("predict_params fp32, TF32 off (real params / whitening std)",
                   float(np.abs((out - ref) / gpu.param_std).max()), TOL["fp32"]),
                  ("fast path, TF32 on (default; whitened)", (w_tf32 - w_ref).abs().max().item(), TOL["fp16"])]
        net = gpu.net
        for label, dtype in half:
            with torch.inference_mode(), torch.autocast(dev.type, dtype=dtype):
                w = net(x_cpu.to(dev)).float().cpu()
            checks.append((f"eager {label} autocast (whitened)", (w - w_ref).abs().max().item(), TOL[label]))
        for check, err, tol in checks:
            good = bool(err <= tol)
            ok &= good
            agree_rows.append(f"| {name} | {check} | {err:.2e} | {tol:g} | {'yes' if good else '**NO**'} |")

        # 2. throughput
        net_cl = net.to(memory_format=torch.channels_last)

        def eager_autocast(x, dtype=half[0][1], m=net_cl):
            with torch.inference_mode(), torch.autocast(dev.type, dtype=dtype):
                return m(x)

        variants = {"fast path fp32": gpu.forward_crops,
                    f"eager {half[0][0]} autocast, channels_last": eager_autocast}
        rows = {k: [] for k in variants}
        for b in batches:
            x = torch.randn(b, 3, 120, 120, device=dev)
            for k, fn in variants.items():
                rows[k].append(f"{timed(fn, x, seconds, sync):,.0f}")
            print(f"{name} batch {b}: " + ", ".join(f"{k} {v[-1]} faces/s" for k, v in rows.items()), flush=True)
        for k, cells in rows.items():
            speed_rows.append(f"| {name} | {k} | " + " | ".join(cells) + " |")
        if cuda:  # CUDA graph of the fp32 fast path at one fixed batch
            try:
                gb = a.graph_batch
                static_x = torch.randn(gb, 3, 120, 120, device=dev)
                s = torch.cuda.Stream()
                s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s):
                    for _ in range(3):
                        gpu.forward_crops(static_x)
                torch.cuda.current_stream().wait_stream(s)
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    static_y = gpu.forward_crops(static_x)
                g.replay()
                sync()
                gerr = (static_y.float().cpu() - gpu.forward_crops(static_x).float().cpu()).abs().max().item()
                fps = timed(lambda _x: g.replay(), static_x, seconds, sync)
                speed_rows.append(f"| {name} | CUDA graph, fast path fp32, batch {gb} (err vs no graph {gerr:.1e}) | "
                                  + " | ".join(f"{fps:,.0f}" if b == gb else "" for b in batches) + " |")
            except Exception as exc:  # noqa: BLE001 - report and go on
                speed_rows.append(f"| {name} | CUDA graph batch {a.graph_batch}: failed ({type(exc).__name__}: "
                                  f"{str(exc)[:80]}) |" + " |" * len(batches))

    print()
    print("### Agreement with the CPU\n")
    print("\n".join(agree_rows))
    print("\n### Faces/s\n")
    print("\n".join(speed_rows))
    print(f"\ntook {time.perf_counter() - t_start:.0f} s; agreement {'OK' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
