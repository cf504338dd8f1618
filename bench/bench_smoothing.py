#!/usr/bin/env python3
"""Smoothing on a video with known geometry: the real pipeline on the synthetic face, raw (--smooth none) vs Kalman.

The synthetic source (``stream/synthetic.py``) renders a textured 3DMM face along known parameter trajectories
(+-70 degree head turns, nods, roll, mouth and smile, drift and zoom, one scene cut) and keeps the true 68
landmarks of every frame. The pipeline runs in-process exactly as ``run_stream.py`` builds it (same engine, detector,
tracker, Kalman configuration from configs/default.yaml, file mode: no frame dropped), once per smoothing mode, on
the same frames. Measures (DESIGN.md section 6, ``tracking/jitter.py``):

- NME (%): mean over frames of the mean 2D landmark error over sqrt(w*h) of the true landmarks' box;
- NMJ (%): RMS over frame pairs of the RMS over points of the frame-to-frame change of the error, over the face
  size (jitter around the truth), over the pairs of "settled" frames: pairs within 5 frames after a (re)acquisition
  (the first frame, the cut, a miss) are left out, since there the tracker is finding the face again (a step of
  several % that says nothing about jitter and, squared, outweighs everything else); "NMJ all pairs" keeps them
  (only the pair across the cut itself is left out);
- lag (frames): cross-correlation lag of the landmark trajectories behind the truth (``estimate_lag``), per shot;
  ``added lag`` is the Kalman output's lag behind the raw output.

Per frame the track nearest the truth is scored; frames with no face within 25% NME count as misses (and are left out
of NME/NMJ). ``--real`` adds the unlabelled jitter measure (mean landmark acceleration over face size) on d0.mp4.

    python bench/bench_smoothing.py                      # 8 s synthetic video, prints the table
    python bench/bench_smoothing.py --seconds 12 --seeds 0 1 --real --write   # append to bench/RESULTS.md
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.machine_info import cpu_model  # noqa: E402
os.environ.setdefault("DAMDNET_ASSETS", str(REPO.parent / "shared" / "assets"))
from stream.app import Engine, build_engine  # noqa: E402
from stream.config import RunConfig, load_config  # noqa: E402
from stream.assemble import build_run  # noqa: E402
from stream.pipeline import Job  # noqa: E402
from stream.sources import open_source  # noqa: E402
from tracking.jitter import acceleration_jitter, estimate_lag, nme, nmj_per_frame  # noqa: E402

D0 = "KwaiVGI/LivePortrait/assets/examples/driving/d0.mp4"
MISS_NME = 25.0  # % : a "face" this far from the truth is a tracking failure, not a noisy estimate
SETTLE = 5  # frames after a (re)acquisition (start, cut, miss) left out of the steady NMJ


class Collect:
    """Sink that keeps the face records of every frame."""

    def __init__(self) -> None:
        self.frames: dict[int, list] = {}

    def write_job(self, job: Job) -> None:
        self.frames[job.frame.index] = list(job.faces)

    def close(self) -> None:
        pass


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, {cpu_model()}"


def run_pipeline(engine: Engine, cfg: RunConfig, spec: str, smooth: str, **source_options) -> tuple[Collect, dict]:
    """One file-mode run of the pipeline (no renderer) with ``smooth``; returns the records and Stats.summary()."""
    run_cfg = cfg.replace(smooth=smooth)
    source = open_source(spec, **source_options)
    sink = Collect()
    pipeline = build_run(run_cfg, engine, source, live=False, sinks=[], extra_sinks=[sink])
    stats = asyncio.run(pipeline.run())
    return sink, stats.summary()


def best_track(records: dict[int, list], gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame the landmarks of the record nearest the truth -> pred (T, 68, 3) (NaN: miss), track ids (T,)."""
    t = gt.shape[0]
    pred = np.full((t, 68, 3), np.nan, np.float64)
    ids = np.full(t, -1, np.int64)
    for i in range(t):
        faces = records.get(i, [])
        if not faces:
            continue
        lms = np.stack([f.landmarks for f in faces]).astype(np.float64)
        err = nme(lms, np.broadcast_to(gt[i], lms.shape))
        k = int(np.argmin(err))
        if err[k] <= MISS_NME:
            pred[i] = lms[k]
            ids[i] = faces[k].track_id
    return pred, ids


def shots(n: int, cuts: list[int]) -> list[slice]:
    edges = [0, *sorted(c for c in cuts if 0 < c < n), n]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def longest_valid_run(ok: np.ndarray) -> slice:
    best, start, best_len = slice(0, 0), None, 0
    for i, v in enumerate(np.append(ok, False)):
        if v and start is None:
            start = i
        elif not v and start is not None:
            if i - start > best_len:
                best, best_len = slice(start, i), i - start
            start = None
    return best


def settled(ok: np.ndarray, cuts: list[int], settle: int) -> np.ndarray:
    """(T,) bool: frame t has a face and no start, cut or miss happened in frames [t - settle, t]."""
    start = ~ok.copy()
    start[0] = True
    for c in cuts:
        if 0 <= c < len(ok):
            start[c] = True
    out = ok.copy()
    for k in range(settle + 1):
        out[k:] &= ~start[:len(ok) - k]
    return out


def rms(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.sqrt(np.mean(x ** 2))) if x.size else float("nan")


def score(pred: np.ndarray, gt: np.ndarray, cuts: list[int], ref: np.ndarray | None = None) -> dict:
    """NME, NMJ (all pairs but those across cuts; and ``nmj_steady``: only pairs of settled frames), lag behind the
    truth (and behind ``ref``) per shot, misses."""
    ok = np.all(np.isfinite(pred[..., :2]), axis=(1, 2))
    per_frame = nme(pred, gt)
    jit = nmj_per_frame(pred, gt)
    for c in cuts:
        if 0 < c < len(jit) + 1:
            jit[c - 1] = np.nan
    steady = settled(ok, cuts, SETTLE)
    jit_steady = np.where(steady[:-1] & steady[1:], jit, np.nan)
    lags, added = [], []
    for sh in shots(len(gt), cuts):
        run = longest_valid_run(ok[sh])
        a, b = sh.start + run.start, sh.start + run.stop
        if b - a < 20:
            continue
        lags.append(estimate_lag(pred[a:b, :, :2].reshape(b - a, -1), gt[a:b, :, :2].reshape(b - a, -1)))
        if ref is not None:
            r_ok = np.all(np.isfinite(ref[a:b, :, :2]), axis=(1, 2))
            if r_ok.all():
                added.append(estimate_lag(pred[a:b, :, :2].reshape(b - a, -1), ref[a:b, :, :2].reshape(b - a, -1)))
    # pose and shape alone: the jitter of the points no expression moves much (contour, brows, nose: 0-35)
    jit_rigid = np.where(steady[:-1] & steady[1:], nmj_per_frame(pred[:, :36], gt[:, :36]), np.nan)
    for c in cuts:
        if 0 < c < len(jit_rigid) + 1:
            jit_rigid[c - 1] = np.nan
    return {"nme": float(np.nanmean(per_frame)), "nmj_all": rms(jit), "nmj": rms(jit_steady),
            "nmj_rigid": rms(jit_rigid),
            "steady_pairs": int(np.isfinite(jit_steady).sum()),
            "lag": float(np.mean(lags)) if lags else float("nan"),
            "added_lag": float(np.mean(added)) if added else float("nan"),
            "misses": int((~ok).sum()), "frames": int(len(gt))}


def bench_synthetic(engine: Engine, cfg: RunConfig, seconds: float, seed: int) -> dict:
    spec_opts = {**dataclasses.asdict(cfg.synthetic), "seconds": seconds, "seed": seed}
    truth = open_source("synthetic", **spec_opts)
    gt, cuts = truth.ground_truth.astype(np.float64), truth.cuts
    truth.close()
    out = {"seconds": seconds, "seed": seed, "frames": int(len(gt)), "cuts": cuts}
    preds = {}
    for smooth in ("none", "kalman"):
        t0 = time.perf_counter()
        recs, summary = run_pipeline(engine, cfg, "synthetic", smooth, **spec_opts)
        pred, ids = best_track(recs.frames, gt)
        preds[smooth] = pred
        res = score(pred, gt, cuts, ref=preds.get("none") if smooth == "kalman" else None)
        res["track_ids"] = sorted(set(ids[ids >= 0].tolist()))
        res["rows"] = int(sum(len(v) for v in recs.frames.values()))
        res["fps"] = summary["fps"]
        res["wall_s"] = time.perf_counter() - t0
        out[smooth] = res
    return out


def bench_real(engine: Engine, cfg: RunConfig, path: Path) -> dict:
    out = {}
    for smooth in ("none", "kalman"):
        recs, _ = run_pipeline(engine, cfg, str(path), smooth)
        n = max(recs.frames) + 1 if recs.frames else 0
        lm = np.full((n, 68, 3), np.nan)
        for i, faces in recs.frames.items():
            if faces:
                lm[i] = max(faces, key=lambda f: float(np.prod(np.ptp(f.landmarks[:, :2], axis=0)))).landmarks
        out[smooth] = {"accel": acceleration_jitter(lm), "frames": n}
    return out


def table(results: list[dict], real: dict | None) -> str:
    lines = ["| video | output | NME (%) | NMJ (%) | NMJ all pairs (%) | NMJ points 0-35 (%) | lag vs truth (frames) "
             "| lag vs raw (frames) | misses |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        name = f"synthetic {r['seconds']:g} s, seed {r['seed']} ({r['frames']} frames, cut at {r['cuts']})"
        for smooth, label in (("none", "raw (`--smooth none`)"), ("kalman", "Kalman (`--smooth kalman`)")):
            s = r[smooth]
            added = "0 (reference)" if smooth == "none" else f"{s['added_lag']:+.2f}"
            lines.append(f"| {name} | {label} | {s['nme']:.3f} | {s['nmj']:.3f} | {s['nmj_all']:.3f} | "
                         f"{s['nmj_rigid']:.3f} | {s['lag']:+.2f} | {added} | {s['misses']} |")
        k, n = r["kalman"], r["none"]
        dn, dj, da = (100 * (k[m] / n[m] - 1) for m in ("nme", "nmj", "nmj_all"))
        dr = 100 * (k["nmj_rigid"] / n["nmj_rigid"] - 1)
        lines.append(f"| | **Kalman vs raw** | **{dn:+.1f}%** | **{dj:+.1f}%** | {da:+.1f}% | {dr:+.1f}% | | | |")
    if real:
        for name, r in real.items():
            a0, a1 = r["none"]["accel"], r["kalman"]["accel"]
            lines.append("")
            lines.append(f"Unlabelled real video {name} ({r['none']['frames']} frames): mean landmark acceleration "
                         f"{a0:.3f}% of face size raw, {a1:.3f}% Kalman ({100 * (a1 / a0 - 1):+.1f}%).")
    return "\n".join(lines)


def append_results(text: str) -> Path:
    path = REPO / "bench" / "RESULTS.md"
    if not path.exists():
        path.write_text("# Benchmark results\n")
    with open(path, "a", encoding="utf-8") as f:
        f.write(("\n" if path.read_text().endswith("\n") else "\n\n") + text.rstrip() + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0, help="length of the synthetic video (default 8)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="synthetic video seeds (default 0)")
    ap.add_argument("--weights", default="3ddfa-v2-mb05", help="model (default the mb05 peer)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--real", action="store_true", help="also the unlabelled jitter on d0.mp4")
    ap.add_argument("--expression", choices=["true", "false"], default="true",
                    help="the expression stage (default true, as run_stream.py)")
    ap.add_argument("--json", help="write the raw figures to this file")
    ap.add_argument("--write", action="store_true", help="append the section to bench/RESULTS.md")
    args = ap.parse_args(argv)

    cfg = load_config(None, {"weights": args.weights, "device": args.device, "progress": False,
                             "expression": args.expression == "true"})
    engine = build_engine(cfg)
    results = []
    for seed in args.seeds:
        r = bench_synthetic(engine, cfg, args.seconds, seed)
        results.append(r)
        print(json.dumps(r, indent=1), file=sys.stderr)
    real = None
    if args.real:
        d0 = Path(os.environ["DAMDNET_ASSETS"]) / D0
        if d0.is_file():
            real = {"d0.mp4": bench_real(engine, cfg, d0)}
    engine.service.close()
    text = table(results, real)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"synthetic": results, "real": real}, indent=1))
    if args.write:
        k = cfg.kalman
        body = (
            "## Smoothing (synthetic video, known geometry)\n\n"
            f"Machine: {machine()}; {datetime.date.today().isoformat()}; model {engine.aligner.name} "
            f"({engine.aligner.backbone}) on {engine.aligner.device}, detector {engine.detector.kind} every "
            f"{cfg.detect_every} frames. Command: `python bench/bench_smoothing.py "
            f"{' '.join(sys.argv[1:])}`.\n\n"
            f"Video: `synthetic:{args.seconds:g}` ({cfg.synthetic.width}x{cfg.synthetic.height} at "
            f"{cfg.synthetic.fps:g} fps): a face textured from a real photo turning to +-70 deg yaw, nodding "
            "+-25 deg, rolling, opening its mouth and smiling, drifting and zooming, with one scene cut; true "
            "landmarks decoded from the rendered parameters. The pipeline as `run_stream.py` builds it, in file "
            "mode; per frame the track nearest the truth is scored (a face over 25% NME is a miss). NMJ keeps the "
            f"pairs of settled frames ({SETTLE} frames after the start, the cut or a miss are left out: the tracker "
            "is re-finding the face there); 'NMJ all pairs' keeps those too. "
            "Lag: cross-correlation of the landmark trajectories, per shot (positive = behind).\n\n"
            f"Kalman settings (configs/default.yaml `kalman:`): {json.dumps(k)}\n\n" + text + "\n")
        print(f"appended to {append_results(body)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
