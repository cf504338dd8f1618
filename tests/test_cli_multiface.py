"""Two faces moving through an image sequence keep two distinct, stable track ids (run_stream.py in a subprocess)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.test_cli_helpers import PEER, TEST1, read_csv_rows, run_cli

pytestmark = pytest.mark.slow

N_FRAMES = 20


@pytest.fixture()
def two_faces(tmp_path: Path, assets_dir: Path) -> Path:
    """~20 PNGs cut from test1.jpg (two people) by a window sliding horizontally: both faces move ~12 px/frame."""
    img = cv2.imread(str(assets_dir / TEST1), cv2.IMREAD_COLOR)
    if img is None:
        pytest.skip("test1.jpg not in the assets")
    h, w = img.shape[:2]
    cw, ch = 1300, 640
    y0 = (h - ch) // 2
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(N_FRAMES):
        x0 = int(round((w - cw) * i / (N_FRAMES - 1)))
        cv2.imwrite(str(folder / f"f{i}.png"), img[y0:y0 + ch, x0:x0 + cw])
    return folder


def test_two_faces_two_stable_ids(tmp_path: Path, two_faces: Path) -> None:
    res = run_cli(["--source", str(two_faces), "--tracks", "x.csv", "--detect-every", "5", *PEER], tmp_path)
    assert res.returncode == 0, res.stderr
    header, rows = read_csv_rows(tmp_path / "x.csv")
    col = {name: i for i, name in enumerate(header)}
    ids = sorted({int(r[col["track_id"]]) for r in rows})
    assert len(ids) == 2, ids
    assert len(rows) == 2 * N_FRAMES  # both faces on every frame
    per_id = {}
    for tid in ids:
        mine = [r for r in rows if int(r[col["track_id"]]) == tid]
        assert [int(r[col["frame"]]) for r in mine] == list(range(N_FRAMES))
        per_id[tid] = np.array([[float(r[col[f"x{k}"]]) for k in range(68)] for r in mine]).mean(1)  # centre x
    left, right = sorted(ids, key=lambda t: per_id[t][0])
    # each id stays on its person: left stays left of right, and both move left as the window slides right
    assert np.all(per_id[left] < per_id[right] - 300)
    for tid in ids:
        steps = np.diff(per_id[tid])
        assert np.all(steps < 0) and np.all(np.abs(steps) < 40)
    # the natural sorting keeps f2 before f10: times follow the frame index
    times = [float(r[col["time"]]) for r in rows if int(r[col["track_id"]]) == left]
    assert times == pytest.approx([i / 25 for i in range(N_FRAMES)])
