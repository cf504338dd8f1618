"""The WebRTC peer processor on the product pipeline (in process, no network): frames in, annotated frames out,
controls, per-peer recording finalised on close, crops of two peers batched through one model."""
from __future__ import annotations

import asyncio

import cv2
import numpy as np
import pytest

from stream.config import load_config


@pytest.fixture(scope="module")
def engine(assets_dir):
    from stream.app import build_engine

    cfg = load_config(overrides={"weights": "3ddfa-v2-mb05", "assets": str(assets_dir)})
    return build_engine(cfg)


@pytest.fixture(scope="module")
def face(assets_dir):
    img = cv2.imread(str(assets_dir / "LeiJiangJNU/DAMDNet/imgs/obama.jpg"))
    assert img is not None
    return cv2.resize(img, (480, int(img.shape[0] * 480 / img.shape[1])))


async def test_peer_processes_frames_and_records(engine, face, tmp_path):
    from stream.webrtc.app_bridge import PipelinePeer

    cfg = load_config(overrides={"weights": "3ddfa-v2-mb05", "tracks": str(tmp_path / "rec.csv"),
                                 "out": str(tmp_path / "rec.mp4")})
    peer = PipelinePeer(engine, cfg, "p1")
    try:
        outs = [await peer.process(face.copy(), i / 30) for i in range(6)]
    except BaseException:
        await peer.close()
        raise
    assert all(o.shape == face.shape for o in outs)
    diff = np.abs(outs[-1].astype(int) - face.astype(int)).sum(axis=2)
    boxes, _ = engine.detector(face)
    x1, y1, x2, y2 = boxes[0].astype(int)
    inside = (diff[y1:y2, x1:x2] > 0).mean()
    assert inside > 0.01, "landmarks should be drawn over the face"
    peer.set_controls({"mode": "mesh"})
    meshed = await peer.process(face.copy(), 0.3)
    assert (np.abs(meshed.astype(int) - face.astype(int)).sum(axis=2)[y1:y2, x1:x2] > 0).mean() > inside
    st = peer.stats()
    assert st["frames_out"] >= 7 and st["faces"] == 1
    await peer.close()
    rows = (tmp_path / "rec_p1.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 5  # header + one row per frame from the face's confirmation on (live: its 3rd frame)
    assert (tmp_path / "rec_p1.mp4").stat().st_size > 0


async def test_peers_drive_one_vmc_stream(engine, face):
    """serve --vmc: one sender for the server; the first peer with a face drives the avatar until it leaves."""
    pytest.importorskip("pythonosc")
    from stream.vmc import VMCSender
    from stream.webrtc.app_bridge import PipelinePeer
    from tests.test_vmc import Receiver

    rx = Receiver()
    cfg = load_config(overrides={"weights": "3ddfa-v2-mb05", "vmc": f"127.0.0.1:{rx.port}"})
    sender = VMCSender("127.0.0.1", rx.port)
    a, b = PipelinePeer(engine, cfg, "a", vmc=sender), PipelinePeer(engine, cfg, "b", vmc=sender)
    try:
        for i in range(8):
            await a.process(face.copy(), i / 30)
        assert sender.owner == "a"
        await b.process(face.copy(), 0.0)
        assert sender.owner == "a"  # the second peer does not take the avatar over
        await a.close()
        assert sender.owner is None
        for i in range(8):
            await b.process(face.copy(), i / 30)
        await asyncio.sleep(0.2)
        assert sender.owner == "b"
    finally:
        await a.close()
        await b.close()
        rx.stop()
        sender.close()
    with_face = [m for m in rx.frames() if any(x == "/VMC/Ext/Blend/Apply" for x, _ in m)]
    assert len(with_face) >= 6


async def test_two_peers_share_batches(engine, face):
    """Two peers' frames processed at once go through the engine's one batching service, and crops that are waiting
    together share a forward pass. Whether a round's two crops wait together depends on when each peer's detection
    (on its own thread) finishes, so on loaded cores some rounds run one pass each: rounds go on (at most 30) until
    one pass has served both peers; a service that never batches fails every round."""
    from stream.webrtc.app_bridge import PipelinePeer

    cfg = load_config(overrides={"weights": "3ddfa-v2-mb05"})
    a, b = PipelinePeer(engine, cfg, "a"), PipelinePeer(engine, cfg, "b")
    before = (engine.service.batches, engine.service.batched_requests)
    rounds = 0
    try:
        for i in range(30):
            await asyncio.gather(a.process(face.copy(), i / 30), b.process(face.copy(), i / 30))
            rounds += 1
            if engine.service.batches - before[0] < engine.service.batched_requests - before[1]:
                break
    finally:
        await asyncio.gather(a.close(), b.close())
    batches = engine.service.batches - before[0]
    requests = engine.service.batched_requests - before[1]
    assert requests == 2 * rounds  # every crop of both peers went through the batching service
    assert batches < requests, f"concurrent peers' crops never shared a forward pass in {rounds} rounds"


async def test_swap_source_without_face_is_refused(engine):
    from stream.webrtc.app_bridge import PipelinePeer

    peer = PipelinePeer(engine, load_config(), "x")
    try:
        with pytest.raises(ValueError, match="no face"):
            peer.set_swap_source(np.full((200, 200, 3), 127, np.uint8))
    finally:
        await peer.close()


def test_page_offers_every_render_mode():
    """The page the server sends lists every render mode (the one list, which the CLI and the peers check), the
    first selected; the peers accept each of them and nothing else."""
    import re

    from stream.config import CHOICES, RENDER_MODES
    from stream.webrtc.peer import validate_controls
    from stream.webrtc.server import index_html

    select = re.search(r'<select id="mode">(.*?)</select>', index_html(), re.S).group(1)
    offered = tuple(re.findall(r'<option value="([a-z]+)"', select))
    assert offered == RENDER_MODES == CHOICES["mode"] and len(RENDER_MODES) == 7
    assert re.search(r'<option value="landmarks" selected>', select)
    for mode in RENDER_MODES:
        assert validate_controls({"mode": mode})["mode"] == mode
    with pytest.raises(ValueError, match="mode"):
        validate_controls({"mode": "cartoon"})


@pytest.mark.parametrize("mode", ["wireframe", "pncc"])
async def test_peer_renders_the_new_page_modes(engine, face, mode):
    from stream.webrtc.app_bridge import PipelinePeer

    peer = PipelinePeer(engine, load_config(overrides={"weights": "3ddfa-v2-mb05"}), f"p-{mode}")
    try:
        peer.set_controls({"mode": mode})
        outs = [await peer.process(face.copy(), i / 30) for i in range(6)]
    finally:
        await peer.close()
    changed = [float((np.abs(o.astype(int) - face.astype(int)).max(2) > 20).mean()) for o in outs]
    assert max(changed) > 0.02, f"{mode}: the face was not drawn ({max(changed):.3f} of the frame changed)"
