"""model.ship: the release rule and the metadata written with shipped weights."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from model.ship import release_ok

REPO = Path(__file__).resolve().parent.parent


def test_release_rule_margin():
    assert release_ok(4.3, 3.87, 1.0) and release_ok(4.87, 3.87, 1.0)
    assert not release_ok(4.88, 3.87, 1.0) and not release_ok(5.52, 3.87, 1.0)
    assert release_ok(3.5, 3.87, 0.0)


@pytest.mark.slow
def test_ship_measures_and_records(assets_dir, tmp_path):
    """Shipping the committed weights to a temp file records both models' figures and the verdict in the metadata."""
    from model.checkpoint import load_file

    out = tmp_path / "ship.pth"
    env = dict(os.environ, DAMDNET_OFFLINE="1")
    r = subprocess.run([sys.executable, "-m", "model.ship", str(REPO / "model/weights/damdnet.pth"), "--out", str(out),
                        "--images", str(assets_dir / "YadiraF/PRNet/TestImages/AFLW2000")],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stderr
    meta = load_file(out).meta
    ours, teacher = meta["validation"]["gt"], meta["validation_teacher"]["gt"]
    assert ours["count"] == 8 and teacher["count"] == 8
    assert 2.0 < teacher["nme_mean_of_bins"] < 6.0 and ours["nme_mean_of_bins"] > 2.0
    assert meta["release"] == release_ok(ours["nme_mean_of_bins"], teacher["nme_mean_of_bins"])
    assert "detector" in meta["validation"] and meta["validation"]["gt"]["pose_mae"]["count"] > 0
    assert "release rule" in r.stdout


def test_ship_missing_checkpoint_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "model.ship", str(tmp_path / "nope.pth"), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 2 and r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
