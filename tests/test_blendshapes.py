"""ARKit blendshapes (model.blendshapes, tracking.blendshape_tracker): the names, the table, the neutral each track learns,
left/right on mirrored faces, built on the 3DMM's own geometry (random identities, no clip)."""
from __future__ import annotations

import numpy as np
import pytest

from model.blendshapes import (ARKIT_NAMES, ESTIMATED, INDEX, MIRROR_68, MIRROR_NAMES, N_BLEND, N_SIGNALS, SIG,
                               SIGNALS, TABLE, activations, blendshapes, coefficients, model_points, raw_signals)
from model.expression_ext import N_EXT
from tests.run_defaults import neutral_defaults
from tracking.blendshape_tracker import BlendshapeTracker, NeutralAdapter, NeutralConfig

REQUIRED = ("eyeBlinkLeft", "eyeBlinkRight", "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight",
            "jawOpen", "jawLeft", "jawRight", "mouthClose", "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft",
            "mouthFrownRight", "mouthLeft", "mouthRight", "mouthPucker", "mouthFunnel", "browInnerUp",
            "browDownLeft", "browDownRight", "browOuterUpLeft", "browOuterUpRight")


@pytest.fixture(scope="module")
def basis():
    from model.morphable import MorphableModel

    return MorphableModel.load().sparse


def _params(rng: np.random.Generator, n: int = 1, exp_sd: float = 0.0) -> np.ndarray:
    """Frontal faces of random identities (shape ~ N(0, 1e5 * 0.3)), expression ~ N(0, exp_sd)."""
    p = np.zeros((n, 62), np.float32)
    p[:, 0] = p[:, 5] = p[:, 10] = 6e-4
    p[:, 3], p[:, 7] = 60, 60
    p[:, 12:52] = rng.normal(0, 3e4, (n, 40))
    p[:, 52:62] = rng.normal(0, exp_sd, (n, 10))
    return p


def _ext(**kw: float) -> np.ndarray:
    from model.expression_ext import ext_vector

    return ext_vector(**kw)


def test_names_are_apples_52_in_order_and_the_required_ones_are_estimated() -> None:
    assert len(ARKIT_NAMES) == N_BLEND == 52 and len(set(ARKIT_NAMES)) == 52
    assert ARKIT_NAMES[:2] == ("eyeBlinkLeft", "eyeLookDownLeft") and ARKIT_NAMES[14:18] == (
        "jawForward", "jawLeft", "jawRight", "jawOpen") and ARKIT_NAMES[-1] == "tongueOut"
    assert set(REQUIRED) <= set(ESTIMATED)
    assert [r[0] for r in TABLE if r[0] not in ARKIT_NAMES] == []
    # the mirror of every name is a name, and mirroring twice is the identity
    assert (MIRROR_NAMES[MIRROR_NAMES] == np.arange(52)).all()
    assert ARKIT_NAMES[MIRROR_NAMES[INDEX["eyeBlinkLeft"]]] == "eyeBlinkRight"
    assert ARKIT_NAMES[MIRROR_NAMES[INDEX["jawOpen"]]] == "jawOpen"


def test_unestimated_names_stay_zero_and_values_in_unit_interval() -> None:
    rng = np.random.default_rng(0)
    act = rng.normal(0, 3, (500, N_SIGNALS))
    c = coefficients(act)
    assert c.dtype == np.float32 and c.shape == (500, 52)
    assert c.min() >= 0 and c.max() <= 1
    others = [INDEX[n] for n in ARKIT_NAMES if n not in ESTIMATED]
    assert np.all(c[:, others] == 0)
    assert np.all(c[:, [INDEX[n] for n in ESTIMATED]].max(0) > 0.5)  # every estimated one can rise


def test_each_table_row_answers_its_own_signal() -> None:
    """An activation of +-1 of one measure raises the rows that use it with that sign over their reading at the
    neutral, and no other row."""
    rest = coefficients(np.zeros((1, N_SIGNALS)))[0]
    for sig in SIGNALS:
        for sign in (1.0, -1.0):
            act = np.zeros((1, N_SIGNALS))
            act[0, SIG[sig]] = sign
            c = coefficients(act)[0]
            lit = {ARKIT_NAMES[i] for i in np.flatnonzero(c - rest > 0.05)}
            expected = {name for name, combo, lo, hi, gate in TABLE
                        if (combo.get(sig, 0) * sign - max(lo, 0)) / (hi - lo) > 0.05
                        and (gate is None or gate[0] == "not")}
            assert lit == expected, (sig, sign, lit, expected)


def test_blink_rows_keep_the_eyes_whole_range() -> None:
    """arkit-v6: the blink rows have no flat dead zone at the neutral (a soft knee): the neutral reads 0.03, an eye
    opened wider than it less (toward 0), a lid lowered a little past it more (a look down reads a little, as
    MediaPipe's closure does), rising with the closure to 1 on a closed eye."""
    closure = np.array([-0.2, -0.1, -0.05, 0.0, 0.05, 0.1, 0.3, 0.6, 0.9])
    act = np.zeros((len(closure), N_SIGNALS))
    act[:, SIG["eye_l"]] = closure
    v = coefficients(act)[:, INDEX["eyeBlinkLeft"]]
    assert np.all(np.diff(v[:-1]) > 0) and v[-2] == v[-1] == 1.0
    assert v[0] < 0.002 and v[2] > 0.005  # wider eyes: under the neutral, not all clipped to one value
    assert 0.02 < v[3] < 0.04 and v[4] - v[3] > 0.02 and v[5] - v[4] > 0.03  # the neutral, a lid lowered a little
    # jawOpen likewise keeps lips pressed tighter than the neutral under it: 0.05 at the neutral, 0 at 0.05 units under
    act = np.zeros((3, N_SIGNALS))
    act[:, SIG["gap"]] = [-0.05, 0.0, 1.0]
    jaw = coefficients(act)[:, INDEX["jawOpen"]]
    assert jaw[0] == 0 and 0.04 < jaw[1] < 0.06 and jaw[2] == 1.0


def test_a_rest_face_reads_near_zero_and_full_actions_read_near_one(basis) -> None:
    """At the neutral (a photo's is its identity's prior) every name reads 0 except the blinks and jawOpen, which keep
    headroom under it for wider eyes and pressed lips (0.03-0.05); full actions read near 1."""
    rng = np.random.default_rng(1)
    kept = [INDEX[n] for n in ("eyeBlinkLeft", "eyeBlinkRight", "jawOpen")]
    for _ in range(5):
        p = _params(rng)
        rest = blendshapes(basis, p, _ext())[0]
        assert np.all(np.delete(rest, kept) == 0) and np.all((rest[kept] > 0.02) & (rest[kept] < 0.06))
        blink = blendshapes(basis, p, _ext(eye_close_r=1.0, eye_close_l=1.0))[0]
        assert blink[INDEX["eyeBlinkRight"]] > 0.95 and blink[INDEX["eyeBlinkLeft"]] > 0.95
        half = blendshapes(basis, p, _ext(eye_close_l=0.5))[0]
        assert 0.7 < half[INDEX["eyeBlinkLeft"]] < 0.9 and half[INDEX["eyeBlinkRight"]] < 0.05  # ~(0.5 - 0.05) / 0.55
        wide = blendshapes(basis, p, _ext(eye_close_r=-0.5))[0]
        assert wide[INDEX["eyeWideRight"]] > 0.9 and wide[INDEX["eyeBlinkRight"]] < 0.01
        jaw = blendshapes(basis, p, _ext(jaw_open=2.0))[0]  # lower lip dropped by 0.6 mouth widths
        assert jaw[INDEX["jawOpen"]] > 0.85 and jaw[INDEX["mouthFrownLeft"]] < 0.1 and jaw[INDEX["mouthClose"]] < 0.1
        smile = blendshapes(basis, p, _ext(mouth_corner_up_l=2.0))[0]
        assert smile[INDEX["mouthSmileLeft"]] > 0.8 and smile[INDEX["mouthSmileRight"]] < 0.1
        frown = blendshapes(basis, p, _ext(mouth_corner_up_r=-2.0))[0]
        assert frown[INDEX["mouthFrownRight"]] > 0.8 and frown[INDEX["mouthFrownLeft"]] < 0.1
        pucker = blendshapes(basis, p, _ext(mouth_corner_out_r=-1.5, mouth_corner_out_l=-1.5))[0]
        assert pucker[INDEX["mouthPucker"]] > 0.5 and pucker[INDEX["mouthFunnel"]] < 0.1
        funnel = blendshapes(basis, p, _ext(mouth_corner_out_r=-1.5, mouth_corner_out_l=-1.5, jaw_open=2.0))[0]
        assert funnel[INDEX["mouthFunnel"]] > 0.4


def _mirror(points: np.ndarray) -> np.ndarray:
    m = points[:, MIRROR_68].copy()
    m[..., 0] *= -1
    return m


def test_mirrored_face_swaps_left_and_right(basis) -> None:
    """The subject's own sides: mirroring the face turns every ...Left into the ...Right (ARKit's convention)."""
    rng = np.random.default_rng(2)
    p = _params(rng, exp_sd=0.5)
    e = _ext(eye_close_r=0.9, mouth_corner_up_l=1.5, mouth_corner_out_r=1.2, eye_close_l=-0.3)
    pts, prior = model_points(basis, p, e)
    c = coefficients(activations(raw_signals(pts), raw_signals(prior)))[0]
    cm = coefficients(activations(raw_signals(_mirror(pts)), raw_signals(_mirror(prior))))[0]
    np.testing.assert_allclose(cm, c[MIRROR_NAMES], atol=1e-5)
    assert c[INDEX["eyeBlinkRight"]] > 0.9 and c[INDEX["eyeBlinkLeft"]] < 0.05  # the left eye opened wide
    assert c[INDEX["mouthSmileLeft"]] > 0.5 and c[INDEX["mouthStretchRight"]] > 0.5
    # a jaw moved toward the subject's left (+x in model space) is jawLeft; the mouth likewise
    act = np.zeros((1, N_SIGNALS))
    act[0, SIG["jaw_x"]] = act[0, SIG["mouth_x"]] = 1.0
    c = coefficients(act)[0]
    assert c[INDEX["jawLeft"]] == 1 and c[INDEX["mouthLeft"]] == 1 and c[INDEX["jawRight"]] == 0


def _sequence(basis, rng, bias_exp, bias_ext, n=150, fps=30.0):
    """A person with their own resting face (bias) plus fit noise, then blinks and a wide-open jaw."""
    p = np.repeat(_params(rng), n, 0)
    p[:, 52:62] += bias_exp + rng.normal(0, 0.05, (n, 10))
    e = np.repeat(bias_ext, n, 0) + rng.normal(0, 0.02, (n, N_EXT)).astype(np.float32)
    events = {}
    for f in (20, 21, 22, 100, 101):  # blinks, one inside the warm-up
        e[f, 0:2] = 1.0
        events[f] = "blink"
    for f in range(120, 126):
        e[f, 6] = 2.0
        events[f] = "jaw"
    poses = np.zeros((n, 6), np.float32)
    return p, e, poses, np.arange(n) / fps, events


def test_each_track_learns_its_own_neutral(basis) -> None:
    rng = np.random.default_rng(3)
    tracker = BlendshapeTracker(basis, neutral_defaults())
    for person in range(4):
        bias_exp = rng.normal(0, 0.6, 10)  # a resting face unlike the model's mean expression
        bias_ext = _ext(eye_close_r=rng.uniform(-0.2, 0.3), eye_close_l=rng.uniform(-0.2, 0.3),
                        mouth_corner_up_l=rng.uniform(-0.5, 0.5), jaw_open=rng.uniform(0, 0.3))
        p, e, poses, times, events = _sequence(basis, rng, bias_exp, bias_ext)
        out = np.concatenate([tracker.update([10 + person], p[i:i + 1], e[i:i + 1], poses[i:i + 1], times[i])
                              for i in range(len(p))])
        rest = [i for i in range(70, len(p)) if i not in events and i - 1 not in events]
        assert np.percentile(out[rest][:, [INDEX[n] for n in ESTIMATED]], 95) < 0.15, person
        for f, what in events.items():
            if what == "blink":
                assert min(out[f, INDEX["eyeBlinkLeft"]], out[f, INDEX["eyeBlinkRight"]]) > 0.8, (person, f)
            else:
                assert out[f, INDEX["jawOpen"]] > 0.8, (person, f)
    assert sorted(tracker.adapters) == [10, 11, 12, 13]
    tracker.prune({11})
    assert sorted(tracker.adapters) == [11]


def test_neutral_adapter_warmup_median_adaptation_and_limits() -> None:
    prior = np.full(N_SIGNALS, 0.1)
    prior[SIG["eye_r"]] = prior[SIG["eye_l"]] = 0.28
    cfg = NeutralConfig(warmup_s=1.0, adapt_s=10.0, prior_frames=3)
    a = NeutralAdapter(cfg)
    pose = np.zeros(6)
    rest = prior.copy()
    rest[SIG["gap"]] += 0.03
    for i in range(30):  # warm-up at 30 fps, with a blink on frames 5-7
        s = rest.copy()
        if 5 <= i <= 7:
            s[SIG["eye_r"]] = 0.0
        a.update(s, prior, i / 30, pose)
    assert a.warming
    np.testing.assert_allclose(a.offset[SIG["gap"]], 0.03 * 30 / 33, rtol=1e-6)  # shrunk by 3 prior samples
    assert abs(a.offset[SIG["eye_r"]]) < 1e-9  # the blink did not move the median
    # a turned head teaches nothing
    before = a.offset.copy()
    a.update(rest + 0.05, prior, 1.5, np.array([45.0, 0, 0, 0, 0, 0]))
    np.testing.assert_array_equal(a.offset, before)
    # after the warm-up: a fixed step per second, toward the observation, whatever its size
    s = rest.copy()
    s[SIG["corner_l"]] += 1.0  # a big smile held 2 s moves the corner's neutral by 2/10 of a unit (0.08)
    t = 1.5
    for _ in range(60):
        t += 1 / 30
        a.update(s, prior, t, pose)
    np.testing.assert_allclose(a.offset[SIG["corner_l"]], 0.08 * (2.0 - 1 / 30) / 10, rtol=0.05)
    # never beyond the limit
    for _ in range(3000):
        t += 1 / 30
        a.update(s, prior, t, pose)
    assert a.offset[SIG["corner_l"]] == pytest.approx(0.08 * 1.0)


def test_a_talkers_neutral_mouth_is_closed_and_words_read_open() -> None:
    """Lips part on most frames of speech: the lip gap's neutral is a low quantile (the closed mouth), not the median
    (which would be an open mouth, so half the words would read jawOpen 0); the eyes keep the median."""
    from model.blendshapes import QUANTILES

    prior = np.full(N_SIGNALS, 0.1)
    prior[SIG["eye_r"]] = prior[SIG["eye_l"]] = 0.28
    a = NeutralAdapter(NeutralConfig(warmup_s=2.0, adapt_s=30.0))
    rng = np.random.default_rng(0)
    opening = np.where(rng.random(60) < 0.3, 0.0, rng.uniform(0.05, 0.2, 60))  # 30% closed, words in between
    for i, g in enumerate(opening):  # 2 s of speech at 30 fps
        s = prior.copy()
        s[SIG["gap"]] += g
        a.update(s, prior, i / 30, np.zeros(6))
    q = QUANTILES[SIG["gap"]]
    assert q < 0.3 and QUANTILES[SIG["eye_r"]] > 0.5  # the eyes' neutral: a little wider than their median
    assert a.offset[SIG["gap"]] == pytest.approx(np.quantile(opening, q))
    assert a.offset[SIG["gap"]] < 0.3 * np.median(opening)
    # afterwards a running quantile: a second of words (gap above the neutral) moves it up by 2q steps a frame, a
    # second of closed mouth back down by 2(1 - q) steps a frame (to the closed mouth, within one step)
    before, t = a.offset[SIG["gap"]], 59 / 30
    step = 0.30 / 30 / 30  # the gap's unit (0.30 face sizes) per adapt_s (30 s), per frame at 30 fps

    def second(g: float) -> None:
        nonlocal t
        for _ in range(30):
            t += 1 / 30
            s = prior.copy()
            s[SIG["gap"]] += g
            a.update(s, prior, t, np.zeros(6))
    second(0.15)
    assert a.offset[SIG["gap"]] == pytest.approx(before + 30 * 2 * q * step)
    second(0.0)
    assert abs(a.offset[SIG["gap"]]) <= 2 * (1 - q) * step + 1e-12


def test_the_ext_rig_reads_back_what_drives_it(basis) -> None:
    """The rig of our own mesh (``ext_rig``: the page's 3D view driven by blendshapes) shows each rigged name at 1
    on the mean face; the estimator reads that name back at ~1 and the others near 0; 0 is the mean face."""
    from model.blendshapes import RIG, ext_rig

    rig = ext_rig(basis)
    assert rig.shape == (N_EXT, 52)
    p = np.zeros((1, 62), np.float32)
    for name, *_ in RIG:
        b = np.zeros(52)
        b[INDEX[name]] = 1.0
        out = blendshapes(basis, p, (rig @ b)[None].astype(np.float32))[0]
        others = np.delete(out, INDEX[name])
        assert out[INDEX[name]] > 0.9 and others.max() < 0.25, (name, out[INDEX[name]], others.max())
    rigged = {r[0] for r in RIG}
    assert not rig[:, [INDEX[n] for n in ARKIT_NAMES if n not in rigged]].any()
