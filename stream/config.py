"""Configuration: ``configs/default.yaml`` merged with a user file and command-line overrides, validated on load.

Keys are dotted paths (``kalman.gate``). A value must have the type of the default (``null`` defaults accept strings
or numbers); a few keys accept only listed choices. Errors are ``ConfigError`` with one line naming the bad key.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Iterator

import yaml

from model.cliparse import closest_flag
from model.errors import UserError

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"

CHOICES: dict[str, tuple] = {
    "mode": ("landmarks", "mesh", "wireframe", "depth", "pncc", "swap", "none"),
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


def _set(d: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    for part in parts[:-1]:
        d = d[part]
    d[parts[-1]] = value


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
        if value is None or want is None:
            return value
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
        _set(out, key, _check_value(key, value, known[key]))
    return out


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> dict:
    """Defaults, then the YAML file at ``path``, then dotted-key ``overrides`` (CLI flags); validated."""
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
            d = nested
            parts = key.split(".")
            for part in parts[:-1]:
                d = d.setdefault(part, {})
            d[parts[-1]] = value
        cfg = merge(cfg, nested, "command line")
    t = cfg["tracker"]
    if t["drop_confidence"] > t["confirm_confidence"]:
        raise ConfigError(f"config key 'tracker.drop_confidence' ({t['drop_confidence']}) must not exceed "
                          f"'tracker.confirm_confidence' ({t['confirm_confidence']})")
    return cfg


def config_keys() -> list[tuple[str, Any]]:
    """All (dotted key, default) pairs, for building the CLI."""
    return list(flatten(load_default()))
