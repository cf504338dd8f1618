"""Helpers for the WebRTC tests and the latency bench.

- `HaarFaceProcessor` / `make_processor`: a small real PeerProcessor (OpenCV's Haar cascade finds the face;
  each mode draws something visibly different there). The real pipeline replaces it through the factory.
- `netns()`: a network namespace with a veth pair; the server and Chromium both run inside it.
- `make_y4m()`: a face video for Chromium's fake camera.
- `start_server()`, `run_driver()`: the server subprocess and the Playwright driver subprocess.
- `python -m tests.webrtc_helpers drive ...`: the driver itself (run inside the namespace).
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
FACE_VIDEO = "KwaiVGI/LivePortrait/assets/examples/driving/d0.mp4"
FACE_IMAGE = "LeiJiangJNU/DAMDNet/imgs/obama.jpg"
HAAR = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
# The browser driver waits on events (frames presented, acks in the stats), never for fixed times; these limits
# only guard against a hang and are generous for a busy machine (the pipeline loads its model at the first offer).
FIRST_FRAMES_MS = 300_000
GUARD_MS = 120_000
MIN_LATENCY_SAMPLES = 20
MIN_FRAMES = 30
FRAMES_AFTER_CHANGE = 10


# ---------------------------------------------------------------------------------------------------
# test processor
# ---------------------------------------------------------------------------------------------------
class HaarFaceProcessor:
    """PeerProcessor for tests: Haar face box, drawn per mode.

    landmarks: green tinted box, outline and five red points; mesh: cyan grid; depth: grey gradient;
    swap: the swap source pasted into the box, or the box inverted when there is none.
    """

    def __init__(self, peer_id: str = "", detect_width: int = 320):
        self.peer_id = peer_id
        self.detect_width = detect_width
        self.cascade = cv2.CascadeClassifier(HAAR)
        self._lock = threading.Lock()  # the cascade is not thread-safe: process() runs in a worker thread while
        # set_swap_source() runs on the event loop
        if self.cascade.empty():
            raise RuntimeError(f"cannot load {HAAR}")
        self.mode = "landmarks"
        self.smooth = True
        self.swap: Optional[np.ndarray] = None
        self.box: Optional[np.ndarray] = None
        self.faces = 0
        self.frames = 0
        self.closed = False
        self.controls_seen: list[dict] = []
        self._detect_ms: collections.deque = collections.deque(maxlen=60)
        self._draw_ms: collections.deque = collections.deque(maxlen=60)

    async def process(self, image: np.ndarray, time: float) -> np.ndarray:
        return await asyncio.to_thread(self._process, image)

    def _detect(self, image: np.ndarray) -> Optional[np.ndarray]:
        h, w = image.shape[:2]
        s = min(1.0, self.detect_width / float(w))
        small = cv2.resize(image, (int(w * s), int(h * s)), interpolation=cv2.INTER_AREA) if s < 1 else image
        gray = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY))
        with self._lock:
            found = self.cascade.detectMultiScale(gray, 1.15, 4, minSize=(24, 24))
        if len(found) == 0:
            return None
        x, y, bw, bh = max(found, key=lambda r: r[2] * r[3])
        return np.array([x, y, x + bw, y + bh], np.float64) / s

    def _process(self, image: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        box = self._detect(image)
        if box is None:
            self.faces = 0
        else:
            self.faces = 1
            if self.smooth and self.box is not None:
                box = 0.6 * self.box + 0.4 * box
            self.box = box
        t1 = time.perf_counter()
        if box is not None:
            self._draw(image, box)
        self.frames += 1
        self._detect_ms.append((t1 - t0) * 1000)
        self._draw_ms.append((time.perf_counter() - t1) * 1000)
        return image

    def _draw(self, image: np.ndarray, box: np.ndarray) -> None:
        h, w = image.shape[:2]
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
        if x2 - x1 < 4 or y2 - y1 < 4:
            return
        roi = image[y1:y2, x1:x2]
        bw, bh = x2 - x1, y2 - y1
        if self.mode == "swap":
            if self.swap is not None:
                roi[:] = cv2.resize(self.swap, (bw, bh), interpolation=cv2.INTER_AREA)
            else:
                roi[:] = 255 - roi
        elif self.mode == "depth":
            ramp = np.linspace(230, 40, bh, dtype=np.float32)[:, None, None]
            roi[:] = np.broadcast_to(ramp, roi.shape).astype(np.uint8)
        elif self.mode == "mesh":
            for k in range(1, 8):
                cv2.line(roi, (k * bw // 8, 0), (k * bw // 8, bh - 1), (255, 255, 0), 2)
                cv2.line(roi, (0, k * bh // 8), (bw - 1, k * bh // 8), (255, 255, 0), 2)
        else:  # landmarks
            tint = np.array([0, 255, 0], np.float32)
            roi[:] = (0.45 * roi.astype(np.float32) + 0.55 * tint).astype(np.uint8)
            cv2.rectangle(image, (x1, y1), (x2 - 1, y2 - 1), (0, 200, 0), 3)
            for fx, fy in ((0.3, 0.38), (0.7, 0.38), (0.5, 0.58), (0.35, 0.78), (0.65, 0.78)):
                cv2.circle(image, (x1 + int(fx * bw), y1 + int(fy * bh)), max(3, bw // 30), (0, 0, 255), -1)

    def set_controls(self, controls: dict) -> None:
        self.controls_seen.append(dict(controls))
        self.mode = controls.get("mode", self.mode)
        self.smooth = bool(controls.get("smooth", self.smooth))

    def set_swap_source(self, image: np.ndarray) -> None:
        box = self._detect(image)
        if box is not None:
            x1, y1, x2, y2 = (int(v) for v in box)
            image = image[max(0, y1):y2, max(0, x1):x2]
        self.swap = image.copy()

    def stats(self) -> dict:
        def pct(d):
            if not d:
                return None
            a = np.asarray(d)
            return {"p50": round(float(np.percentile(a, 50)), 2), "p95": round(float(np.percentile(a, 95)), 2)}

        return {"faces": self.faces, "frames": self.frames, "mode": self.mode, "smooth": self.smooth,
                "boxes": [] if self.box is None or not self.faces else [[round(float(v), 1) for v in self.box]],
                "latency_ms": {"detect": pct(self._detect_ms), "draw": pct(self._draw_ms)}}

    async def close(self) -> None:
        self.closed = True


def make_processor(peer_id: str) -> HaarFaceProcessor:
    """The processor factory (`--processor tests.webrtc_helpers:make_processor`)."""
    return HaarFaceProcessor(peer_id)


def face_test_image(assets_dir: Path, size: tuple[int, int] = (320, 240)) -> np.ndarray:
    """obama.jpg cropped 4:3 around the face and resized: (H, W, 3) uint8 BGR."""
    img = cv2.imread(str(Path(assets_dir) / FACE_IMAGE))
    if img is None:
        raise FileNotFoundError(Path(assets_dir) / FACE_IMAGE)
    h, w = img.shape[:2]
    cw, ch = min(w, 640), min(h, 480)
    cx, cy = 557, 492  # face centre in the 940x1280 photo
    x0 = int(np.clip(cx - cw // 2, 0, w - cw))
    y0 = int(np.clip(cy - ch // 2, 0, h - ch))
    return cv2.resize(img[y0:y0 + ch, x0:x0 + cw], size, interpolation=cv2.INTER_AREA)


# ---------------------------------------------------------------------------------------------------
# browser prerequisites, network namespace, video, subprocesses
# ---------------------------------------------------------------------------------------------------
def browser_skip_reason() -> Optional[str]:
    """Why the browser test cannot run here, or None."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} missing: apt-get install -y chromium"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright missing: pip install playwright==1.65.2 (no `playwright install` needed)"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) missing"
    if os.geteuid() != 0:
        return "network namespaces need root"
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if r.returncode != 0:
        return f"`ip netns` unusable: {r.stderr.strip()}"
    return None


@dataclass
class NetNS:
    name: str
    host_if: str
    ns_if: str
    host_addr: str
    ns_addr: str

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")


@contextlib.contextmanager
def netns(subnet: Optional[int] = None) -> Iterator[NetNS]:
    """A fresh namespace `wrtcXXXXXX` joined to the host by a veth pair 10.77.N.1 (host) / 10.77.N.2 (inside).
    Everything is deleted on exit, whatever happened."""
    tag = uuid.uuid4().hex[:6]
    n = subnet if subnet is not None else (os.getpid() + int(tag, 16)) % 200 + 20
    ns = NetNS(name=f"wrtc{tag}", host_if=f"vwh{tag}", ns_if=f"vwn{tag}",
               host_addr=f"10.77.{n}.1", ns_addr=f"10.77.{n}.2")
    try:
        _ip("netns", "add", ns.name)
        _ip("link", "add", ns.host_if, "type", "veth", "peer", "name", ns.ns_if)
        _ip("link", "set", ns.ns_if, "netns", ns.name)
        _ip("addr", "add", f"{ns.host_addr}/24", "dev", ns.host_if)
        _ip("link", "set", ns.host_if, "up")
        _ip("netns", "exec", ns.name, "ip", "addr", "add", f"{ns.ns_addr}/24", "dev", ns.ns_if)
        _ip("netns", "exec", ns.name, "ip", "link", "set", ns.ns_if, "up")
        _ip("netns", "exec", ns.name, "ip", "link", "set", "lo", "up")
        yield ns
    finally:
        subprocess.run(["ip", "link", "del", ns.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns.name], capture_output=True)


def make_y4m(src: Path, dst: Path, size: tuple[int, int] = (384, 384), max_seconds: float = 5.0,
             pingpong: bool = True) -> Path:
    """Decode `src` (PyAV), resize to `size` (w, h), write a 4:2:0 .y4m for Chromium's fake camera.
    With pingpong the clip plays forward then backward, so the looping camera has no jump."""
    import av

    frames, fps = [], 25
    with av.open(str(src)) as container:
        stream = container.streams.video[0]
        if stream.average_rate:
            fps = int(round(float(stream.average_rate)))
        for frame in container.decode(stream):
            bgr = cv2.resize(frame.to_ndarray(format="bgr24"), size, interpolation=cv2.INTER_AREA)
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420))
            if len(frames) >= max_seconds * fps / (2 if pingpong else 1):
                break
    if pingpong:
        frames = frames + frames[-2:0:-1]
    w, h = size
    with open(dst, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for yuv in frames:
            f.write(b"FRAME\n")
            f.write(yuv.tobytes())
    return dst


def free_port() -> int:
    import random
    return random.randint(20000, 60000)


def http_json(url: str, timeout: float = 2.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - our own server
        return json.loads(r.read())


def start_server(ns: NetNS, port: int, token: str, log_path: Path,
                 processor: str = "tests.webrtc_helpers:make_processor", extra: tuple[str, ...] = (),
                 timeout: float = 180.0) -> subprocess.Popen:
    """`python -m stream.webrtc.server` inside the namespace, bound to its address; waits until /status answers
    (polled from the host through the veth pair). ``timeout`` only guards a server that never comes up: on a busy
    machine the imports alone can take tens of seconds."""
    cmd = ns.exec_prefix() + [sys.executable, "-m", "stream.webrtc.server", "--host", ns.ns_addr,
                              "--port", str(port), f"--token={token}", "--processor", processor, *extra]
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ,
                            "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
        try:
            http_json(f"http://{ns.ns_addr}:{port}/status", timeout=1.0)
            return proc
        except OSError:
            time.sleep(0.3)
    stop_process(proc)
    raise RuntimeError(f"server did not answer within {timeout:g} s: {log_path.read_text()[-2000:]}")


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def run_driver(ns: NetNS, url: str, video: Path, out_dir: Path, seconds: float = 8.0,
               timeout: float = 480.0, soak: bool = False, swap_image: Optional[Path] = None) -> dict:
    """Run the Playwright driver inside the namespace; returns its result.json (raises with its log on failure)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = ns.exec_prefix() + [sys.executable, "-m", "tests.webrtc_helpers", "drive", "--url", url,
                              "--video", str(video), "--out", str(out_dir), "--seconds", str(seconds)]
    if soak:
        cmd.append("--soak")
    if swap_image is not None:
        cmd += ["--swap-image", str(swap_image)]
    log_path = out_dir / "driver.log"
    with open(log_path, "wb") as log:
        r = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
    result_path = out_dir / "result.json"
    if not result_path.exists():
        raise RuntimeError(f"driver exited {r.returncode} without a result: {log_path.read_text()[-3000:]}")
    result = json.loads(result_path.read_text())
    result["returncode"] = r.returncode
    return result


def percentiles(values, ps=(50, 95)) -> dict:
    if not values:
        return {f"p{p}": None for p in ps}
    a = np.asarray(values, np.float64)
    return {f"p{p}": round(float(np.percentile(a, p)), 1) for p in ps}


# ---------------------------------------------------------------------------------------------------
# the driver (runs inside the namespace)
# ---------------------------------------------------------------------------------------------------
# Grabs <video id="out"> and <video id="local"> at the output's size; returns mean absolute differences
# inside / outside a box (output pixels), without the probe strip, and PNG data URLs.
_GRAB_JS = r"""
([box, keep]) => {
  const out = document.getElementById('out'), loc = document.getElementById('local');
  const w = out.videoWidth, h = out.videoHeight;
  if (!w || !h || !loc.videoWidth) return null;
  const grab = (v) => { const c = document.createElement('canvas'); c.width = w; c.height = h;
    const x = c.getContext('2d'); x.drawImage(v, 0, 0, w, h); return [c, x.getImageData(0, 0, w, h).data]; };
  const [co, o] = grab(out), [cl, l] = grab(loc);
  const strip = Math.max(8, Math.ceil(h / 20));
  let si = 0, ni = 0, so = 0, no = 0;
  const [x1, y1, x2, y2] = box || [0, 0, 0, 0];
  for (let y = 0; y < h - strip; y += 2) for (let x = 0; x < w; x += 2) {
    const k = (y * w + x) * 4;
    const d = (Math.abs(o[k] - l[k]) + Math.abs(o[k+1] - l[k+1]) + Math.abs(o[k+2] - l[k+2])) / 3;
    if (x >= x1 && x < x2 && y >= y1 && y < y2) { si += d; ni++; } else { so += d; no++; }
  }
  let prevDiff = null;
  if (window.__prevOut && window.__prevOut.length === o.length) {
    let s = 0, n = 0;
    for (let y = Math.floor(y1); y < Math.min(h - strip, y2); y += 2) for (let x = Math.floor(x1); x < Math.min(w, x2); x += 2) {
      const k = (y * w + x) * 4;
      s += (Math.abs(o[k] - window.__prevOut[k]) + Math.abs(o[k+1] - window.__prevOut[k+1]) + Math.abs(o[k+2] - window.__prevOut[k+2])) / 3; n++;
    }
    prevDiff = n ? s / n : null;
  }
  if (keep) window.__prevOut = o;
  return {w, h, inside: ni ? si / ni : null, outside: no ? so / no : null, prev_diff: prevDiff,
          out_png: co.toDataURL('image/png'), local_png: cl.toDataURL('image/png')};
}
"""


def _save_data_url(url: str, path: Path) -> None:
    import base64
    path.write_bytes(base64.b64decode(url.split(",", 1)[1]))


def _box_in_output(stats: dict, w: int, h: int) -> Optional[list[float]]:
    boxes = ((stats or {}).get("processor") or {}).get("boxes") or []
    size = (stats or {}).get("frame_size")
    if not boxes or not size:
        return None
    sx, sy = w / size[0], h / size[1]
    x1, y1, x2, y2 = boxes[0]
    return [x1 * sx, y1 * sy, x2 * sx, y2 * sy]


async def _drive(args: argparse.Namespace, result: dict) -> dict:
    from playwright.async_api import async_playwright

    out = Path(args.out)
    result.update(ok=False, steps=[])
    sep = "&" if "?" in args.url else "?"
    url = f"{args.url}{sep}probe=1"
    origin = args.url.split("/", 3)[:3]
    origin = "/".join(origin)
    flags = ["--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={args.video}",
             "--use-fake-ui-for-media-stream", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--unsafely-treat-insecure-origin-as-secure={origin}",
             "--disable-features=WebRtcHideLocalIpsWithMdns", "--autoplay-policy=no-user-gesture-required"]
    result["chromium_flags"] = flags
    user_data = tempfile.mkdtemp(prefix="wrtc-chromium-")
    t_start = time.monotonic()

    def step(name: str, **kw) -> None:
        result["steps"].append({"t": round(time.monotonic() - t_start, 2), "step": name, **kw})
        print(f"[{time.monotonic() - t_start:6.1f}s] {name} {kw if kw else ''}", flush=True)

    async with async_playwright() as pw:
        ctx = await pw.chromium.launch_persistent_context(
            user_data, executable_path=CHROMIUM, headless=True, args=flags,
            viewport={"width": 1100, "height": 900})
        try:
            await ctx.grant_permissions(["camera"], origin=origin)
            page = ctx.pages[0] if ctx.pages else await ctx.new_page()
            console: list[str] = []
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            await page.goto(url)
            step("loaded")
            await page.click("#start")
            try:
                await page.wait_for_function(
                    "window.framesReceived > 30 && document.getElementById('out').videoWidth > 0"
                    " && window.stats && window.stats.faces >= 1", timeout=FIRST_FRAMES_MS)
            except Exception:
                result["error"] = f"no processed frames with a face within {FIRST_FRAMES_MS / 1000:g} s"
                result["page"] = await page.evaluate(
                    "({state: window.appState, err: window.lastError, frames: window.framesReceived, stats: window.stats})")
                raise
            t_first = time.monotonic()
            step("receiving", frames=await page.evaluate("window.framesReceived"))

            if args.soak:  # stream, sampling the server's stats once a second
                series = result["stats_series"] = []
                end = time.monotonic() + args.seconds
                while time.monotonic() < end:
                    await asyncio.sleep(1.0)
                    st = await page.evaluate("window.stats")
                    if st:
                        series.append({"t": round(time.monotonic() - t_first, 2), "fps_in": st.get("fps_in"),
                                       "fps_out": st.get("fps_out"), "drops_in": st.get("drops_in"),
                                       "server": (st.get("latency_ms") or {}).get("server"),
                                       "process": (st.get("latency_ms") or {}).get("process")})
            else:  # events, not times: enough latency samples and frames, however slow the machine is
                await page.wait_for_function(
                    f"window.latency.samples.length >= {MIN_LATENCY_SAMPLES}"
                    f" && window.framesReceived > {MIN_FRAMES}", timeout=GUARD_MS)
            lat = await page.evaluate("window.latency")
            info = await page.evaluate(
                "({frames: window.framesReceived, w: document.getElementById('out').videoWidth,"
                " h: document.getElementById('out').videoHeight, stats: window.stats, rtt: window.rttMs,"
                " state: window.appState, err: window.lastError})")
            result.update(frames_received=info["frames"], video_width=info["w"], video_height=info["h"],
                          stats_landmarks=info["stats"], rtt_ms=info["rtt"], app_state=info["state"],
                          page_error=info["err"])
            result["latency_samples"] = lat["samples"]
            result["latency_receive_samples"] = lat.get("receiveSamples", [])
            result["latency_misreads"] = lat["misreads"]
            result["seconds_receiving"] = round(time.monotonic() - t_first, 2)

            # face data channel: messages and the live 3D view (the pipeline processor sends them)
            if await page.evaluate("window.faceData.messages") > 0:
                await page.wait_for_function("window.faceData.viewFrames > 5", timeout=30_000)
            result["face_data"] = await page.evaluate(
                "({messages: window.faceData.messages, parseErrors: window.faceData.parseErrors,"
                " last: window.faceData.last, recent: window.faceData.recent.slice(-150),"
                " presented: window.faceData.presentedProbes.slice(-3000), viewFrames: window.faceData.viewFrames,"
                " frames: window.framesReceived, view: document.getElementById('face3d').toDataURL('image/png')})")
            _save_data_url(result["face_data"].pop("view"), out / "face3d.png")
            await page.locator(".videos").screenshot(path=str(out / "page_face3d.png"))
            step("face data", messages=result["face_data"]["messages"])

            box = _box_in_output(info["stats"], info["w"], info["h"])
            grab = await page.evaluate(_GRAB_JS, [box, True])
            if grab:
                _save_data_url(grab.pop("out_png"), out / "out_landmarks.png")
                _save_data_url(grab.pop("local_png"), out / "local.png")
            result["box"] = box
            result["compare_landmarks"] = grab
            step("compared landmarks", box=box)
            await page.screenshot(path=str(out / "page_landmarks.png"))

            if not args.soak:
                await page.select_option("#mode", "swap")
                await page.wait_for_function(
                    "window.stats && window.stats.controls && window.stats.controls.mode === 'swap'"
                    " && window.stats.processor && window.stats.processor.mode === 'swap'", timeout=GUARD_MS)
                await _frames_after(page, FRAMES_AFTER_CHANGE)  # frames processed in the new mode are shown
                stats = await page.evaluate("window.stats")
                w, h = info["w"], info["h"]
                box2 = _box_in_output(stats, w, h) or box
                grab2 = await page.evaluate(_GRAB_JS, [box2, False])
                if grab2:
                    _save_data_url(grab2.pop("out_png"), out / "out_swap.png")
                    grab2.pop("local_png")
                result["compare_swap"] = grab2
                result["stats_swap"] = stats
                step("compared swap", box=box2)
                await page.screenshot(path=str(out / "page.png"))

                if args.swap_image:  # upload through the page's file input: the face box shows that image
                    await page.evaluate(_GRAB_JS, [box2, True])  # reference: the inverted box
                    await page.set_input_files("#swap", args.swap_image)
                    await page.wait_for_function(
                        "document.getElementById('swap-status').textContent.includes('set')", timeout=GUARD_MS)
                    result["swap_status"] = await page.text_content("#swap-status")
                    await _frames_after(page, FRAMES_AFTER_CHANGE)
                    stats = await page.evaluate("window.stats")
                    box3 = _box_in_output(stats, info["w"], info["h"]) or box2
                    grab3 = await page.evaluate(_GRAB_JS, [box3, False])
                    if grab3:
                        _save_data_url(grab3.pop("out_png"), out / "out_uploaded.png")
                        grab3.pop("local_png")
                    result["compare_upload"] = grab3
                    step("uploaded swap source", status=result["swap_status"])

            # close the tab: the server must free the peer
            await page.close()
            step("page closed")
            result["ok"] = True
            result["console"] = console[-50:]
        finally:
            await ctx.close()
            shutil.rmtree(user_data, ignore_errors=True)
    return result


async def _frames_after(page, n: int) -> None:  # noqa: ANN001 - a Playwright page
    """Wait until ``n`` more processed frames (than now) have been presented: after a change acknowledged by the
    server (mode, swap source), the frames shown then were processed with it."""
    start = await page.evaluate("window.framesReceived")
    await page.wait_for_function(f"window.framesReceived >= {start + n}", timeout=GUARD_MS)


def _main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.webrtc_helpers")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("drive", help="run headless Chromium against the server page (inside the namespace)")
    d.add_argument("--url", required=True)
    d.add_argument("--video", required=True)
    d.add_argument("--out", required=True)
    d.add_argument("--seconds", type=float, default=8.0)
    d.add_argument("--swap-image", default=None, help="image to upload as swap source through the page")
    d.add_argument("--soak", action="store_true", help="just stream for --seconds and collect latency")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {}
    try:
        asyncio.run(_drive(args, result))
    except Exception as exc:  # noqa: BLE001 - write what we know, then fail
        import traceback
        traceback.print_exc()
        result["ok"] = False
        result.setdefault("error", f"{type(exc).__name__}: {exc}")
    (out / "result.json").write_text(json.dumps(result, indent=1))
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(_main())
