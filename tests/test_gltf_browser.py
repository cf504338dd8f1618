"""A .glb of a shared video, written by the real CLI, opened by three.js's GLTFLoader in headless Chromium: the
animation plays through AnimationMixer, and the morphed, posed vertices three.js computes match the NPZ of the same
run; the page renders three frames (screenshot in tmp_path; GLB_ARTIFACTS=DIR keeps it)."""
from __future__ import annotations

import asyncio
import functools
import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from model.expression_ext import N_EXT
from stream.gltf import check_glb, load_glb_frames, world_from_pixels
from tests import webrtc_helpers as H
from tests.test_gltf import JS_DIR, validator_report

CHROMIUM = H.CHROMIUM
pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(300)]


def _skip_reason() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} missing: apt-get install -y chromium"
    if not (JS_DIR / "node_modules" / "three").is_dir():
        return "three.js missing: (cd tests/js && npm ci)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright missing"
    return None


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


async def _open_in_three(url: str, shot: Path) -> dict:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--enable-unsafe-swiftshader", "--use-angle=swiftshader"])
        try:
            page = await browser.new_page(viewport={"width": 1120, "height": 400})
            console: list[str] = []
            page.on("console", lambda m: console.append(m.text))
            await page.goto(url)
            await page.wait_for_function("document.title !== 'loading'", timeout=120_000)
            result = await page.evaluate("window.result")
            result["console"] = console
            await page.screenshot(path=str(shot))
            return result
        finally:
            await browser.close()


@pytest.mark.skipif(_skip_reason() is not None, reason=f"needs: {_skip_reason()}")
def test_cli_glb_opens_in_three_js(assets_dir: Path, repo_root: Path, tmp_path: Path) -> None:
    video = assets_dir / H.FACE_VIDEO
    if not video.exists():
        pytest.skip(f"{video} missing")
    meshes = tmp_path / "meshes"
    run = subprocess.run([sys.executable, "run_stream.py", "--source", str(video), "--max-frames", "30",
                          "--meshes", str(meshes), "--mesh-format", "npz+glb", "--weights", "damdnet",
                          "--progress", "false"], cwd=repo_root, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    glb = meshes / "track1.glb"
    assert check_glb(glb) == []
    report = validator_report(glb)
    assert report is not None and report["issues"]["numErrors"] == 0, report and report["issues"]
    with np.load(meshes / "track1.npz") as z:
        npz_v, times = z["vertices"], z["times"]
    assert len(times) == 30

    root = tmp_path / "www"
    root.mkdir()
    shutil.copy(JS_DIR / "glb_view.html", root / "glb_view.html")
    os.symlink(JS_DIR / "node_modules", root / "node_modules")
    shutil.copy(glb, root / "track1.glb")
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    frames = [0, 13, 29]
    verts = [0, 1000, 2080, len(npz_v[0]) - 1]
    t = [float(np.float32(times[f])) for f in frames]  # the keyframe times as stored (float32)
    names = ["eyeBlinkLeft", "eyeBlinkRight", "jawOpen", "mouthSmileLeft", "browInnerUp"]
    url = (f"http://127.0.0.1:{server.server_port}/glb_view.html?glb=track1.glb&times={json.dumps(t)}"
           f"&verts={json.dumps(verts)}&show={json.dumps(t)}&names={json.dumps(names)}")
    shot = tmp_path / "glb_three.png"
    try:
        result = asyncio.run(_open_in_three(url, shot))
    finally:
        server.shutdown()
    assert result.get("ok"), result
    assert result["targets"] == 50 + N_EXT + 52 and result["hasTexture"] and result["camera"] == "OrthographicCamera"
    from model.blendshapes import ARKIT_NAMES

    assert result["dictionary"][50 + N_EXT:] == list(ARKIT_NAMES)  # the rig-facing names, in three.js's dictionary
    blend = load_glb_frames(glb)["blendshapes"]  # the weights the file stores, read without three.js
    for n in names:  # three.js plays the named weights: the same values at the keyframes
        np.testing.assert_allclose(result["named"][n], blend[frames, ARKIT_NAMES.index(n)], atol=1e-6)
    assert abs(result["duration"] - (times[-1])) < 1e-3
    import pygltflib

    extras = pygltflib.GLTF2.load_binary(str(glb)).asset.extras
    m, c = world_from_pixels((extras["frame_width"], extras["frame_height"]))
    world = np.asarray(result["positions"])  # (frames, verts, 3) as three.js computed them
    px = (world - c) @ np.linalg.inv(m).T
    errs = np.abs(px - npz_v[frames][:, verts]).max(axis=2)
    err = errs.max()
    print("per frame x vertex (px):", errs.round(6).tolist(), "console:", result["console"][-5:])
    print(f"three.js r{result['revision']} vs NPZ: max {err:.2e} px over {len(frames)} frames x {len(verts)} vertices")
    assert err < 1e-4, err  # frame pixels, at the keyframe times as stored (float32)

    import cv2

    img = cv2.imread(str(shot))
    views = img[40:380, 10:360]
    assert (views.std(axis=2) > 8).mean() > 0.05, "no textured face in the rendered view"
    if os.environ.get("GLB_ARTIFACTS"):
        shutil.copy(shot, Path(os.environ["GLB_ARTIFACTS"]) / "glb_three.png")
