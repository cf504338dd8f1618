"""Ghost and missed faces of the product's tracker on synthetic videos with known face boxes, with face confidence
off (the tracker before issue 15) and on at several thresholds.

    python bench/bench_ghosts.py [--cache ~/.cache/damdnet/confcache] [--frames 150] [--weights damdnet]

Scenes: ``bench/ghost_scenes.py`` (faces through the borders, crossing, turning to profile and back, occluded,
over foliage / a crowd of tiny faces / posters). Each scene runs through ``stream.analyze.FaceAnalyzer`` (the
product's detector schedule, aligner, classifier and tracker) twice: with YuNet as it is, and with YuNet plus
injected false positives (a box on the clutter or background, held for stretches of frames like a detector false
positive on palm leaves, offered at 40% of the detector runs).

Faces are reported as the file pipeline reports them (``stream.lookahead``: a new track's first frames wait for its
confirmation); ``--live``: from each track's confirmation on. Per frame the reported faces (confirmed tracks) are
matched one-to-one to the true faces by IoU >= 0.3 of their landmark boxes. A report matching no true face (nor an
"ignore" face: < 60% visible or under 24 px) is a **ghost**; a true face (>= 60% visible, >= 24 px) without a report
is a **miss**; "profile misses" are misses at |yaw| >= 60.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ghost_scenes import SCENES, Truth, load_sprites, render_scene  # noqa: E402
from model.roi import iou_matrix  # noqa: E402
from stream.analyze import tracker_config  # noqa: E402
from stream.config import load_config  # noqa: E402
from tracking.tracker import TrackerConfig  # noqa: E402

OFF = dict(confirm_confidence=0.0, drop_confidence=0.0, min_face_size=0.0, confidence_keeps_tracks=False)
VARIANTS = {
    "off (before)": OFF,
    "size only (min 20 px)": dict(OFF, min_face_size=20.0),
    "conf 0.3/0.15": dict(confirm_confidence=0.3, drop_confidence=0.15),
    "conf 0.5/0.3": dict(confirm_confidence=0.5, drop_confidence=0.3),
    "conf 0.5/0.3, detector veto kept": dict(confirm_confidence=0.5, drop_confidence=0.3,
                                             confidence_keeps_tracks=False),
    "conf 0.7/0.5": dict(confirm_confidence=0.7, drop_confidence=0.5),
    "conf 0.85/0.7": dict(confirm_confidence=0.85, drop_confidence=0.7),
}


class InjectingDetector:
    """The real detector plus a held false-positive box on the scene's clutter (or background away from the faces),
    offered at ``rate`` of the calls; the spot changes every ``hold`` frames. ``frame`` is set by the caller."""

    def __init__(self, detector, truths: list[Truth], rate: float, hold: int = 40, seed: int = 0,
                 shape: tuple[int, int] = (360, 640)) -> None:
        self.detector, self.truths, self.rate, self.hold = detector, truths, rate, hold
        self.rng = np.random.default_rng(seed)
        self.frame = 0
        self.shape = shape
        self._spots: dict[int, np.ndarray | None] = {}
        self.injected = 0

    def _spot(self, seg: int) -> np.ndarray | None:
        if seg not in self._spots:
            t = self.truths[min(seg * self.hold, len(self.truths) - 1)]
            h, w = self.shape
            rng = np.random.default_rng([seg, 11])
            spot = None
            for _ in range(50):
                if len(t.clutter_boxes) and rng.random() < 0.8:
                    c = t.clutter_boxes[int(rng.integers(len(t.clutter_boxes)))]
                    s = rng.uniform(0.5, 1.0) * min(c[2] - c[0], c[3] - c[1])
                    x, y = rng.uniform(c[0], max(c[2] - s, c[0] + 1)), rng.uniform(c[1], max(c[3] - s, c[1] + 1))
                else:
                    s = rng.uniform(40, 110)
                    x, y = rng.uniform(0, w - s), rng.uniform(0, h - s)
                box = np.array([x, y, x + s, y + s], np.float32)
                far = all(iou_matrix(box[None], tr.boxes).max(initial=0) < 0.02
                          for tr in self.truths[seg * self.hold:(seg + 1) * self.hold] if len(tr.boxes))
                if far:
                    spot = box
                    break
            self._spots[seg] = spot
        return self._spots[seg]

    def __call__(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        boxes, scores = self.detector(frame)
        spot = self._spot(self.frame // self.hold)
        if spot is not None and self.rng.random() < self.rate:
            self.injected += 1
            jitter = self.rng.normal(0, 2, 4).astype(np.float32)
            boxes = np.concatenate([boxes.reshape(-1, 4), (spot + jitter)[None]], 0).astype(np.float32)
            scores = np.concatenate([scores.reshape(-1), [0.7]]).astype(np.float32)
        return boxes, scores


def count(reports: list[list], truths: list[Truth]) -> dict[str, int]:
    """Ghost face-frames, frames with a ghost, missed face-frames, profile misses, must-see face-frames."""
    ghosts = ghost_frames = misses = profile_misses = must_total = profile_total = 0
    for recs, t in zip(reports, truths):
        must, ignore = t.must, t.ignore
        must_total += int(must.sum())
        profile_total += int((must & (np.abs(t.yaw) >= 60)).sum())
        boxes = np.array([r.box for r in recs], np.float32).reshape(-1, 4)
        keep = must | ignore
        gt = t.boxes[keep]
        matched_r, matched_g = set(), set()
        if len(boxes) and len(gt):
            iou = iou_matrix(boxes, gt)
            rr, cc = linear_sum_assignment(-iou)
            for r, c in zip(rr, cc):
                if iou[r, c] >= 0.3:
                    matched_r.add(int(r))
                    matched_g.add(int(c))
        g = len(boxes) - len(matched_r)
        ghosts += g
        ghost_frames += int(g > 0)
        idx = np.flatnonzero(keep)
        for j, k in enumerate(idx):
            if must[k] and j not in matched_g:
                misses += 1
                profile_misses += int(abs(t.yaw[k]) >= 60)
    return dict(ghosts=ghosts, ghost_frames=ghost_frames, misses=misses, profile_misses=profile_misses,
                must=must_total, profile=profile_total)


async def run_frames(frames, aligner, detector, config: TrackerConfig, on_frame=None, live: bool = False
                     ) -> list[list]:
    """The product's analysis stage over ``frames``: the faces (``tracking.face.Face``) of each frame, as the file pipeline reports
    them (its look-ahead: a confirmed face keeps its first frames, ``stream.lookahead``) or, ``live``, from each
    track's confirmation on."""
    from stream.align_batcher import AlignService
    from stream.analyze import FaceAnalyzer
    from stream.frames import Frame
    from stream.lookahead import ConfirmWindow
    from stream.stats import Stats

    service = AlignService(aligner)
    an = FaceAnalyzer(service, detector, config)
    window = ConfirmWindow(0 if live else an.lookahead)
    stats = Stats()
    out: list[list] = [[] for _ in frames]
    try:
        for i, img in enumerate(frames):
            if on_frame is not None:
                on_frame(i)
            res = await an.analyze_all(Frame(i, i / 25.0, img), stats)
            for j, recs in window.push(i, res.faces, res.confirmed, res.alive):
                out[j] = recs
        for j, recs in window.flush():
            out[j] = recs
    finally:
        an.close()
        service.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", default="~/.cache/damdnet/confcache")
    p.add_argument("--frames", type=int, default=150)
    p.add_argument("--weights", default="damdnet")
    p.add_argument("--variants", nargs="*", default=list(VARIANTS))
    p.add_argument("--rate", type=float, default=0.4)
    p.add_argument("--scenes", nargs="*", default=list(SCENES))
    p.add_argument("--save-frames", default=None, help="folder: write a few annotated frames per scene/variant")
    p.add_argument("--live", action="store_true", help="report as live sources do (no look-ahead of files)")
    a = p.parse_args(argv)
    import torch

    from model.aligner import Aligner
    from model.detect import FaceDetector

    torch.set_num_threads(1)
    sprites = load_sprites(a.cache)
    aligner = Aligner.from_checkpoint(a.weights, device="cpu")
    det = FaceDetector.create("auto", quiet=True)
    totals: dict[tuple[str, str], dict[str, int]] = {}
    per_scene: dict[tuple[str, str, str], dict[str, int]] = {}
    t0 = time.perf_counter()
    for scene in a.scenes:
        frames, truths = render_scene(scene, sprites, n=a.frames)
        for mode in ("yunet", "yunet+injected"):
            for name in a.variants:
                cfg = replace(tracker_config(load_config()), **VARIANTS[name])
                d = InjectingDetector(det, truths, a.rate if mode != "yunet" else 0.0)
                reports = asyncio.run(run_frames(frames, aligner, d, cfg, on_frame=lambda i: setattr(d, "frame", i),
                                                 live=a.live))
                c = count(reports, truths)
                per_scene[(scene, mode, name)] = c
                tot = totals.setdefault((mode, name), {k: 0 for k in c})
                for k, v in c.items():
                    tot[k] += v
                print(f"{scene:10s} {mode:15s} {name:34s} {c}", file=sys.stderr, flush=True)
                if a.save_frames:
                    save_sheet(Path(a.save_frames), scene, mode, name, frames, truths, reports)
    print(f"\n{len(a.scenes)} scenes x {a.frames} frames, weights {a.weights}, "
          f"{'live' if a.live else 'file'} reporting, {time.perf_counter() - t0:.0f} s\n")
    print("| detector | confidence (confirm/drop) | ghost faces (frames with one) | missed faces | profile misses "
          "(|yaw| >= 60) |")
    print("|---|---|---|---|---|")
    for (mode, name), c in totals.items():
        print(f"| {mode} | {name} | {c['ghosts']} ({c['ghost_frames']}) | {c['misses']} / {c['must']} | "
              f"{c['profile_misses']} / {c['profile']} |")
    print("\nper scene (ghost faces / missed faces):\n")
    print("| detector | variant | " + " | ".join(a.scenes) + " |")
    print("|---|---|" + "---|" * len(a.scenes))
    for mode in ("yunet", "yunet+injected"):
        for name in a.variants:
            cells = [f"{per_scene[(s, mode, name)]['ghosts']} / {per_scene[(s, mode, name)]['misses']}"
                     for s in a.scenes]
            print(f"| {mode} | {name} | " + " | ".join(cells) + " |")
    return 0


def save_sheet(folder: Path, scene: str, mode: str, name: str, frames, truths, reports, every: int = 15) -> None:
    """A contact sheet of every ``every``-th frame: truth boxes green (must) / grey (ignore), reports red."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    tiles = []
    for i in range(0, len(frames), every):
        img = frames[i].copy()
        t = truths[i]
        for b, m in zip(t.boxes, t.must):
            cv2.rectangle(img, tuple(int(v) for v in b[:2]), tuple(int(v) for v in b[2:]),
                          (0, 200, 0) if m else (150, 150, 150), 2)
        for r in reports[i]:
            b = r.box
            cv2.rectangle(img, tuple(int(v) for v in b[:2]), tuple(int(v) for v in b[2:]), (0, 0, 255), 1)
            cv2.putText(img, f"{r.track_id}:{r.confidence:.2f}", (int(b[0]), int(b[1]) - 3),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 255), 1)
        tiles.append(cv2.resize(img, (320, 180)))
    while len(tiles) % 4:
        tiles.append(np.zeros_like(tiles[0]))
    sheet = np.concatenate([np.concatenate(tiles[k:k + 4], 1) for k in range(0, len(tiles), 4)], 0)
    safe = "".join(ch if ch.isalnum() else "_" for ch in f"{scene}_{mode}_{name}")
    cv2.imwrite(str(folder / f"{safe}.jpg"), sheet, [cv2.IMWRITE_JPEG_QUALITY, 80])


if __name__ == "__main__":
    os.environ.setdefault("DAMDNET_ASSETS", str(Path(__file__).resolve().parent.parent.parent / "shared" / "assets"))
    sys.exit(main())
