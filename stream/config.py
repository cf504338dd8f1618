"""The run description: ``configs/default.yaml`` merged with a user file and command-line flags (or the API's
keywords), validated once on load into one typed tree, ``RunConfig`` (``cfg.kalman.pose_gate``, ``cfg.batch.workers``).

The YAML is the one place of the defaults (and of their comments, from which ``--help`` is built); the dataclasses
below give the tree its types and hold no defaults. Keys are dotted paths (``kalman.pose_gate``). A value must have
the type of the default (``null`` defaults accept strings, or the number type of ``NULLABLE_TYPES``); a few keys
accept only listed choices. Errors are ``ConfigError`` with one line naming the bad key.
"""
from __future__ import annotations

import copy
import functools
import dataclasses
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import yaml

from model.cliparse import closest_flag
from model.errors import UserError

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"

#: Every render mode of ``mode`` (the renderer, the window's keys, the WebRTC page's list), in the window's order.
RENDER_MODES = ("landmarks", "mesh", "wireframe", "depth", "pncc", "swap", "none")

CHOICES: dict[str, tuple] = {
    "mode": RENDER_MODES,
    "smooth": ("kalman", "none"),
    "detector": ("auto", "yunet", "haar"),
    "mesh_format": ("npz", "npz+obj", "npz+ply", "glb", "npz+glb"),
    "tracks_format": ("auto", "csv", "jsonl", "npz", "livelinkface"),
    "live": ("auto", True, False),
    "sequence": ("auto", True, False),
    "detect_async": ("auto", True, False),
    "fast_path": ("auto", "onnxruntime", "torchscript", "none"),  # model.fastpath.FAST_PATHS (not imported: torch)
    "batch.tracks": ("csv", "jsonl", "npz", "livelinkface", "none"),
    "batch.out": (None, "mp4", "mkv", "mov", "m4v", "webm", "avi"),
    "batch.transfer": ("auto", "shared", "object_store"),
}
POSITIVE = {"detect_every", "queue_size", "tracker.min_hits", "tracker.max_misses",
            "webcam.width", "webcam.height", "webcam.fps", "synthetic.width", "synthetic.height", "synthetic.fps",
            "serve.max_peers", "serve.max_upload_mb", "detect_max_side", "batch.cpus_per_worker"}
NULLABLE_TYPES: dict[str, type] = {"max_frames": int, "batch.gpus_per_worker": float}
UNIT_INTERVAL = {"tracker.confirm_confidence", "tracker.drop_confidence", "tracker.confidence_memory"}


class ConfigError(UserError, ValueError):
    """A bad configuration key or value (one line)."""


# --- the typed tree: one dataclass per section of default.yaml, fields in its order, no defaults --------------------
# (a field here and a key there must match one to one: ``_build`` refuses a default.yaml that differs)

@dataclass(frozen=True)
class BlendshapesSection:
    """``blendshapes.*``: how each track learns its neutral face (seconds)."""

    warmup: float
    adapt: float


@dataclass(frozen=True)
class TrackerSection:
    """``tracker.*``: track life (``stream.analyze.tracker_config`` makes the tracker's ``TrackerConfig``)."""

    iou_threshold: float
    min_hits: int
    lookahead: int
    max_misses: int
    max_unmatched_detections: int
    confirm_confidence: float
    drop_confidence: float
    confidence_memory: float
    min_face_size: float
    confidence_keeps_tracks: bool
    cut_threshold: float


@dataclass(frozen=True)
class KalmanSection:
    """``kalman.*``: noise levels and gates per parameter group (``stream.analyze.kalman_config``)."""

    pose_measure: float
    pose_accel: float
    pose_gate: float
    shape_measure: float
    shape_accel: float
    shape_gate: float
    exp_measure: float
    exp_accel: float
    exp_gate: float
    eyelid_measure: float
    eyelid_accel: float
    eyelid_gate: float
    mouth_measure: float
    mouth_accel: float
    mouth_gate: float
    adapt_gate: float


@dataclass(frozen=True)
class WebcamSection:
    """``webcam.*``: the requested capture (px, frames/s); ``open_source``'s keywords."""

    width: int
    height: int
    fps: int


@dataclass(frozen=True)
class SyntheticSection:
    """``synthetic.*``: the built-in demo video (seconds, px, frames/s); ``open_source``'s keywords."""

    seconds: float
    width: int
    height: int
    fps: int


@dataclass(frozen=True)
class ServeSection:
    """``serve.*``: the WebRTC server (``stream.webrtc.server_config.serve_config`` makes its ``ServeConfig``)."""

    host: str
    port: int
    token: Optional[str]
    cert: Optional[str]
    key: Optional[str]
    max_peers: int
    media_timeout: float
    max_upload_mb: int


@dataclass(frozen=True)
class BatchSection:
    """``batch.*``: many files on Ray (``stream.batch``)."""

    inputs: list[str]
    outdir: Optional[str]
    tracks: str
    out: Optional[str]
    meshes: bool
    workers: int
    ray_address: Optional[str]
    transfer: str
    cpus_per_worker: float
    gpus_per_worker: Optional[float]
    files_per_worker: int
    retries: int
    resume: bool
    retry_failed: bool
    dashboard: bool
    worker_logs: bool


@dataclass(frozen=True)
class RunConfig:
    """One run's whole description (``run_stream.py`` run, serve, batch; the Python API): default.yaml's keys."""

    source: str
    out: Optional[str]
    audio: bool
    tracks: Optional[str]
    tracks_format: str
    tracks_params: bool
    meshes: Optional[str]
    mesh_format: str
    show: bool
    vmc: Optional[str]
    vmc_vrm: bool
    max_frames: Optional[int]
    sequence: Union[str, bool]  # "auto", True or False
    weights: str
    backbone: Optional[str]
    device: str
    fast_path: str
    assets: Optional[str]
    threads: int
    expression: bool
    blendshapes: BlendshapesSection
    detector: str
    detect_every: int
    detect_score: float
    detect_max_side: int
    detect_async: Union[str, bool]  # "auto", True or False
    smooth: str
    tracker: TrackerSection
    kalman: KalmanSection
    mode: str
    swap_source: Optional[str]
    swap_keep_target_eyes: bool
    draw_ids: bool
    blendshape_bars: bool
    live: Union[str, bool]  # "auto", True or False
    queue_size: int
    stats: bool
    stats_every: float
    progress: bool
    webcam: WebcamSection
    synthetic: SyntheticSection
    serve: ServeSection
    batch: BatchSection

    def to_dict(self) -> dict:
        """The nested dict of every key (default.yaml's shape)."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "RunConfig":
        """A copy with dotted keys changed (``cfg.replace(out=None, **{"batch.workers": 2})``); values unchecked:
        for the program's own changes, not the user's (those go through ``load_config``)."""
        nested: dict = {}
        for key, value in changes.items():
            _set_path(nested, key, value)
        return _replace_nested(self, nested)


def _set_path(d: dict, key: str, value: Any) -> None:
    """``d[a][b][c] = value`` for ``key`` "a.b.c", making the dicts on the way."""
    parts = key.split(".")
    for part in parts[:-1]:
        d = d.setdefault(part, {})
    d[parts[-1]] = value


def _replace_nested(obj: Any, nested: dict) -> Any:
    changes = {k: _replace_nested(getattr(obj, k), v) if isinstance(v, dict) else v for k, v in nested.items()}
    return dataclasses.replace(obj, **changes)


def _build(cls: type, d: dict, prefix: str = "") -> Any:
    """The dataclass ``cls`` from the validated nested dict ``d`` (sections recursively)."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    if set(names) != set(d):
        raise RuntimeError(f"configs/default.yaml and stream.config.{cls.__name__} differ: "
                           f"{sorted(set(names) ^ set(d), key=str)} (prefix '{prefix}')")
    kw = {}
    for name in names:
        kind = hints[name]
        kw[name] = _build(kind, d[name], f"{prefix}{name}.") if dataclasses.is_dataclass(kind) else d[name]
    return cls(**kw)


def load_default() -> dict:
    with open(DEFAULT_PATH) as f:
        return yaml.safe_load(f)


def flatten(d: dict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yield (dotted key, value) for every leaf."""
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from flatten(v, key + ".")
        else:
            yield key, v


def _get(d: dict, key: str) -> Any:
    for part in key.split("."):
        d = d[part]
    return d


def _check_value(key: str, value: Any, default: Any) -> Any:
    if isinstance(default, list):  # a list of strings (batch.inputs)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
            raise ConfigError(f"config key '{key}': expected a list of strings, got {value!r}")
        return [str(v) for v in value]
    if key in CHOICES:
        if value in ("null", "none", "None") and None in CHOICES[key]:
            value = None
        if isinstance(value, str) and value.lower() in ("true", "false") and True in CHOICES[key]:
            value = value.lower() == "true"
        if value not in CHOICES[key]:
            raise ConfigError(f"config key '{key}': {value!r} is not one of "
                              f"{', '.join(str(c) for c in CHOICES[key])}")
        return value
    if default is None:
        want = NULLABLE_TYPES.get(key)
        if value is None:
            return value
        if want is None:  # a path, an address, a name: text (a Path or a number given by the API or a flag too)
            return str(value)
        default = want()
    if value is None:
        if key in NULLABLE_TYPES:
            return None
        raise ConfigError(f"config key '{key}' must not be null")
    if isinstance(default, bool):
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            value = value.lower() in ("true", "1", "yes")
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected true or false, got {value!r}")
    elif isinstance(default, (int, float)):
        given = value
        try:
            number = float(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is None or not math.isfinite(number):
            raise ConfigError(f"config key '{key}': expected a number, got {given!r}")
        if isinstance(default, int):
            if not number.is_integer():
                raise ConfigError(f"config key '{key}': expected an integer, got {given!r}")
            value = int(number)
        else:
            value = number
    elif isinstance(default, str) and not isinstance(value, str):
        value = str(value)
    if key in POSITIVE and value is not None and value <= 0:
        raise ConfigError(f"config key '{key}' must be positive, got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        raise ConfigError(f"config key '{key}' must not be negative, got {value!r}")
    if key in UNIT_INTERVAL and value > 1:
        raise ConfigError(f"config key '{key}' must be between 0 and 1, got {value!r}")
    return value


def merge(base: dict, overrides: dict, source: str) -> dict:
    """Copy of ``base`` with ``overrides`` (nested dict) applied and validated; ``source`` names them in errors."""
    out = copy.deepcopy(base)
    known = dict(flatten(base))
    sections = {k for k, v in base.items() if isinstance(v, dict)}
    for key, value in flatten(overrides):
        if key not in known:
            if key in sections:
                raise ConfigError(f"config key '{key}' is a section; set its keys ({source})")
            same_leaf = [k for k in known if k.split(".")[-1] == key.split(".")[-1]]
            hint = same_leaf[0] if same_leaf else closest_flag(key, list(known))
            raise ConfigError(f"unknown config key '{key}' in {source}"
                              + (f" (did you mean '{hint}'?)" if hint else ""))
        _set_path(out, key, _check_value(key, value, known[key]))
    return out


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Defaults, then the YAML file at ``path``, then dotted-key ``overrides`` (CLI flags, API keywords); validated
    once, here, into the typed ``RunConfig``."""
    cfg = load_default()
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"no such config file: {p}")
        try:
            user = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError:
            raise ConfigError(f"{p}: not a text file (a YAML config is UTF-8 text)") from None
        except OSError as exc:
            raise ConfigError(f"cannot read config file {p}: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(user, dict):
            raise ConfigError(f"{p}: expected a mapping of keys to values")
        cfg = merge(cfg, user, str(p))
    if overrides:
        nested: dict = {}
        for key, value in overrides.items():
            _set_path(nested, key, value)
        cfg = merge(cfg, nested, "command line")
    run: RunConfig = _build(RunConfig, cfg)
    t = run.tracker
    if t.drop_confidence > t.confirm_confidence:  # the one check of this rule (the tracker trusts its config)
        raise ConfigError(f"config key 'tracker.drop_confidence' ({t.drop_confidence}) must not exceed "
                          f"'tracker.confirm_confidence' ({t.confirm_confidence})")
    return run


def config_keys() -> list[tuple[str, Any]]:
    """All (dotted key, default) pairs, for building the CLI."""
    return list(flatten(load_default()))


def peer_controls(cfg: RunConfig | None = None) -> dict[str, Any]:
    """A browser peer's starting controls from ``cfg``'s ``mode`` and ``smooth`` (the defaults' when None):
    ``{"mode": str, "smooth": bool}``."""
    if cfg is None:
        cfg = _default_run_config()
    return {"mode": cfg.mode, "smooth": cfg.smooth == "kalman"}


@functools.lru_cache(maxsize=1)
def _default_run_config() -> RunConfig:
    return load_config()
