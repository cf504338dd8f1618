"""glTF animation (stream.gltf): a track written as .glb reads back to the NPZ's vertices at every frame (closed eyes
and lopsided mouths of the extended expression included), passes the structural checks and (when the npm tools are
installed, .ci/run) the Khronos validator; OBJ files carry UVs."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from model.blendshapes import ARKIT_NAMES
from model.expression_ext import EXT_NAMES, EXT_VERSION, N_EXT
from model.morphable import MorphableModel, Whitening
from stream.frames import Frame, VideoInfo
from tracking.face import Face
from stream.gltf import GLBSink, check_glb, load_glb_frames, mesh_uv
from stream.outputs import MeshesOut
from model.blendshapes import BLENDSHAPES_VERSION

JS_DIR = Path(__file__).parent / "js"


def validator_report(path: Path) -> dict | None:
    """The Khronos glTF validator's report of ``path`` (None when node or the npm package is missing)."""
    if shutil.which("node") is None or not (JS_DIR / "node_modules" / "gltf-validator").is_dir():
        return None
    script = ("const v=require('gltf-validator');const d=new Uint8Array(require('fs').readFileSync(process.argv[1]));"
              "v.validateBytes(d).then(r=>console.log(JSON.stringify(r))).catch(e=>{console.error(e);process.exit(1)})")
    out = subprocess.run(["node", "-e", script, str(path)], cwd=JS_DIR, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def three_node_report(path: Path, times: list[float], names: list[str]) -> dict | None:
    """three.js's GLTFLoader + AnimationMixer in Node (tests/js/glb_node.mjs): the named morph targets' influences at
    ``times`` (None when node or three.js is missing)."""
    if shutil.which("node") is None or not (JS_DIR / "node_modules" / "three").is_dir():
        return None
    out = subprocess.run(["node", "glb_node.mjs", str(path), json.dumps(times), json.dumps(names)], cwd=JS_DIR,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def morph() -> MorphableModel:
    return MorphableModel.load()


def blinks_and_smirks(n: int) -> np.ndarray:
    """(n, N_EXT) extended expression: the right eye blinks shut (1) while the left stays open, then the left one;
    one mouth corner rises, the other is pulled out; the jaw opens."""
    t = np.linspace(0, 1, n)
    ext = np.zeros((n, N_EXT), np.float32)
    ext[:, 0] = np.clip(np.sin(2 * np.pi * t) * 1.3, -0.3, 1.0)  # eye_close_r: shut in the first half
    ext[:, 1] = np.clip(-np.sin(2 * np.pi * t) * 1.3, -0.3, 1.0)  # eye_close_l: shut in the second
    ext[:, 2] = 0.8 * t  # mouth_corner_up_r alone
    ext[:, 5] = -0.6 * np.sin(3 * t)  # mouth_corner_out_l
    ext[:, 6] = 0.5 * (1 - np.cos(4 * t))  # jaw_open
    return ext


def head_motion(morph: MorphableModel, n: int, seed: int = 0,
                ext: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(params (n, 62) real, rois (n, 4), vertices (n, V, 3) float32 frame px): a head turning, talking, drifting,
    with a non-square ROI now and then (the crop scales x and y differently); ``ext`` (n, N_EXT) is decoded too."""
    wh = Whitening.load("v1")
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, n)[:, None]
    z = np.zeros((n, 62))
    z[:, :12] = 0.6 * np.sin(2 * np.pi * t * (1 + np.arange(12)) / 6)
    z[:, 12:52] = rng.normal(0, 0.8, 40)  # one person
    z[:, 52:] = 1.2 * np.sin(2 * np.pi * t * (2 + np.arange(10)) / 3)
    params = wh.unwhiten(z.astype(np.float32))
    x0 = 150 + 60 * t[:, 0]
    side = 220 + 30 * np.sin(6 * t[:, 0])
    rois = np.stack([x0, 90 + 0 * x0, x0 + side * (1 + 0.1 * (np.arange(n) % 3 == 1)), 90 + side], 1)
    rois = rois.astype(np.float32)
    return params, rois, morph.dense(params, rois, "v1", ext).astype(np.float32)


def _records(params, rois, verts, morph, ext=None, blend=None) -> list[Face]:
    from model.morphable import pose_from_params

    pose = pose_from_params(params)
    e = [None] * len(params) if ext is None else ext
    b = [None] * len(params) if blend is None else blend
    return [Face(frame=i, time=i / 30, track_id=3, box=rois[i], roi=rois[i], pose=pose[i],
                 landmarks=morph.landmarks(params[i:i + 1], rois[i:i + 1], "v1",
                                           None if e[i] is None else e[i][None])[0],
                 params=params[i], vertices=verts[i], ext=e[i], blendshape_values=b[i]) for i in range(len(params))]


@pytest.mark.parametrize("with_ext", [False, True], ids=["no_ext", "ext"])
def test_glb_reads_back_to_the_npz(tmp_path: Path, morph: MorphableModel, with_ext: bool) -> None:
    n = 24
    ext = blinks_and_smirks(n) if with_ext else None
    params, rois, verts = head_motion(morph, n, ext=ext)
    blend = None
    if with_ext:  # the ARKit weights the pipeline derives (model.blendshapes), frame by frame
        from model.blendshapes import blendshapes

        blend = blendshapes(morph.sparse, params, ext)
    records = _records(params, rois, verts, morph, ext, blend)
    image = np.zeros((480, 640, 3), np.uint8)
    image[:, :, 1] = np.arange(640)[None] % 256
    info = VideoInfo(width=640, height=480, fps=30.0)
    out = MeshesOut(str(tmp_path), morph.tri, "npz+glb", morph, info)
    for r in records:
        out.write_job(SimpleNamespace(frame=Frame(r.frame, r.time, image), faces=[r], output=None))
    out.write_job(SimpleNamespace(frame=Frame(n, (n - 1) / 30, image), faces=[records[-1]], output=None))  # same t
    out.close()
    glb = tmp_path / "track3.glb"
    assert check_glb(glb) == []
    back = load_glb_frames(glb)
    with np.load(tmp_path / "track3.npz") as z:
        npz_v, npz_t = z["vertices"], z["times"]
    assert len(back["times"]) == n == len(npz_v) - 1  # the frame whose time did not advance is not a keyframe
    np.testing.assert_allclose(back["times"], npz_t[:n], atol=1e-6)
    err = np.abs(back["vertices"] - npz_v[:n]).max(axis=(1, 2))
    assert err.max() < 1e-4, err  # frame pixels, every frame
    np.testing.assert_array_equal(back["triangles"], morph.tri)
    np.testing.assert_allclose(back["uv"], mesh_uv(morph))
    names = back["target_names"]
    assert names[:50] == [f"shape{i:02d}" for i in range(40)] + [f"exp{i:02d}" for i in range(10)]
    e = 50 + N_EXT
    assert names[50:e] == ["ext_" + k for k in EXT_NAMES] and back["weights"].shape == (n, e + 52)
    assert names[e:] == list(ARKIT_NAMES) and back["extras"]["blendshape_targets"] == [e, 52]
    assert back["extras"]["blendshapes_measured"] == with_ext and back["extras"]["blendshapes_version"] == BLENDSHAPES_VERSION
    assert back["extras"]["ext_version"] == EXT_VERSION and back["extras"]["ext_measured"] == with_ext
    w_ext = back["weights"][:, 50:e]
    if with_ext:  # the ARKit targets carry the blendshapes by name (blinks, the jaw) and do not move the mesh
        np.testing.assert_allclose(back["blendshapes"], blend, atol=1e-6)
        assert back["blendshapes"][:, ARKIT_NAMES.index("eyeBlinkRight")].max() > 0.9
        assert back["blendshapes"][:, ARKIT_NAMES.index("jawOpen")].max() > 0.2
    else:
        assert not back["blendshapes"].any()
    assert np.abs(back["weights"]).max() <= 1 + 1e-6
    if with_ext:  # weight x scale = the value: the targets carry the blink, and removing them breaks the vertices
        np.testing.assert_allclose(w_ext * np.abs(ext).max(0), ext, atol=1e-5)
        assert np.abs(verts - head_motion(morph, n)[2]).max() > 1  # the ext moves vertices by pixels
    else:
        assert not w_ext.any()
    report = validator_report(glb)
    if report is not None:
        assert report["issues"]["numErrors"] == 0 and report["issues"]["numWarnings"] == 0, report["issues"]
        assert report["info"]["hasMorphTargets"] and report["info"]["hasTextures"]


def test_glb_catches_a_broken_file(tmp_path: Path, morph: MorphableModel) -> None:
    import pygltflib

    params, rois, verts = head_motion(morph, 3, seed=1)
    sink = GLBSink(tmp_path, morph, morph.tri, frame_size=(640, 480))
    sink.write(0, 0.0, _records(params, rois, verts, morph)[:1])
    sink.close()
    g = pygltflib.GLTF2.load_binary(str(tmp_path / "track3.glb"))
    g.accessors[0].count += 1  # POSITION now runs past its buffer view
    g.accessors[g.meshes[0].primitives[0].indices].max = [1]
    bad = tmp_path / "bad.glb"
    g.save_binary(str(bad))
    problems = check_glb(bad)
    assert any("runs past" in p for p in problems) and any("min/max" in p for p in problems), problems


def test_uv_from_grid_attribute_or_plane(morph: MorphableModel) -> None:
    rows, cols = morph.grid_shape
    if getattr(morph, "uv", None) is not None:  # the model's own texture coordinates win
        np.testing.assert_array_equal(mesh_uv(morph), morph.uv)
    grid = SimpleNamespace(n_dense=morph.n_dense, grid_shape=morph.grid_shape, dense_basis=morph.dense_basis)
    uv = mesh_uv(grid)
    assert uv.shape == (morph.n_dense, 2) and uv.min() == 0 and uv.max() == 1
    np.testing.assert_allclose(uv[cols + 2], [2 / (cols - 1), 1 / (rows - 1)])  # k = row*cols + col
    flat = SimpleNamespace(n_dense=morph.n_dense, grid_shape=None, dense_basis=morph.dense_basis)
    planar = mesh_uv(flat)
    assert planar.min() >= 0 and planar.max() <= 1
    top, bottom = np.argmax(morph.dense_basis.u[:, 1]), np.argmin(morph.dense_basis.u[:, 1])
    assert planar[top, 1] < planar[bottom, 1]  # v points down the face
    given = SimpleNamespace(uv=np.full((5, 2), 0.5))
    assert mesh_uv(given).shape == (5, 2)


def test_obj_files_carry_uvs(tmp_path: Path, morph: MorphableModel) -> None:
    params, rois, verts = head_motion(morph, 2, seed=2)
    out = MeshesOut(str(tmp_path), morph.tri, "npz+obj", morph)
    r = _records(params, rois, verts, morph)[0]
    out.write_job(SimpleNamespace(frame=Frame(0, 0.0, np.zeros((8, 8, 3), np.uint8)), faces=[r], output=None))
    out.close()
    lines = (tmp_path / "track3_frame000000.obj").read_text().splitlines()
    vt = np.array([l.split()[1:] for l in lines if l.startswith("vt ")], float)
    faces = [l.split()[1:] for l in lines if l.startswith("f ")]
    uv = mesh_uv(morph)
    np.testing.assert_allclose(vt, np.stack([uv[:, 0], 1 - uv[:, 1]], 1), atol=1e-6)
    assert faces[0] == [f"{k + 1}/{k + 1}" for k in morph.tri[0]]
    assert len(faces) == len(morph.tri)


def test_arkit_targets_validate_and_three_js_plays_them_by_name(tmp_path: Path, morph: MorphableModel) -> None:
    """The 52 ARKit-named targets pass the Khronos validator, and three.js (GLTFLoader + AnimationMixer, in Node)
    finds them by name and plays the track's blendshape weights at every keyframe; they do not move the mesh."""
    from model.blendshapes import blendshapes

    n = 20
    ext = blinks_and_smirks(n)
    params, rois, verts = head_motion(morph, n, seed=4, ext=ext)
    blend = blendshapes(morph.sparse, params, ext)
    sink = GLBSink(tmp_path, morph, morph.tri, frame_size=(640, 480))
    for r in _records(params, rois, verts, morph, ext, blend):
        sink.write(r.frame, r.time, [r])
    sink.close()
    glb = tmp_path / "track3.glb"
    assert check_glb(glb) == []
    back = load_glb_frames(glb)
    np.testing.assert_allclose(back["vertices"], verts, atol=1e-3)  # the carriers move nothing
    report = validator_report(glb)
    if report is not None:
        assert report["issues"]["numErrors"] == 0 and report["issues"]["numWarnings"] == 0, report["issues"]
    names = ["eyeBlinkLeft", "eyeBlinkRight", "jawOpen", "mouthSmileRight", "mouthStretchLeft", "tongueOut"]
    three = three_node_report(glb, back["times"].astype(np.float32).tolist(), names)
    if three is None:
        pytest.skip("node or three.js missing: (cd tests/js && npm ci)")
    assert three["dictionary"][50 + N_EXT:] == list(ARKIT_NAMES) and three["targets"] == 50 + N_EXT + 52
    for name in names:
        np.testing.assert_allclose(three["named"][name], blend[:, ARKIT_NAMES.index(name)], atol=1e-6)
    assert max(three["named"]["eyeBlinkRight"]) > 0.9 and max(three["named"]["eyeBlinkLeft"]) > 0.9
