"""DAMDNet real-time 3D face alignment: the installable package and its Python API.

    import damdnet
    faces = damdnet.align_image("photo.jpg")            # [Face]: landmarks (68, 3), pose, params (62,), box
    for frame in damdnet.track_video("talk.mp4"):       # FrameResult per frame: faces with track ids
        ...
    async for frame in damdnet.stream("webcam:0"):      # live sources, on your event loop
        ...

Results: ``Face``, ``FrameResult`` (dataclasses; shapes and units in their docstrings). Errors: ``DamdnetError``
with the CLI's one-line message. An input with no face is not an error: empty results and a ``NoFaceWarning``
(the CLI's ``warning:`` line). ``Session(weights=..., device=...)`` keeps a model loaded for many calls.
The console command ``damdnet-stream`` is ``run_stream.py``. Attributes load on first use (``import damdnet`` alone
does not import torch).
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "Face", "FrameResult", "Session", "DamdnetError", "NoFaceWarning", "VideoTracks",
           "align_image", "track_video", "stream", "session"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        _check_not_shadowed()
        from damdnet import api

        return getattr(api, name)
    raise AttributeError(f"module 'damdnet' has no attribute {name!r}")


def _check_not_shadowed() -> None:
    """In the repository layout (a checkout, or ``pip install -e .``) the checkout's ``model``, ``stream`` and
    ``tracking`` are top-level packages, so a module of the same name found first on ``sys.path`` (e.g. a
    ``model.py`` beside the user's script) would be imported instead: say so in one line. The wheel (``damdnet.model``
    ...) has nothing to shadow."""
    import importlib.util
    from pathlib import Path

    checkout = Path(__file__).resolve().parent.parent
    if (Path(__file__).resolve().parent / "model").is_dir():
        return
    for pkg in ("model", "stream", "tracking"):
        spec = importlib.util.find_spec(pkg)
        origin = Path(spec.origin).resolve() if spec is not None and spec.origin else None
        if origin != checkout / pkg / "__init__.py":
            raise ImportError(f"damdnet needs this checkout's '{pkg}' package ({checkout / pkg}), but "
                              f"'{pkg}' is {origin or 'missing'}: rename that module, or use the wheel "
                              f"(`pip install .` in another venv), whose packages are damdnet.{pkg}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
