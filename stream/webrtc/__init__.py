"""WebRTC serving: browser camera -> server processing -> browser (see server.py for the HTTP API)."""
from .config import ConfigError, RecordOptions, ServeConfig
from .peer import MODES, PassthroughProcessor, PeerProcessor, ProcessorFactory

__all__ = ["ServeConfig", "RecordOptions", "ConfigError", "PeerProcessor", "ProcessorFactory",
           "PassthroughProcessor", "MODES", "build_app", "serve"]


def build_app(config, processor_factory):
    from .server import build_app as _build_app
    return _build_app(config, processor_factory)


def serve(config, processor_factory):
    from .server import serve as _serve
    return _serve(config, processor_factory)
