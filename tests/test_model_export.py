"""python -m model.export: dynamic-batch ONNX, checked against eager, decoded by another runtime without our code."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent

# Runs in `python -I` (isolated: no repository on sys.path, no PYTHON* variables): onnxruntime and numpy only.
DECODER = textwrap.dedent('''
    import json, sys
    import numpy as np
    import onnxruntime as ort

    onnx_path, data_path, out_path = sys.argv[1:4]
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    spec = json.loads(sess.get_modelmeta().custom_metadata_map["damdnet"])
    side = json.load(open(onnx_path[:-5] + ".json"))
    assert side == spec, "sidecar and metadata differ"
    data = np.load(data_path)
    crops, rois = data["crops"], data["rois"].astype(np.float64)      # (N, 120, 120, 3) uint8 BGR, (N, 4)
    x = ((crops.astype(np.float32) - 127.5) / 128).transpose(0, 3, 1, 2)
    out = sess.run([spec["output"]["name"]], {spec["input"]["name"]: np.ascontiguousarray(x)})[0]
    w = spec["whitening"]
    params = out.astype(np.float64) * np.array(w["std"]) + np.array(w["mean"])
    lay, lm = spec["params_layout"], spec["landmarks68"]
    P = params[:, lay["camera"][0]:lay["camera"][1]].reshape(-1, 3, 4)
    a_shp = params[:, lay["shape"][0]:lay["shape"][1]]
    a_exp = params[:, lay["expression"][0]:lay["expression"][1]]
    mean = np.array(lm["mean"])
    wshp = np.array(lm["shape_basis"]).reshape(lm["shape_basis_shape"])
    wexp = np.array(lm["expression_basis"]).reshape(lm["expression_basis_shape"])
    S = (mean + a_shp @ wshp.T + a_exp @ wexp.T).reshape(-1, 68, 3)
    v = S @ P[:, :, :3].transpose(0, 2, 1) + P[:, None, :, 3]
    size = spec["input"]["crop_size"]
    if spec["convention"] == "v1":
        v[..., 1] = size + 1 - v[..., 1]
    else:
        v[..., 0] -= 1; v[..., 2] -= 1; v[..., 1] = size - v[..., 1]
    sx = (rois[:, 2] - rois[:, 0]) / size
    sy = (rois[:, 3] - rois[:, 1]) / size
    v[..., 0] = v[..., 0] * sx[:, None] + rois[:, 0:1]
    v[..., 1] = v[..., 1] * sy[:, None] + rois[:, 1:2]
    v[..., 2] = v[..., 2] * ((sx + sy) / 2)[:, None]
    if spec["convention"] == "v2":
        v[..., 2] -= v[..., 2].min(axis=1, keepdims=True)
    assert not any(m.split(".")[0] in ("model", "stream", "tracking", "damdnet", "torch") for m in sys.modules)
    np.save(out_path, v)
''')


def _decode_elsewhere(onnx_path: Path, crops: np.ndarray, rois: np.ndarray, tmp: Path) -> np.ndarray:
    np.savez(tmp / "in.npz", crops=crops, rois=rois)
    script = tmp / "decode.py"
    script.write_text(DECODER)
    res = subprocess.run([sys.executable, "-I", str(script), str(onnx_path), str(tmp / "in.npz"),
                          str(tmp / "lm.npy")], cwd=tmp, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return np.load(tmp / "lm.npy")


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["damdnet", "3ddfa-v2-mb05"])  # conventions v1 and v2
def test_export_decodes_without_our_code_and_matches_the_aligner(tmp_path: Path, assets_dir: Path,
                                                                 weights: str) -> None:
    import cv2
    import onnx

    from model.aligner import Aligner
    from model.assets import AssetStore
    from model.detect import FaceDetector
    from model.roi import crop_roi, roi_from_box

    out = tmp_path / "exp" / f"{weights}.onnx"
    res = subprocess.run([sys.executable, "-m", "model.export", "--weights", weights, "--format", "onnx",
                          "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert out.is_file() and out.with_suffix(".json").is_file()
    graph = onnx.load(str(out)).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    assert graph.output[0].type.tensor_type.shape.dim[0].dim_param

    store = AssetStore()
    img = cv2.imread(str(assets_dir / "cleardusk/3DDFA/samples/test1.jpg"))
    boxes, _ = FaceDetector.create("auto", store)(img)
    assert len(boxes) >= 2
    # the eager network alone: the export is the network (the expression stage after it is not part of it)
    aligner = Aligner.from_checkpoint(weights, device="cpu", store=store, fast_path="none", expression=False)
    for n in (1, len(boxes)):  # one face, then all of them in one batch
        ours = aligner.align(img, roi_from_box(boxes[:n]))
        crops = np.stack([crop_roi(img, r) for r in ours.roi])
        theirs = _decode_elsewhere(out, crops, ours.roi, tmp_path)
        assert theirs.shape == (n, 68, 3)
        err = np.abs(theirs - ours.landmarks).max()
        assert err < 0.02, f"landmarks differ by {err:.4f} px"  # float32 ONNX vs eager: ~1e-6 in whitened units
        face = float(np.ptp(ours.landmarks[..., 0]))
        assert face > 20  # a real face, not a degenerate decode


def test_export_is_refused_when_it_disagrees_or_has_a_fixed_batch(tmp_path: Path, monkeypatch) -> None:
    """A graph that does not reproduce the eager network, or has a fixed batch, is refused before anything is
    written (a tiny stand-in graph keeps this test fast; the real export is checked the same way above)."""
    import io

    import torch

    from model import export as E
    from model.ort_forward import export_onnx_bytes

    tiny = torch.nn.Sequential(torch.nn.Conv2d(3, 62, 120), torch.nn.Flatten()).eval()
    monkeypatch.setattr(E, "export_bytes", lambda loaded: export_onnx_bytes(tiny))
    with pytest.raises(E.ExportError, match="differs from the eager network by .* > 0.0001; nothing written"):
        E.export_onnx("damdnet", tmp_path / "x.onnx")
    assert list(tmp_path.iterdir()) == []
    assert E.check_against_eager(export_onnx_bytes(tiny), tiny) < 1e-4  # the same graph against itself passes
    buf = io.BytesIO()
    torch.onnx.export(tiny, (torch.zeros(2, 3, 120, 120),), buf, input_names=["crops"], output_names=["params"],
                      dynamo=False)
    with pytest.raises(E.ExportError, match="fixed batch size"):
        E.check_against_eager(buf.getvalue(), tiny)


def test_decode_spec_layout_and_bases(assets_dir: Path) -> None:
    """The spec holds the checkpoint's whitening, the 62-parameter layout and the Aligner's own 68-point basis."""
    from model.assets import AssetStore
    from model.checkpoint import load_model
    from model.export import decode_spec
    from model.morphable import MorphableModel

    store = AssetStore()
    loaded = load_model("damdnet", store)
    morph = MorphableModel.load(store)  # what the Aligner decodes with
    spec = json.loads(json.dumps(decode_spec(loaded, MorphableModel.load(store, follow_landmarks=False))))
    assert spec["convention"] == loaded.convention and spec["input"]["shape"] == ["n", 3, 120, 120]
    np.testing.assert_allclose(spec["whitening"]["std"], loaded.whitening.std, rtol=1e-6)
    np.testing.assert_allclose(spec["whitening"]["mean"], loaded.whitening.mean, rtol=1e-6, atol=1e-9)
    lay = spec["params_layout"]
    assert (lay["camera"], lay["shape"], lay["expression"]) == ([0, 12], [12, 52], [52, 62])
    lm = spec["landmarks68"]
    np.testing.assert_allclose(np.reshape(lm["mean"], (68, 3)), morph.sparse.u, atol=1e-6)
    np.testing.assert_allclose(np.reshape(lm["shape_basis"], (68, 3, 40)), morph.sparse.w_shp, atol=1e-6)
    np.testing.assert_allclose(np.reshape(lm["expression_basis"], (68, 3, 10)), morph.sparse.w_exp, atol=1e-6)


def test_export_cli_errors_are_one_line(tmp_path: Path) -> None:
    for args, needle in ([["--weights", "nope", "--out", "x.onnx"], "unknown model 'nope'"],
                         [["--weights", "damdnet", "--out", "x.txt"], "expected a .onnx file name"],
                         [["--weigths", "damdnet", "--out", "x.onnx"], "did you mean --weights?"]):
        res = subprocess.run([sys.executable, "-m", "model.export", *args], cwd=tmp_path, capture_output=True,
                             text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
        lines = [x for x in res.stderr.splitlines() if x.strip()]
        assert res.returncode == 2 and len(lines) == 1 and needle in lines[0], res.stderr
    assert list(tmp_path.iterdir()) == []
