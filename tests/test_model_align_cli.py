"""python -m model.align_images: annotated image + results.json on a real photo, clear messages for bad inputs."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
SAMPLE = "cleardusk/3DDFA/samples/test1.jpg"


def _align(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DAMDNET_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "model.align_images", *args, "--device", "cpu"], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=300)


def test_align_cli_on_test1(assets_dir, tmp_path):
    src = assets_dir / SAMPLE
    r = _align(str(src), "--out", str(tmp_path), "--weights", "3ddfa-v2-mb05")
    assert r.returncode == 0, r.stderr
    assert "2 face(s)" in r.stderr
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["model"] == "3ddfa-v2-mb05"
    faces = data["results"][str(src)]
    assert len(faces) == 2
    for f in faces:
        assert np.asarray(f["landmarks"]).shape == (68, 3) and len(f["params"]) == 62
        assert len(f["box"]) == 4 and len(f["roi"]) == 4 and 0.6 <= f["score"] <= 1
        assert all(abs(f[k]) < 45 for k in ("yaw", "pitch", "roll"))
    # left and right debater
    assert sorted(np.asarray(f["landmarks"])[:, 0].mean() for f in faces)[0] < 768 < \
        sorted(np.asarray(f["landmarks"])[:, 0].mean() for f in faces)[1]
    out = cv2.imread(str(tmp_path / faces[0]["image"]))
    orig = cv2.imread(str(src))
    assert out is not None and out.shape == orig.shape
    diff = np.abs(out.astype(int) - orig.astype(int)).sum(2) > 60
    # drawings are on the faces: around each face's landmarks many pixels changed, far away almost none
    for f in faces:
        x1, y1 = np.asarray(f["landmarks"])[:, :2].min(0).astype(int)
        x2, y2 = np.asarray(f["landmarks"])[:, :2].max(0).astype(int)
        assert diff[y1:y2, x1:x2].mean() > 0.02
    assert diff[600:, 600:900].mean() < 0.01  # the empty lower middle (suits, lectern) is untouched


def test_align_cli_bad_inputs(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image at all")
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((240, 320, 3), 90, np.uint8))
    missing = tmp_path / "missing.jpg"
    r = _align(str(bad), str(blank), str(missing), "--out", str(tmp_path / "out"), "--weights", "3ddfa-v2-mb05")
    assert r.returncode == 0  # the blank image was read: no face is not an error (a warning)
    assert f"{bad}: not a readable image" in r.stderr
    assert f"warning: no face found in {blank} (1 image)" in r.stderr
    assert f"{missing}: no such file" in r.stderr
    assert "Traceback" not in r.stderr
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert data["results"] == {str(blank): []}
    r = _align(str(bad), str(missing), "--out", str(tmp_path / "out2"), "--weights", "3ddfa-v2-mb05")
    assert r.returncode == 1  # nothing could be read


def test_align_cli_unknown_weights_is_one_line(tmp_path, assets_dir):
    r = _align(str(assets_dir / SAMPLE), "--out", str(tmp_path), "--weights", "no-such-model")
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: unknown model 'no-such-model'")
    assert len(r.stderr.strip().splitlines()) == 1


def test_align_cli_refine_flag(assets_dir, tmp_path):
    r = _align(str(assets_dir / SAMPLE), "--out", str(tmp_path), "--refine", "-1")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == ["error: --refine -1: expected 0 or more re-crops"]
    r = _align(str(assets_dir / SAMPLE), "--out", str(tmp_path / "r0"), "--weights", "3ddfa-v2-mb05", "--refine", "0")
    assert r.returncode == 0, r.stderr
    from model.roi import roi_from_box, rounded_roi

    faces = json.loads((tmp_path / "r0" / "results.json").read_text())["results"][str(assets_dir / SAMPLE)]
    for f in faces:  # no re-crop: each face's crop is its detector box's
        np.testing.assert_allclose(f["roi"], rounded_roi(roi_from_box(np.asarray([f["box"]], np.float32)))[0],
                                   atol=1e-3)


def _consistent(out: Path) -> dict:
    """results.json lists exactly the annotated images in ``out``, each existing; returns its content."""
    data = json.loads((out / "results.json").read_text())
    named = {f["image"] for faces in data["results"].values() for f in faces}
    assert named == {p.name for p in out.glob("*_aligned.jpg")}, (named, sorted(out.iterdir()))
    assert set(data["models"]) == set(data["results"])
    return data


def test_align_twice_into_one_out_keeps_both_runs_consistent(assets_dir, tmp_path, capsys):
    """A second run into the same --out adds its entries to results.json; the first run's stay, with their images.
    An image aligned again replaces its own entry (and its annotated copy goes when it has no face any more); a
    photo from another folder with the same name gets its own annotated copy. The first run is `auto`: its model
    line says why it is not a DAMDNet."""
    from model.align_images import main

    inp = tmp_path / "in"
    (inp / "other").mkdir(parents=True)
    for rel in ("a.jpg", "b.jpg", "other/b.jpg"):
        shutil.copyfile(assets_dir / SAMPLE, inp / rel)
    out = tmp_path / "out"
    assert main([str(inp / "a.jpg"), "--out", str(out), "--device", "cpu"]) == 0
    line = next(ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("model: "))
    assert line.startswith("model: 3ddfa-v2-mb05 (mobilenet_v1; auto: the authors' DAMDNet is not in the assets"), line
    assert "our damdnet is not released: 1.27 NME points behind 3ddfa-v2-mb05 on the validation set" in line, line

    common = ["--out", str(out), "--device", "cpu", "--weights", "3ddfa-v2-mb05"]
    assert main([str(inp / "b.jpg"), *common]) == 0
    data = _consistent(out)
    assert list(data["results"]) == [str(inp / "a.jpg"), str(inp / "b.jpg")]
    assert all(len(faces) == 2 for faces in data["results"].values())

    assert main([str(inp / "other" / "b.jpg"), *common]) == 0  # same file name, another photo
    data = _consistent(out)
    assert data["results"][str(inp / "other" / "b.jpg")][0]["image"] == "b-2_aligned.jpg"
    assert data["results"][str(inp / "b.jpg")][0]["image"] == "b_aligned.jpg"

    cv2.imwrite(str(inp / "a.jpg"), np.full((240, 320, 3), 90, np.uint8))  # a.jpg again, now without a face
    assert main([str(inp / "a.jpg"), *common]) == 0  # no face is not an error (one warning line)
    data = _consistent(out)
    assert data["results"][str(inp / "a.jpg")] == [] and not (out / "a_aligned.jpg").exists()
    assert len(data["results"]) == 3 and data["model"] == "3ddfa-v2-mb05"
