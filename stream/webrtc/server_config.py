"""ServeConfig: every knob of the WebRTC server, validated before anything listens."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Optional

from stream.config import ConfigError, RunConfig, peer_controls  # one error type for every configuration mistake (CLI, YAML, server)

MIN_TOKEN_CHARS = 8


@dataclass
class RecordOptions:
    """Placeholder for per-peer recording (the processor does the recording; the CLI closes over this when it
    builds the processor factory). Nothing in the server reads it yet."""

    dir: Optional[str] = None
    video: bool = False
    tracks: bool = False
    meshes: bool = False


@dataclass(kw_only=True)
class ServeConfig:
    """The server's settings. Those that are run settings (``serve.*``, ``mode``, ``smooth`` of configs/default.yaml,
    where their defaults are) have none here: ``serve_config(cfg)`` makes this from a run's ``RunConfig``."""

    host: str
    port: int
    token: Optional[str]                   # required when host is not loopback; the page sends it with the offer
    max_peers: int                         # more peers get HTTP 503 (sized by bench/bench_webrtc_load.py)
    max_upload_bytes: int                  # swap-source uploads
    max_frame_pixels: int = 1920 * 1080    # larger incoming frames are downscaled (aspect kept) before processing
    swap_source: Optional[str] = None      # image file given to every new peer's processor
    ice_servers: tuple[str, ...] = ()      # e.g. ("stun:stun.example.org:3478",); none by default (LAN use)
    stats_interval_s: float = 1.0
    disconnect_grace_s: float = 5.0        # "disconnected" this long -> the peer is closed
    connect_timeout_s: float = 30.0        # never connected this long after the offer -> closed
    media_timeout_s: float                 # no video this long after the first frame -> closed (recording
    # finalised): a peer that vanished without closing is otherwise noticed only by ICE after ~30 s; 0: off
    default_controls: dict
    # given to each new peer's processor (set_controls) and shown by the page on connect; e.g. {"mode": "swap"}
    # for `serve --swap-source face.jpg`
    ssl_cert: Optional[str]                # serve HTTPS (browsers only allow the camera on https or localhost)
    ssl_key: Optional[str]
    record: RecordOptions = field(default_factory=RecordOptions)

    def is_loopback(self) -> bool:
        return is_loopback_host(self.host)

    def validate(self) -> "ServeConfig":
        if not (0 <= int(self.port) <= 65535):
            raise ConfigError(f"port {self.port} is out of range (0-65535)")
        if not self.is_loopback():
            if not self.token or len(self.token) < MIN_TOKEN_CHARS:
                raise ConfigError(
                    f"refusing to listen on {self.host!r} without a token: pass --token (run_stream.py serve: --serve.token) with at least "
                    f"{MIN_TOKEN_CHARS} characters (the page then needs ?token=...), or bind 127.0.0.1")
        if self.max_peers < 1:
            raise ConfigError(f"max_peers must be at least 1, got {self.max_peers}")
        if self.media_timeout_s < 0:
            raise ConfigError(f"media timeout must not be negative, got {self.media_timeout_s}")
        if self.max_upload_bytes < 1024:
            raise ConfigError(f"max_upload_bytes must be at least 1024, got {self.max_upload_bytes}")
        if self.max_frame_pixels < 64 * 64:
            raise ConfigError(f"max_frame_pixels must be at least {64 * 64}, got {self.max_frame_pixels}")
        from .peer import validate_controls
        try:
            self.default_controls = validate_controls(dict(self.default_controls))
        except ValueError as exc:
            raise ConfigError(f"default controls: {exc}") from None
        if bool(self.ssl_cert) != bool(self.ssl_key):
            raise ConfigError("HTTPS needs both a TLS certificate and its private key (serve.cert and serve.key)")
        return self


def serve_config(cfg: RunConfig) -> ServeConfig:
    """The server's config from a run's (``serve.*``; each peer starts in ``mode``, smoothed when ``smooth`` is
    kalman): the one place the run's keys become it. Not validated yet (``validate()``)."""
    s = cfg.serve
    return ServeConfig(host=s.host, port=s.port, token=s.token, max_peers=s.max_peers,
                       media_timeout_s=float(s.media_timeout), ssl_cert=s.cert, ssl_key=s.key,
                       max_upload_bytes=int(s.max_upload_mb * 1024 * 1024),
                       default_controls=peer_controls(cfg))


def is_loopback_host(host: Optional[str]) -> bool:
    if not host:
        return False  # "" / None means every interface
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost: could resolve anywhere
