"""Model latency: the authors' DAMDNet structure (eager) versus ours (eager, TorchScript and ONNX Runtime fast paths),
and the 3DDFA_V2 peer.

    python bench/bench_model.py [--runs 60] [--batches 1 8 32] [--threads N] [--no-append]

All variants run in ONE process on the same inputs. For each batch size every variant is warmed up, then the variants
are timed round-robin (one call each per round, ``--runs`` rounds) so that load from other processes hits them
alike; the table gives the median per call. Before timing, the authors' structure and ours are loaded with the same
compat weights (``compat/damdnet_v1_random_init.pth.tar``) and checked against the authors' recorded output and
each other (1e-4); the fast paths are checked against eager (1e-4).

Prints a markdown section and appends it to bench/RESULTS.md (``## Model latency``), never rewriting what is there.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from authors_structure import load_authors_checkpoint  # noqa: E402

from model.assets import AssetStore  # noqa: E402
from model.checkpoint import load_file, load_model  # noqa: E402
from model.fastpath import build_fast_path, build_torchscript  # noqa: E402
from bench.machine_info import cpu_model  # noqa: E402

RESULTS = HERE / "RESULTS.md"
TOL = 1e-4


def eager(net: torch.nn.Module):
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return net(x)

    return run


def max_err(a: torch.Tensor, b: torch.Tensor | np.ndarray) -> float:
    return float((torch.as_tensor(a, dtype=torch.float32) - torch.as_tensor(b, dtype=torch.float32)).abs().max())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=60, help="timed calls per variant and batch size (>= 50)")
    p.add_argument("--warmup", type=int, default=8, help="untimed calls per variant and batch size first")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--no-append", action="store_true", help="print only; do not append to bench/RESULTS.md")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    load_before = os.getloadavg()
    store = AssetStore()

    # -- the networks, checked before they are timed ------------------------------------------------------------
    ckpt = store.path("compat-checkpoint")
    io = np.load(store.path("compat-io"))
    x_ref, y_ref = torch.from_numpy(io["input"]), io["output"]
    authors = load_authors_checkpoint(str(ckpt))
    ours = load_file(ckpt, store).net.eval()
    mb = load_model("3ddfa-v2-mb05", store).net.eval()
    checks = {}
    with torch.inference_mode():
        checks["authors structure vs recorded output"] = max_err(authors(x_ref), y_ref)
        checks["ours vs recorded output"] = max_err(ours(x_ref), y_ref)
        xr = torch.randn(8, 3, 120, 120)
        checks["ours vs authors structure (random batch of 8)"] = max_err(ours(xr), authors(xr))
    ours_ort, ours_ts = build_fast_path(ours, kind="onnxruntime"), build_torchscript(ours)
    mb_ort, mb_ts = build_fast_path(mb, kind="onnxruntime"), build_torchscript(mb)
    with torch.inference_mode():
        checks["ours ONNX Runtime vs eager"] = max_err(ours_ort(xr), ours(xr))
        checks["ours TorchScript vs eager"] = max_err(ours_ts(xr), ours(xr))
        checks["ours ONNX Runtime vs authors structure"] = max_err(ours_ort(xr), authors(xr))
        checks["mb05 ONNX Runtime vs eager"] = max_err(mb_ort(xr), mb(xr))
        checks["mb05 TorchScript vs eager"] = max_err(mb_ts(xr), mb(xr))
    for k, v in checks.items():
        print(f"check: {k}: max abs error {v:.2e}")
    bad = [k for k, v in checks.items() if not v <= TOL]
    if bad:
        print(f"error: outputs differ by more than {TOL}: {', '.join(bad)}; not timing", file=sys.stderr)
        return 1

    variants = {
        "DAMDNet, authors' structure, eager": eager(authors),
        "DAMDNet, ours, eager": eager(ours),
        "DAMDNet, ours, fast path TorchScript": ours_ts,
        "DAMDNet, ours, fast path ONNX Runtime (default)": ours_ort,
        "3DDFA_V2 MobileNetV1 x0.5, eager": eager(mb),
        "3DDFA_V2 MobileNetV1 x0.5, fast path TorchScript": mb_ts,
        "3DDFA_V2 MobileNetV1 x0.5, fast path ONNX Runtime (default)": mb_ort,
    }

    # -- timing ----------------------------------------------------------------------------------------------------
    med: dict[tuple[str, int], float] = {}
    spread: dict[tuple[str, int], tuple[float, float]] = {}
    t_start = time.perf_counter()
    for n in a.batches:
        x = torch.randn(n, 3, 120, 120)
        for fn in variants.values():
            for _ in range(a.warmup):
                fn(x)
        times: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(a.runs):
            for name, fn in variants.items():
                t0 = time.perf_counter()
                fn(x)
                times[name].append((time.perf_counter() - t0) * 1e3)
        for name, ts in times.items():
            med[(name, n)] = statistics.median(ts)
            q = statistics.quantiles(ts, n=10)
            spread[(name, n)] = (q[0], q[-1])
        print(f"batch {n}: " + ", ".join(f"{k.split(',', 1)[1].strip()} {med[(k, n)]:.2f} ms" for k in variants))
    elapsed = time.perf_counter() - t_start
    load_after = os.getloadavg()

    # -- report ----------------------------------------------------------------------------------------------------
    base = "DAMDNet, authors' structure, eager"
    head = "| model | " + " | ".join(f"batch {n}: ms (x vs authors)" for n in a.batches) + " | per face at batch " \
           f"{a.batches[-1]}: ms |"
    rows = [head, "|---|" + "---:|" * (len(a.batches) + 1)]
    for name in variants:
        cells = []
        for n in a.batches:
            m = med[(name, n)]
            cells.append(f"{m:.2f} ({med[(base, n)] / m:.2f}x)")
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {med[(name, a.batches[-1])] / a.batches[-1]:.2f} |")
    spread_rows = ["| model | " + " | ".join(f"batch {n}: p10-p90 ms" for n in a.batches) + " |",
                   "|---|" + "---:|" * len(a.batches)]
    for name in variants:
        spread_rows.append(f"| {name} | " + " | ".join(f"{spread[(name, n)][0]:.2f}-{spread[(name, n)][1]:.2f}"
                                                        for n in a.batches) + " |")
    ncpu = os.cpu_count()
    busy = max(load_before[0], load_after[0]) > 0.5 * (ncpu or 1)
    load_note = (f"load average (1, 5, 15 min) {tuple(round(v, 2) for v in load_before)} before, "
                 f"{tuple(round(v, 2) for v in load_after)} after"
                 + (": **other processes were running on this shared machine** during the run, so absolute times are "
                    "inflated and noisy; the ratios (same process, round-robin) are the figure to read."
                    if busy else "."))
    section = "\n".join([
        f"## Model latency ({dt.datetime.now().strftime('%Y-%m-%d %H:%M')})",
        "",
        f"`python bench/bench_model.py` ({' '.join(argv) if argv else 'defaults'}): forward pass of one batch of "
        "(N, 3, 120, 120) float32 crops -> (N, 62); median of "
        f"{a.runs} calls per cell after {a.warmup} warm-up calls, all variants in one process, timed round-robin. "
        "Ratio = authors' structure time / this time (higher is faster). The authors' structure is "
        "`bench/authors_structure.py`, an eager re-implementation of LeiJiangJNU/DAMDNet's `DAMDNet_v1` forward "
        "(view-based SGE, Sequential SE layer, unfused BatchNorm); 'ours' is `model.damdnet_net.DAMDNet`; "
        "'fast path TorchScript' is `model.fastpath.build_torchscript` (BatchNorm folded, traced, frozen); "
        "'fast path ONNX Runtime' is `model.ort_forward` (folded, constant-size SGE, linear head as one matrix), "
        "what `Aligner` runs on a CPU. Both DAMDNets carry the same weights (compat checkpoint).",
        "",
        *rows,
        "",
        "Spread (10th-90th percentile of the same calls):",
        "",
        *spread_rows,
        "",
        "Checks before timing (max abs error): " + "; ".join(f"{k} {v:.1e}" for k, v in checks.items()) + ".",
        "",
        f"Machine: {platform.machine()}, {ncpu} CPUs (`nproc` {len(os.sched_getaffinity(0))}), {cpu_model()}; "
        f"Python {platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, "
        f"CPU only (CUDA {'available' if torch.cuda.is_available() else 'not available'}); "
        f"timing took {elapsed:.0f} s; {load_note}",
        "",
    ])
    print()
    print(section)
    if not a.no_append:
        new = not RESULTS.exists() or RESULTS.stat().st_size == 0
        with open(RESULTS, "a") as f:
            if new:
                f.write("# Benchmark results\n\n")
            f.write("\n" + section)
        print(f"appended to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
