"""Render and swap quality on shared videos (issue 16): mesh coverage, occluder, mouth, seam, hidden side, and a
contact sheet of mesh modes and swaps. Runs the product code of a tree (``--tree``, default this one) so that
the same measures are taken before and after a change; fits come from bench/face_fits.py (cached).

Occluder: the share of face pixels (over 30 levels) that change when the source photo carries a band and strands
(``quality.occluder``), each photo fitted on its own as the product does (``occluder_changed_*``: the refit's
geometry counts too), and both sampled through the clean photo's fit (``occluder_same_fit_changed_*``: the occluder
alone, what ``test_occluder_on_the_source_does_not_reach_the_swap`` holds), and the refitted pair counting only the
pixels that no pixel within 1 px of them matches (``occluder_beyond_1px_changed_*``: the refit shifts fine detail
such as brow hairs and lash lines by a pixel, which the first figure counts as change).

    python bench/face_quality.py [--tree DIR] [--tag after] [--sheet bench/_work/i16_sheet_after.jpg]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types
from pathlib import Path

import numpy as np

from face_crop import face_crop  # bench/face_crop.py (this folder)
from load_by_path import load_by_path  # bench/load_by_path.py (this folder)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


ASSETS = Path(os.environ.setdefault("DAMDNET_ASSETS", str(REPO.parent / "shared" / "assets")))
LP = ASSETS / "KwaiVGI/LivePortrait/assets/examples"
VIDEOS = {"d0": (LP / "driving/d0.mp4", 78, 1), "d10": (LP / "driving/d10.mp4", 40, 3)}
SOURCES = {"plain": ASSETS / "LeiJiangJNU/DAMDNet/imgs/jolie.jpg"}


def changed_beyond_shift(a: np.ndarray, b: np.ndarray, level: int, reach: int) -> np.ndarray:
    """(H, W) bool: pixels of ``a`` (H, W, 3) uint8 that differ by more than ``level`` (max over channels) from every
    pixel of ``b`` within ``reach`` px (a (2 reach + 1)^2 window): what changed beyond a small misregistration."""
    import cv2

    a16 = a.astype(np.int16)
    pad = cv2.copyMakeBorder(b, reach, reach, reach, reach, cv2.BORDER_REPLICATE).astype(np.int16)
    h, w = a.shape[:2]
    best = np.full((h, w), 32767, np.int16)
    for dy in range(2 * reach + 1):
        for dx in range(2 * reach + 1):
            np.minimum(best, np.abs(a16 - pad[dy:dy + h, dx:dx + w]).max(2), out=best)
    return best > level


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tree", default=str(REPO))
    ap.add_argument("--tag", default="after")
    ap.add_argument("--sheet", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--fringe", default=str(ASSETS / "faces/deepface_tests/img20.jpg"))
    ap.add_argument("--turned", default=None)
    args = ap.parse_args()
    sys.path.insert(0, args.tree)
    import model  # noqa: F401  (the tree's package; the measures' outline comes from this tree's face_mesh)

    if not (Path(args.tree) / "model/face_mesh.py").is_file():
        load_by_path(REPO / "model/face_mesh.py", "model.face_mesh")
    quality = load_by_path(REPO / "stream/render/quality.py", "_quality")
    fits = load_by_path(HERE / "face_fits.py", "_fits")
    import cv2

    from model.morphable import MorphableModel
    from model.raster.zbuffer import rasterize
    from stream.app import fit_swap_texture
    from stream.render.overlays import render_overlay
    from stream.render import swap as swap_module
    from stream.render.swap import swap_faces

    morph = MorphableModel.load()
    aligner, detector = fits.engine()
    engine = types.SimpleNamespace(aligner=aligner, detector=detector)
    sources = dict(SOURCES)
    sources["fringe"] = Path(args.fringe)
    if args.turned:
        sources["turned"] = Path(args.turned)
    textures, photos = {}, {}
    for name, path in sources.items():
        img = cv2.imread(str(path))
        if name == "turned":  # a UTKFace chip: too tight for the detector
            img = fits.detector_ready(img)
        photos[name] = img
        textures[name] = fit_swap_texture(img, engine)
    res: dict = {"tag": args.tag, "tree": args.tree}

    def decode(f):  # the pipeline's mesh: with the fit's extended expression (eyelids, mouth)
        return fits.vertices(morph, f)

    # -- mesh coverage, seam, mouth -----------------------------------------------------------------------------
    sheet_rows = []
    t_swap = []
    for vname, (path, n, step) in VIDEOS.items():
        frames, vfits = fits.fit_video(path, n, step)
        outside, cover, seams, mouth_bad, mouth_n = [], [], [], [], 0
        boundary: dict[str, list[float]] = {}
        track: dict = {}  # the target's state across the video (its open-eye level, colour statistics)
        for k, (frame, f) in enumerate(zip(frames, vfits)):
            if f is None:
                continue
            v = decode(f)
            lm = f.landmarks
            h, w = frame.shape[:2]
            mask = rasterize(v, morph.tri, None, h, w).tri_id >= 0
            hull = quality.face_hull(lm, morph.sparse.u)
            o, c = quality.mesh_coverage(mask, hull, quality.face_size(lm))
            outside.append(o)
            cover.append(c)
            t0 = time.perf_counter()
            out = swap_faces(frame, [v], morph.tri, textures["plain"], landmarks=[lm], color_states=[track])
            t_swap.append(time.perf_counter() - t0)
            # against the frame as the holes show it: the target's inner eyes laid into the source's eye outline
            # (trees that do that), so every hole's boundary is measured
            ref = (swap_module.holes_reference(frame, [lm], [track.get("shown_eyes")])
                   if hasattr(swap_module, "holes_reference") else frame)
            seams.append(quality.seam_ratio(out, ref))
            for key, val in quality.seam_ratios(out, ref, lm).items():
                boundary.setdefault(key, []).append(val)
            size = quality.face_size(lm)
            if lm[66, 1] - lm[62, 1] > 0.04 * size:  # the inner-lip gap is open
                inner = quality.polygon_mask((h, w), lm[60:68, :2])
                inner = cv2.erode(inner.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
                d = np.abs(out.astype(int) - frame.astype(int)).max(2)[inner]
                mouth_bad.append(float((d > 3).mean()) if d.size else 0.0)
                mouth_n += 1
            if k in (len(frames) // 3,):
                row = [frame]
                for mode in ("mesh", "wireframe", "depth", "pncc"):
                    row.append(render_overlay(frame, [{"vertices": v}], mode, morph.tri, grid_shape=morph.grid_shape,
                                              reference=morph.dense_basis.u))
                for name in textures:
                    row.append(swap_faces(frame, [v], morph.tri, textures[name], landmarks=[lm]))
                box = lm[:, :2]
                cx, cy = box.mean(0)
                half = 0.75 * max(np.ptp(box[:, 0]), np.ptp(box[:, 1]))
                x0, y0 = int(max(0, cx - half)), int(max(0, cy - half * 1.1))
                x1, y1 = int(min(w, cx + half)), int(min(h, cy + half * 0.9))
                sheet_rows.append([cv2.resize(np.ascontiguousarray(im[y0:y1, x0:x1]), (200, 200),
                                              interpolation=cv2.INTER_AREA) for im in row])
        res[vname] = {"frames": len(outside), "mesh_outside_p95": float(np.percentile(outside, 95)),
                      "mesh_outside_mean": float(np.mean(outside)), "hull_cover_min": float(np.min(cover)),
                      "hull_cover_mean": float(np.mean(cover)), "seam_ratio_mean": float(np.nanmean(seams)),
                      "seam_ratio_per_boundary": {k: float(np.nanmean(v)) for k, v in boundary.items()},
                      "mouth_open_frames": mouth_n,
                      "mouth_changed_max": float(np.max(mouth_bad)) if mouth_bad else None}
    res["swap_ms_median"] = float(np.median(t_swap) * 1e3)

    # -- occluder: the plain source with a band and strands vs without, onto d10 ---------------------------------
    src = photos["plain"]
    src_fit = fits.fit_image(src, refine=2)
    occ = quality.occluder(src, src_fit.landmarks)
    tex_occ = fit_swap_texture(occ, engine)
    # the same, both textures sampled through the clean photo's fit: the occluder alone, without the refit's
    # geometry (the band moves the detector's box and so the fit by a few % of the face)
    from stream.render.texture import build_texture

    def sampled(image):
        return build_texture(image, decode(src_fit), morph.tri, morph.grid_shape, landmarks=src_fit.landmarks,
                             uv=morph.uv)

    same_fit = (sampled(src), sampled(occ))
    frames, vfits = fits.fit_video(*VIDEOS["d10"])
    fr, fr_same, fr_shift = [], [], []
    for frame, f in list(zip(frames, vfits))[::4]:
        if f is None:
            continue
        v = decode(f)
        face = rasterize(v, morph.tri, None, *frame.shape[:2]).tri_id >= 0
        for (clean, dirty), out in (((textures["plain"], tex_occ), fr), (same_fit, fr_same)):
            a = swap_faces(frame, [v], morph.tri, clean, landmarks=[f.landmarks])
            b = swap_faces(frame, [v], morph.tri, dirty, landmarks=[f.landmarks])
            out.append(float((np.abs(a.astype(int) - b.astype(int)).max(2)[face] > 30).mean()))
            if out is fr:
                occ_pair = (a, b, f.landmarks)
                fr_shift.append(float(changed_beyond_shift(a, b, 30, 1)[face].mean()))
    res["occluder_changed_mean"] = float(np.mean(fr))
    res["occluder_changed_max"] = float(np.max(fr))
    res["occluder_same_fit_changed_mean"] = float(np.mean(fr_same))
    res["occluder_same_fit_changed_max"] = float(np.max(fr_same))
    # the refitted pair again, a pixel counted only when no neighbour within 1 px matches it: the refit's sub-pixel
    # shift of fine detail (brow hairs, lash lines) is not content the occluder brought
    res["occluder_beyond_1px_changed_mean"] = float(np.mean(fr_shift))
    res["occluder_beyond_1px_changed_max"] = float(np.max(fr_shift))

    # -- hidden side / teeth ----------------------------------------------------------------------------------------
    if "turned" in textures:
        res["hidden"] = hidden_side(textures["turned"], fits.fit_image(photos["turned"], refine=2), quality, morph)

    if args.sheet:
        a, b, lm = occ_pair
        extra = [cv2.resize(im, (200, 200), interpolation=cv2.INTER_AREA) for im in
                 (face_crop(src, src_fit.landmarks), face_crop(occ, src_fit.landmarks), face_crop(a, lm),
                  face_crop(b, lm))]
        extra += [cv2.resize(face_crop(photos[n], fits.fit_image(photos[n], refine=2).landmarks), (200, 200))
                  for n in photos if n != "plain"]
        width = max(len(r) for r in sheet_rows)
        rows = [np.concatenate(r + [np.zeros_like(r[0])] * (width - len(r)), 1) for r in sheet_rows]
        extra = extra[:width] + [np.zeros_like(extra[0])] * (width - len(extra))
        rows.append(np.concatenate(extra, 1))
        sheet = np.concatenate(rows, 0)
        cv2.putText(sheet, args.tag, (5, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 255, 255), 2)
        cv2.imwrite(args.sheet, sheet, [cv2.IMWRITE_JPEG_QUALITY, 80])
    print(json.dumps(res, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


def hidden_side(tex, fit, quality, morph) -> dict:
    """The source's far cheek (by depth of its fitted vertices) and nose in the UV texture against its skin (L)."""
    if getattr(tex, "image", None) is None or getattr(morph, "uv", None) is None:
        return {}  # a tree without UV textures (before issue 16)
    v = fit.dense(morph)
    nose = tex.uv[morph.landmark_vertices[[27, 31, 32, 33, 34, 35]]]
    return {"yaw": float(fit.pose[0]), "far_cheek_darker_by": quality.far_cheek_darkness(tex, v, morph.uv),
            "nose_brighter_by": quality.nose_highlight(tex, nose)}


if __name__ == "__main__":
    main()
