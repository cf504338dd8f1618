"""WebRTC serving: browser camera -> server processing -> browser.

    python -m stream.webrtc.server [--host 127.0.0.1] [--port 8080] [--token T] [--processor module:factory]
    (run_stream.py serve calls `serve(serve_config(cfg).validate(), factory)`), then open http://HOST:PORT/?token=T

Pieces: server.py (aiohttp routes, limits, token, `serve`, `build_app`), peer.py (`PeerProcessor` protocol, one
`PeerSession` per browser, control channel), track.py (`ProcessedTrack`: latest-frame-wins, pts preserved),
probe.py (latency probe), upload.py (swap-source validation), config.py (`ServeConfig`), static/ (the page).

Decisions:
- Swap source: uploaded over HTTP, `POST /swap-source?peer=ID` (multipart field "image" or raw body, PNG/JPEG,
  <= max_upload_bytes, header-checked dimensions before decoding), not over the data channel (SCTP messages
  are small; HTTP gives status codes). `ServeConfig.swap_source` gives every new peer a default.
- Frame size: frames above `max_frame_pixels` (default 1920x1080) are downscaled (aspect kept, even sides,
  INTER_AREA) before the processor; the returned video has the downscaled size. Never refused.
- Delay never builds up: one-slot mailboxes between network -> processor -> encoder; drops are counted.
- Leaving: connection failed/closed -> closed at once; disconnected -> after `disconnect_grace_s` unless it
  reconnects; never connected -> after `connect_timeout_s`; incoming track ended (tab closed) -> closed.
  Closing cancels tasks, awaits `processor.close()`, closes the RTCPeerConnection, frees the slot.
- Safety: 127.0.0.1 by default; any other address needs a token (>= 8 chars), checked on /offer and
  /swap-source; 503 past `max_peers`; malformed offers get 400 with a message. Browsers only allow the
  camera on https or localhost: for a LAN address pass --cert/--key.
- Latency: stats (every second on the data channel) carry server-side latency (frame decoded -> handed to
  the encoder), processor time, queue wait, fps in/out, drops; with `?probe=1` the page measures the full
  browser -> server -> browser loop per frame (see probe.py). The page also shows the data-channel RTT.
"""
from stream.config import RENDER_MODES as MODES  # the one list of render modes, under this package's old name

from .server_config import ConfigError, RecordOptions, ServeConfig
from .peer import PassthroughProcessor, PeerProcessor, ProcessorFactory

__all__ = ["ServeConfig", "RecordOptions", "ConfigError", "PeerProcessor", "ProcessorFactory",
           "PassthroughProcessor", "MODES", "build_app", "serve"]


def build_app(config, processor_factory):
    from .server import build_app as _build_app
    return _build_app(config, processor_factory)


def serve(config, processor_factory):
    from .server import serve as _serve
    return _serve(config, processor_factory)
