"""Does the swap look like the source? dlib's ResNet face descriptor on swapped frames of shared videos, the seam at
every boundary of the blend (outer contour, eye and mouth holes), the swap time per face, and contact sheets.

Runs the product render path of a tree (``--tree``, default this one: its ``FrameRenderer`` in mode swap, the texture
from its ``fit_swap_texture``) on the fits of bench/face_fits.py (cached), so the same measures are taken before and
after a change. The measures (``stream.render.quality``) and the descriptor come from this tree.

    python bench/face_identity.py [--tree DIR] [--tag after] [--json out.json] [--sheets /work/labels/sheets/i25]

Identity, per source and video (every ``--step``-th frame): the Euclidean distance between 128-d descriptors of
the swapped face and the source photo, of the swapped face and the target frame, of the target and the source
(dlib calls two faces the same person under 0.6); the share of frames whose swap is closer to the source than to the
target; and how far the identity moved, 1 - dist(swap, source) / dist(target, source) (means over frames). The
descriptor's face box is dlib's HOG detection on the target frame (the one overlapping our landmarks' box), else
the landmarks' box; the swap is described in the same box, its 5 points found on the swap itself.

Self-swap, per source: the distance between the source photo and the source swapped onto that photo (``self_swap``):
what the texture keeps of the source (a frontal one comes back within about 0.1; a texture that leaves out a
feature reads more).

Needs the bench extra (``pip install .[bench]``: ``dlib-bin``, ``face-recognition-models``); not a runtime dependency.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from face_crop import face_crop  # bench/face_crop.py (this folder)
from load_by_path import load_by_path  # bench/load_by_path.py (this folder)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ASSETS = Path(os.environ.setdefault("DAMDNET_ASSETS", str(REPO.parent / "shared" / "assets")))
DRIVING = ASSETS / "KwaiVGI/LivePortrait/assets/examples/driving"
VIDEOS = ("d0", "d10", "d13")
# name -> (photo, kind): the two frontal sources, a bearded source with glasses, a turned source with hair over
# its forehead (a 200 px UTKFace chip, padded for the detector like bench/face_quality.py)
SOURCES = {
    "jolie": ("LeiJiangJNU/DAMDNet/imgs/jolie.jpg", "frontal"),
    "pitt": ("LeiJiangJNU/DAMDNet/imgs/pitt.jpg", "frontal"),
    "glasses": ("faces/deepface_tests/img24.jpg", "frontal"),
    "turned": ("faces/utkface_crop_part1/21_0_0_20170104230101545.jpg.chip.jpg", "turned"),
}


class Descriptor:
    """dlib's HOG detector, 5-point shape predictor and ResNet face descriptor (models of face-recognition-models)."""

    def __init__(self) -> None:
        try:
            import dlib
        except ImportError as exc:  # the bench extra
            raise SystemExit(f"face_identity needs dlib ({exc}): pip install '.[bench]'") from None
        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("face_identity needs face-recognition-models: pip install '.[bench]'")
        models = Path(spec.submodule_search_locations[0]) / "models"  # (its __init__ needs pkg_resources)
        self.dlib = dlib
        self.detect = dlib.get_frontal_face_detector()
        self.points = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self.net = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))

    def box(self, img: np.ndarray, landmarks: np.ndarray):
        """dlib.rectangle of the face: the HOG detection that overlaps the landmarks' box most, else that box
        (square, brows to chin, like dlib's)."""
        lm = np.asarray(landmarks)[:, :2]
        x0, y0 = lm.min(0)
        x1, y1 = lm.max(0)
        best, best_iou = None, 0.2
        for r in self.detect(np.ascontiguousarray(img[..., ::-1]), 1):
            ix = max(0, min(x1, r.right()) - max(x0, r.left()))
            iy = max(0, min(y1, r.bottom()) - max(y0, r.top()))
            inter = ix * iy
            iou = inter / ((x1 - x0) * (y1 - y0) + r.width() * r.height() - inter)
            if iou > best_iou:
                best, best_iou = r, iou
        if best is not None:
            return best
        side = max(x1 - x0, y1 - y0)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        return self.dlib.rectangle(int(cx - side / 2), int(cy - side / 2), int(cx + side / 2), int(cy + side / 2))

    def __call__(self, img: np.ndarray, rect) -> np.ndarray:
        rgb = np.ascontiguousarray(img[..., ::-1])
        return np.asarray(self.net.compute_face_descriptor(rgb, self.points(rgb, rect)), np.float64)


def crop(img: np.ndarray, lm: np.ndarray, side: int = 200) -> np.ndarray:
    import cv2

    return cv2.resize(face_crop(img, lm), (side, side), interpolation=cv2.INTER_AREA)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", default=str(REPO))
    ap.add_argument("--tag", default="after")
    ap.add_argument("--videos", default=",".join(VIDEOS))
    ap.add_argument("--sources", default=",".join(SOURCES), help=f"names among {', '.join(SOURCES)}")
    ap.add_argument("--step", type=int, default=10, help="every STEP-th frame")
    ap.add_argument("--max-frames", type=int, default=0, help="at most this many sampled frames per video (0: all)")
    ap.add_argument("--keep-target-eyes", action="store_true", help="the renderer's option (if the tree has it)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--sheets", default=None, help="contact sheets: PREFIX_<source>.png (open mouth, blink, mid)")
    args = ap.parse_args()
    sys.path.insert(0, args.tree)
    import model  # noqa: F401  (the tree's package)

    quality = load_by_path(REPO / "stream/render/quality.py", "_quality")
    fits = load_by_path(HERE / "face_fits.py", "_fits")
    import cv2

    from model.morphable import MorphableModel
    from stream.app import fit_swap_texture
    try:  # the face record of the tree (trees before the one record: stream.frames.FaceRecord)
        from tracking.face import Face as FaceRecord
    except ImportError:
        from stream.frames import FaceRecord
    from stream.outputs import FrameRenderer

    desc = Descriptor()
    morph = MorphableModel.load()
    aligner, detector = fits.engine()

    def record(f, frame: int, track_id: int):
        """The tree's face record of a bench fit, as the pipeline hands it to ``FrameRenderer``."""
        return FaceRecord(frame=frame, time=0.0, track_id=track_id, box=np.zeros(4, np.float32), roi=f.roi,
                          pose=np.concatenate([f.pose, np.zeros(3, np.float32)]), landmarks=f.landmarks,
                          params=f.params, vertices=fits.vertices(morph, f), ext=f.ext)

    class _Engine:
        pass

    engine = _Engine()
    engine.aligner, engine.detector = aligner, detector
    res: dict = {"tag": args.tag, "tree": args.tree, "step": args.step, "identity": {}, "seam": {}}
    sources = {n: SOURCES[n] for n in args.sources.split(",")}
    photos, textures, src_desc, src_fit = {}, {}, {}, {}
    for name, (rel, _) in sources.items():
        img = cv2.imread(str(ASSETS / rel))
        img = fits.detector_ready(img)
        photos[name] = img
        textures[name] = fit_swap_texture(img, engine)
        src_fit[name] = fits.fit_image(img, refine=2)
        src_desc[name] = desc(img, desc.box(img, src_fit[name].landmarks))

    renderer = FrameRenderer("swap", morph, False)
    keep_opt = {"keep_target_eyes": True} if args.keep_target_eyes else {}
    # what the texture keeps of each source: swapped onto its own photo (the product's texture on the bench's fit)
    res["self_swap"] = {}
    for name, img in photos.items():
        f = src_fit[name]
        renderer.set_swap_texture(textures[name], **keep_opt)
        out = renderer.render(img, [record(f, 0, 0)])
        res["self_swap"][name] = float(np.linalg.norm(desc(out, desc.box(img, f.landmarks)) - src_desc[name]))
        print(f"{args.tag} {name:8s} swapped onto its own photo: {res['self_swap'][name]:.3f} from it", flush=True)
    t_swap: list[float] = []
    picks: dict = {}
    for vname in args.videos.split(","):
        path = DRIVING / f"{vname}.mp4"
        n = int(cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FRAME_COUNT)) // args.step + 1
        frames, vfits = fits.fit_video(path, n, args.step)
        items = [(k, fr, f) for k, (fr, f) in enumerate(zip(frames, vfits)) if f is not None]
        if args.max_frames:
            items = items[:: max(1, len(items) // args.max_frames)][: args.max_frames]
        tgt = []
        for k, frame, f in items:
            rect = desc.box(frame, f.landmarks)
            tgt.append((rect, desc(frame, rect)))
        # frames for the sheets: the widest open mouth, the most closed eyes, the middle one
        lm = np.stack([f.landmarks for _, _, f in items])
        size = np.array([quality.face_size(x) for x in lm])
        mouth = (lm[:, 66, 1] - lm[:, 62, 1]) / size
        eyes = (np.linalg.norm(lm[:, 37, :2] - lm[:, 41, :2], axis=1) + np.linalg.norm(lm[:, 43, :2] - lm[:, 47, :2],
                                                                                        axis=1)) / size
        picks[vname] = [int(np.argmax(mouth)), int(np.argmin(eyes)), len(items) // 2]
        # one track per video: what the renderer keeps per track (colour statistics) starts afresh; the records
        # (their meshes) are the same for every source
        faces = [record(f, k, 1 + args.videos.split(",").index(vname)) for k, _, f in items]
        for name, tex in textures.items():
            renderer.set_swap_texture(tex, **keep_opt)
            d_ss, d_st, d_ts, closer = [], [], [], []
            seams: dict[str, list[float]] = {}
            mouth_changed = []
            row = []
            for j, ((k, frame, f), (rect, d_t), face) in enumerate(zip(items, tgt, faces)):
                t0 = time.perf_counter()
                out = renderer.render(frame, [face])
                t_swap.append(time.perf_counter() - t0)
                d_s = desc(out, rect)
                d_ss.append(float(np.linalg.norm(d_s - src_desc[name])))
                d_st.append(float(np.linalg.norm(d_s - d_t)))
                d_ts.append(float(np.linalg.norm(d_t - src_desc[name])))
                closer.append(d_ss[-1] < d_st[-1])
                # the seams against the frame as the holes show it (the target's inner eyes laid into the source's
                # eye outline, where the tree does that), so every hole's boundary is measured
                ref = renderer.swap_reference(frame, [face]) if hasattr(renderer, "swap_reference") else frame
                for key, val in quality.seam_ratios(out, ref, f.landmarks).items():
                    seams.setdefault(key, []).append(val)
                for key, val in quality.tone_steps(out, frame, f.landmarks).items():
                    seams.setdefault(f"tone_{key}", []).append(val)
                if mouth[j] > 0.04:  # the inner lips are apart: the target's own mouth must show
                    inner = quality.polygon_mask(frame.shape[:2], f.landmarks[60:68, :2])
                    inner = cv2.erode(inner.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
                    if inner.any():
                        mouth_changed.append(float((np.abs(out.astype(int) - frame.astype(int)).max(2)[inner]
                                                    > 3).mean()))
                if j in picks[vname]:
                    row += [crop(frame, f.landmarks), crop(out, f.landmarks)]
            ss, st, ts = np.mean(d_ss), np.mean(d_st), np.mean(d_ts)
            res["identity"][f"{name}/{vname}"] = {
                "frames": len(items), "dist_swap_source": float(ss), "dist_swap_target": float(st),
                "dist_target_source": float(ts), "closer_to_source": float(np.mean(closer)),
                "moved": float(1 - ss / ts), "kind": sources[name][1]}
            res["seam"][f"{name}/{vname}"] = {k: float(np.nanmean(v)) if np.isfinite(v).any() else None
                                              for k, v in seams.items()}
            res["seam"][f"{name}/{vname}"]["mouth_changed_max"] = max(mouth_changed) if mouth_changed else None
            print(f"{args.tag} {name:8s} on {vname:4s}: swap-src {ss:.3f} swap-tgt {st:.3f} tgt-src {ts:.3f} "
                  f"closer {np.mean(closer):4.0%} moved {1 - ss / ts:4.0%} seams "
                  + " ".join(f"{k} {v:.2f}" for k, v in res["seam"][f"{name}/{vname}"].items()
                             if isinstance(v, float)), flush=True)
            if args.sheets:
                picks.setdefault("_rows", {}).setdefault(name, []).append(np.concatenate(row, 1))
    res["swap_ms_median"] = float(np.median(t_swap) * 1e3)
    res["swap_ms_p90"] = float(np.percentile(t_swap, 90) * 1e3)
    print(f"{args.tag} swap per face (FrameRenderer.render): median {res['swap_ms_median']:.1f} ms, "
          f"p90 {res['swap_ms_p90']:.1f} ms over {len(t_swap)}")
    if args.sheets:
        Path(args.sheets).parent.mkdir(parents=True, exist_ok=True)
        for name, rows in picks.get("_rows", {}).items():
            src = crop(photos[name], src_fit[name].landmarks)
            width = max(r.shape[1] for r in rows)
            rows = [np.concatenate([src, r, np.zeros((200, width - r.shape[1], 3), np.uint8)], 1) for r in rows]
            sheet = np.concatenate(rows, 0)
            cv2.putText(sheet, f"{args.tag} {name}: source | per video (open mouth, blink, mid): target, swap",
                        (5, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 255, 255), 1)
            cv2.imwrite(f"{args.sheets}_{name}.png", sheet)
    print(json.dumps(res, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
