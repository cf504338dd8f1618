"""The run's defaults (configs/default.yaml, the one place they live) as the configs the tracking layer and the
WebRTC server take, with a test's changes: for tests that build a tracker, a filter or a server by hand."""
from __future__ import annotations

import dataclasses
from functools import lru_cache
from typing import Any

from stream.analyze import kalman_config, neutral_config, tracker_config
from stream.config import RunConfig, load_config
from tracking.blendshape_tracker import NeutralConfig
from tracking.kalman import KalmanConfig
from tracking.tracker import TrackerConfig


@lru_cache(maxsize=1)
def run_defaults() -> RunConfig:
    """``load_config()`` once (frozen: safe to share)."""
    return load_config()


def tracker_defaults(**changes: Any) -> TrackerConfig:
    """The default run's ``TrackerConfig`` with ``changes`` (its field names: ``detect_every=5``)."""
    return dataclasses.replace(tracker_config(run_defaults()), **changes)


def kalman_defaults(**changes: Any) -> KalmanConfig:
    """The default run's ``KalmanConfig`` with ``changes`` (``engine="full"``)."""
    return dataclasses.replace(kalman_config(run_defaults().kalman), **changes)


def neutral_defaults(**changes: Any) -> NeutralConfig:
    """The default run's ``NeutralConfig`` with ``changes``."""
    return dataclasses.replace(neutral_config(run_defaults().blendshapes), **changes)


def serve_defaults(**changes: Any):
    """The default run's ``ServeConfig`` with ``changes`` (``max_peers=4``); imports the [webrtc] extra."""
    from stream.webrtc.server_config import serve_config

    return dataclasses.replace(serve_config(run_defaults()), **changes)
