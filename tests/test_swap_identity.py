"""The swap looks like the source: dlib's ResNet face descriptor (the bench extra: ``dlib-bin``,
``face-recognition-models``) on a short shared clip. Skipped without them. The same measure on more frames and
sources: bench/face_identity.py."""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

pytest.importorskip("dlib")

from model.morphable import MorphableModel  # noqa: E402
from stream.assemble import fit_swap_texture  # noqa: E402
from stream.render.swap import swap_faces  # noqa: E402
from stream.render.texture import build_texture  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import face_fits  # noqa: E402
import face_identity  # noqa: E402

pytestmark = pytest.mark.slow


# (source photo, shared clip, share of frames closer to the source, share of the way moved): the targets are
# 80% / 50% for frontal sources and 50% / 35% for a turned one; a frontal source is held to 40% here
CASES = {
    "jolie-frontal": ("LeiJiangJNU/DAMDNet/imgs/jolie.jpg", "d13", 0.8, 0.4),
    "glasses-frontal": ("faces/deepface_tests/img24.jpg", "d13", 0.8, 0.4),
    "utkface-turned": ("faces/utkface_crop_part1/21_0_0_20170104230101545.jpg.chip.jpg", "d13", 0.5, 0.35),
}


@pytest.mark.parametrize("case", list(CASES))
def test_swap_is_closer_to_the_source_than_to_the_target(assets_dir, case):
    """A source on 8 frames of a shared clip (every 10th): the swapped face is closer to the source than to the
    target on enough of the frames, and its identity moves far enough from the target to the source (jolie.jpg
    before the full swap: closer on none, 21% of the way; the 39-degree UTKFace chip, padded for the detector,
    before its nose stayed its own: 33% of the way, 43% after; 44% with the source's eye outline). The texture is
    the product's (``fit_swap_texture``: the steady fit, the source's 3DMM shape); through a single crop's fit
    (refined twice) the three read 59 / 45 / 44%, through the product's 62 / 48 / 44% (jolie, glasses, turned)."""
    if importlib_missing("face_recognition_models"):
        pytest.skip("face-recognition-models is not installed (the bench extra)")
    path, video, min_closer, min_moved = CASES[case]
    desc = face_identity.Descriptor()
    morph = MorphableModel.load()
    src = face_fits.detector_ready(cv2.imread(str(assets_dir / path)))
    sfit = face_fits.fit_image(src, refine=2)  # the descriptor's box
    aligner, detector = face_fits.engine()
    tex = fit_swap_texture(src, SimpleNamespace(aligner=aligner, detector=detector))  # the product's texture
    d_src = desc(src, desc.box(src, sfit.landmarks))
    frames = face_fits.read_frames(assets_dir / f"KwaiVGI/LivePortrait/assets/examples/driving/{video}.mp4", 8, 10)
    closer, d_ss, d_ts = [], [], []
    track: dict = {}  # one target over the clip, as the renderer keeps it per track (its open-eye level)
    for frame in frames:
        fit = face_fits.fit_image(frame)
        assert fit is not None
        out = swap_faces(frame, [face_fits.vertices(morph, fit)], morph.tri, tex, landmarks=[fit.landmarks],
                         color_states=[track])
        rect = desc.box(frame, fit.landmarks)
        d_t, d_s = desc(frame, rect), desc(out, rect)
        d_ss.append(np.linalg.norm(d_s - d_src))
        d_ts.append(np.linalg.norm(d_t - d_src))
        closer.append(d_ss[-1] < np.linalg.norm(d_s - d_t))
    moved = 1 - np.mean(d_ss) / np.mean(d_ts)
    assert np.mean(closer) >= min_closer, f"closer to the source on {np.mean(closer):.0%} of the frames"
    assert moved >= min_moved, f"the identity moved {moved:.0%} of the way to the source"


def importlib_missing(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is None


@pytest.mark.parametrize("path", ["LeiJiangJNU/DAMDNet/imgs/jolie.jpg", "LeiJiangJNU/DAMDNet/imgs/pitt.jpg"],
                         ids=["jolie", "pitt"])
def test_a_source_swapped_onto_itself_stays_itself(assets_dir, path):
    """What the texture keeps of a frontal source: swapped onto its own photo (one fit for both), the face stays
    within 0.15 of the photo in dlib's descriptor (same person under 0.6). jolie.jpg read 0.21 while the texture
    left out the brow, lids and make-up of her shaded side (one eye made up, the other bare); 0.12 since."""
    if importlib_missing("face_recognition_models"):
        pytest.skip("face-recognition-models is not installed (the bench extra)")
    desc = face_identity.Descriptor()
    morph = MorphableModel.load()
    src = cv2.imread(str(assets_dir / path))
    fit = face_fits.fit_image(src, refine=2)
    verts = face_fits.vertices(morph, fit)
    tex = build_texture(src, verts, morph.tri, morph.grid_shape, landmarks=fit.landmarks, uv=morph.uv)
    out = swap_faces(src, [verts], morph.tri, tex, landmarks=[fit.landmarks])
    rect = desc.box(src, fit.landmarks)
    dist = float(np.linalg.norm(desc(out, rect) - desc(src, rect)))
    assert dist < 0.15, f"the self-swap lies {dist:.3f} from the photo"
