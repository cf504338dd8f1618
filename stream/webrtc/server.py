"""The WebRTC server: a browser sends its camera, gets back processed video.

HTTP API (all JSON answers carry "error" with a one-line message on failure):
  GET  /                 the page (static/index.html); open it as /?token=TOKEN when a token is set
  GET  /static/...       app.js, style.css
  POST /offer            {"sdp", "type": "offer", "token"?, "probe"?: bool} -> {"sdp", "type": "answer", "peer_id"}
                         400 malformed offer / SDP aiortc rejects / no video track, 403 token, 503 server full
  POST /swap-source?peer=PEER_ID   the image as multipart field "image" or as the raw body (PNG/JPEG, at most
                         max_upload_bytes); token in header X-Token or ?token=. 200 {"ok", "width", "height"},
                         400/413/415 bad upload, 404 unknown peer, 422 the processor refused it (e.g. no face)
  GET  /status           {"peers": n, "max_peers": m} (counts only)

Entry points: `serve(config, processor_factory)` (blocking) for the CLI, `build_app(config, processor_factory)`
for tests, and `python -m stream.webrtc.server --host H --port P --token T --processor module:factory`.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hmac
import importlib
import json
import logging
import secrets
import ssl
import sys
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from aiohttp import web
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

from model.errors import UserError
from stream.config import RENDER_MODES

from .server_config import ConfigError, RecordOptions, ServeConfig, serve_config
from .peer import PassthroughProcessor, PeerSession, ProcessorFactory
from .upload import UploadError, decode_image, load_image_file

__all__ = ["ServeConfig", "RecordOptions", "ConfigError", "build_app", "serve", "main"]

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).resolve().parent / "static"

CONFIG = web.AppKey("webrtc_config", ServeConfig)
FACTORY = web.AppKey("webrtc_factory", object)
PEERS = web.AppKey("webrtc_peers", dict)
SWAP_IMAGE = web.AppKey("webrtc_swap_image", object)
FACE_MODEL = web.AppKey("webrtc_face_model", object)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _token_ok(config: ServeConfig, given: Optional[str]) -> bool:
    if not config.token:
        return True
    return isinstance(given, str) and hmac.compare_digest(given.encode(), config.token.encode())


_TOKEN_MSG = "missing or wrong token: open the page as /?token=YOUR_TOKEN (the one the server was started with)"


#: How the page's mode selector names a mode (others: by their name).
MODE_LABELS = {"none": "none (video only)"}


def index_html() -> str:
    """static/index.html with its mode selector filled from ``stream.config.RENDER_MODES`` (the first selected)."""
    options = "\n".join(f'        <option value="{m}"{" selected" if i == 0 else ""}>{MODE_LABELS.get(m, m)}</option>'
                        for i, m in enumerate(RENDER_MODES))
    return (STATIC_DIR / "index.html").read_text(encoding="utf-8").replace("<!-- RENDER_MODES -->", options.strip())


async def _index(request: web.Request) -> web.StreamResponse:
    return web.Response(text=index_html(), content_type="text/html", headers={"Cache-Control": "no-store"})


async def _status(request: web.Request) -> web.Response:
    app = request.app
    return web.json_response({"peers": len(app[PEERS]), "max_peers": app[CONFIG].max_peers})


async def _offer(request: web.Request) -> web.Response:
    app = request.app
    config: ServeConfig = app[CONFIG]
    peers: dict = app[PEERS]
    try:
        params = await request.json()
    except (ValueError, UnicodeDecodeError):
        return _error(400, "the offer must be a JSON object {\"sdp\": ..., \"type\": \"offer\"}")
    if not isinstance(params, dict):
        return _error(400, "the offer must be a JSON object {\"sdp\": ..., \"type\": \"offer\"}")
    if not _token_ok(config, params.get("token")):
        return _error(403, _TOKEN_MSG)
    sdp, kind = params.get("sdp"), params.get("type")
    if not isinstance(sdp, str) or not sdp.strip():
        return _error(400, "the offer has no \"sdp\" string")
    if kind != "offer":
        return _error(400, f"\"type\" must be \"offer\", got {kind!r}")
    if len(peers) >= config.max_peers:
        return _error(503, f"server full: {len(peers)} of {config.max_peers} peers connected; try again later")

    peer_id = secrets.token_hex(6)
    peers[peer_id] = None  # hold the slot while the processor and connection start
    try:
        processor = app[FACTORY](peer_id)
    except Exception as exc:  # noqa: BLE001 - the factory failed: not the client's fault
        peers.pop(peer_id, None)
        log.exception("processor factory failed")
        return _error(500, f"could not start a processor for this peer: {type(exc).__name__}: {exc}")

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[RTCIceServer(u) for u in config.ice_servers]))
    session = PeerSession(peer_id, pc, processor, max_frame_pixels=config.max_frame_pixels,
                          probe=bool(params.get("probe", False)), stats_interval_s=config.stats_interval_s,
                          disconnect_grace_s=config.disconnect_grace_s, connect_timeout_s=config.connect_timeout_s,
                          media_timeout_s=config.media_timeout_s, controls=config.default_controls, on_closed=lambda s: peers.pop(s.peer_id, None))
    peers[peer_id] = session
    try:
        if app[SWAP_IMAGE] is not None:
            processor.set_swap_source(app[SWAP_IMAGE])
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        except Exception as exc:  # noqa: BLE001 - aiortc raises many kinds for bad SDP
            log.info("rejected offer: %s: %s", type(exc).__name__, exc)
            raise _BadOffer(f"the SDP offer was rejected: {type(exc).__name__}: {exc}") from exc
        if session.track is None:
            raise _BadOffer("the offer has no video track: add the camera track before creating the offer")
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
    except _BadOffer as exc:
        await session.close("bad offer")
        return _error(400, str(exc))
    except Exception as exc:  # noqa: BLE001
        await session.close("negotiation failed")
        log.exception("negotiation failed")
        return _error(400, f"negotiation failed: {type(exc).__name__}: {exc}")
    session.start()
    log.info("peer %s joined (%d/%d)", peer_id, len(peers), config.max_peers)
    return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type, "peer_id": peer_id})


class _BadOffer(Exception):
    pass


async def _read_bounded(read_chunk, limit: int) -> bytes:
    """Read through `read_chunk(n)` until it returns b""; UploadError(413) past `limit` bytes."""
    chunks, total = [], 0
    while True:
        chunk = await read_chunk(65536)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > limit:
            raise UploadError(f"upload is larger than the limit of {limit} bytes", status=413)
        chunks.append(chunk)


async def _swap_source(request: web.Request) -> web.Response:
    app = request.app
    config: ServeConfig = app[CONFIG]
    if not _token_ok(config, request.headers.get("X-Token") or request.query.get("token")):
        return _error(403, _TOKEN_MSG)
    peer_id = request.query.get("peer")
    if not peer_id:
        return _error(400, "name the peer: POST /swap-source?peer=PEER_ID (the page gets its id from /offer)")
    session = app[PEERS].get(peer_id)
    if session is None:
        return _error(404, f"no connected peer {peer_id!r}")
    limit = config.max_upload_bytes
    if request.content_length is not None and request.content_length > limit + 16384:
        return _error(413, f"upload is {request.content_length} bytes, the limit is {limit}")
    try:
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            data = b""
            async for part in reader:
                if not hasattr(part, "read_chunk"):
                    raise ValueError("nested multipart is not supported")
                if part.name == "image" or (part.filename and not data):
                    data = await _read_bounded(part.read_chunk, limit)
                    if part.name == "image":
                        break
                else:
                    await _read_bounded(part.read_chunk, 16384)
        else:
            data = await _read_bounded(request.content.read, limit)
        image = decode_image(data, limit)
    except UploadError as exc:
        return _error(exc.status, str(exc))
    except ValueError as exc:  # malformed multipart
        return _error(400, f"malformed upload: {exc}")
    if session.closed:
        return _error(404, f"peer {peer_id!r} has left")
    try:
        session.processor.set_swap_source(image)
    except ValueError as exc:
        return _error(422, f"the processor cannot use this image: {exc}")
    h, w = image.shape[:2]
    session.send({"type": "swap_source", "width": w, "height": h})
    return web.json_response({"ok": True, "width": w, "height": h})


async def _face_model(request: web.Request) -> web.Response:
    """The dense mesh the "faces" messages' params decode to (stream.webrtc.facedata.face_model_bytes)."""
    app = request.app
    if not _token_ok(app[CONFIG], request.headers.get("X-Token") or request.query.get("token")):
        return _error(403, _TOKEN_MSG)
    provider = app[FACE_MODEL]
    if provider is None:
        return _error(404, "this server's processor has no face model")
    data = await asyncio.get_running_loop().run_in_executor(None, provider)
    return web.Response(body=data, content_type="application/octet-stream",
                        headers={"Cache-Control": "max-age=3600"})


async def _on_shutdown(app: web.Application) -> None:
    sessions = [s for s in list(app[PEERS].values()) if s is not None]
    await asyncio.gather(*(s.close("server shutting down") for s in sessions), return_exceptions=True)


def build_app(config: ServeConfig, processor_factory: ProcessorFactory,
              face_model: Optional[Callable[[], bytes]] = None) -> web.Application:
    """The aiohttp application (no socket yet). Raises ConfigError for an invalid config or swap source.
    ``face_model`` (default: the factory's ``face_model`` attribute, if any) gives the bytes of ``GET /face-model``."""
    config.validate()
    swap_image: Optional[np.ndarray] = None
    if config.swap_source:
        try:
            swap_image = load_image_file(config.swap_source, max(config.max_upload_bytes, 50 * 1024 * 1024))
        except UploadError as exc:
            raise ConfigError(f"--swap-source {config.swap_source}: {exc}") from None
    app = web.Application(client_max_size=1024 * 1024)
    app[CONFIG] = config
    app[FACTORY] = processor_factory
    app[PEERS] = {}
    app[SWAP_IMAGE] = swap_image
    app[FACE_MODEL] = face_model or getattr(processor_factory, "face_model", None)
    app.router.add_get("/", _index)
    app.router.add_get("/face-model", _face_model)
    app.router.add_get("/status", _status)
    app.router.add_post("/offer", _offer)
    app.router.add_post("/swap-source", _swap_source)
    app.router.add_static("/static/", STATIC_DIR)
    app.on_shutdown.append(_on_shutdown)
    return app


def page_url(config: ServeConfig, port: Optional[int] = None) -> str:
    scheme = "https" if config.ssl_cert else "http"
    host = config.host if ":" not in config.host else f"[{config.host}]"
    url = f"{scheme}://{host}:{config.port if port is None else port}/"
    return url + (f"?token={config.token}" if config.token else "")


def tls_context(config: ServeConfig) -> ssl.SSLContext | None:
    """The server's TLS context when ``ssl_cert`` is set (None for plain HTTP); ConfigError if it does not load."""
    if not config.ssl_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(config.ssl_cert, config.ssl_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the TLS certificate {config.ssl_cert} with key {config.ssl_key}: "
                          f"{exc}") from None
    return ctx


def check_listen(config: ServeConfig) -> None:
    """ConfigError (one line) when ``host:port`` cannot be listened on (in use, not an address of this machine,
    a privileged port): checked before the model loads, so the user hears at once."""
    import socket

    try:
        infos = socket.getaddrinfo(config.host or None, config.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp does: TIME_WAIT is no conflict
        try:
            sock.bind(address)
        except OSError as exc:
            raise ConfigError(_listen_error(config, exc)) from None


def _listen_error(config: ServeConfig, exc: OSError) -> str:
    hint = " (another server is using it: stop it or pass --serve.port)" if exc.errno == 98 else ""
    return f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}{hint}"


def serve(config: ServeConfig, processor_factory: ProcessorFactory,
          face_model: Optional[Callable[[], bytes]] = None) -> None:
    """Blocking: run the server until Ctrl-C. ConfigError (one line for the user) before anything listens, and
    when the address cannot be listened on (port in use)."""
    ssl_context = tls_context(config)
    app = build_app(config, processor_factory, face_model)
    url = page_url(config)
    try:
        web.run_app(app, host=config.host, port=config.port, ssl_context=ssl_context, access_log=None,
                    print=lambda *_: print(f"serving on {url}  (Ctrl-C to stop)", flush=True))
    except OSError as exc:  # the port was taken between the check and the bind
        raise ConfigError(_listen_error(config, exc)) from None


def load_factory(spec: str) -> ProcessorFactory:
    """'passthrough' or 'module:attr' -> a callable peer_id -> PeerProcessor. An attribute with a
    ``processor_factory()`` (e.g. a class holding a shared model) is asked once for the factory."""
    if spec == "passthrough":
        return PassthroughProcessor
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"--processor must look like module.path:function, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"--processor {spec}: cannot import {module_name}: {exc}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"--processor {spec}: {module_name} has no callable {attr!r}")
    make = getattr(factory, "processor_factory", None)
    return make() if callable(make) else factory


def main(argv: Optional[list[str]] = None) -> int:
    from stream.config import load_config

    d = serve_config(load_config())  # the defaults of configs/default.yaml
    p = argparse.ArgumentParser(prog="python -m stream.webrtc.server",
                                description="WebRTC server: browser camera in, processed video out.")
    p.add_argument("--host", default=d.host, help="address to bind (default 127.0.0.1; others need --token)")
    p.add_argument("--port", type=int, default=d.port)
    p.add_argument("--token", default=None, help="shared secret the page must present (?token=...)")
    p.add_argument("--max-peers", type=int, default=d.max_peers)
    p.add_argument("--max-upload-bytes", type=int, default=d.max_upload_bytes)
    p.add_argument("--max-frame-pixels", type=int, default=d.max_frame_pixels)
    p.add_argument("--swap-source", default=None, help="image given to every peer's processor")
    p.add_argument("--mode", choices=RENDER_MODES, default=None, help="initial mode of each peer (default landmarks)")
    p.add_argument("--ice-server", action="append", default=[], help="STUN/TURN URL (repeatable)")
    p.add_argument("--cert", default=None, help="TLS certificate (PEM) to serve HTTPS")
    p.add_argument("--key", default=None, help="TLS private key (PEM)")
    p.add_argument("--processor", default="passthrough",
                   help="module:factory returning a PeerProcessor per peer id (default: passthrough, unprocessed)")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = dataclasses.replace(d, host=args.host, port=args.port, token=args.token, max_peers=args.max_peers,
                                 max_upload_bytes=args.max_upload_bytes, max_frame_pixels=args.max_frame_pixels,
                                 swap_source=args.swap_source, ice_servers=tuple(args.ice_server),
                                 ssl_cert=args.cert, ssl_key=args.key)
    if args.mode:
        config.default_controls = {**config.default_controls, "mode": args.mode}
    try:
        config.validate()
        factory = load_factory(args.processor)
        if args.processor == "passthrough":
            print("note: no --processor given: frames are sent back unprocessed", file=sys.stderr)
        serve(config, factory)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
