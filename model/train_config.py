"""The training run's description: a YAML file (``configs/train*.yaml``) and ``--set KEY=VALUE`` overrides, loaded
once into a typed tree, ``TrainConfig`` (``cfg.lr``, ``cfg.data.cache``, ``cfg.teacher.flip``).

The default of a key a file leaves out is the dataclass field's default below (the one place). A key the tree does
not know is an error naming it (with the closest known key); a value is converted to the field's type (YAML reads
``2e-3`` as text) or refused naming the key. The mappings handed whole to the typed configs of the data and the
loss (``data.augment``: ``model.data.photos.Augment``; ``data.profile``/``data.human``/``data.turned``:
``model.data.sampler``; ``loss``: ``model.losses.LossWeights``) stay mappings here; those configs refuse unknown keys.
"""
from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import yaml

from model.cliparse import closest_flag

#: Mappings ``--set`` may add new keys to (each is read by a typed config with its own defaults).
OPEN_MAPS = ("loss", "data.human", "data.profile", "data.augment", "data.turned")


@dataclass
class TeacherConfig:
    """``teacher.*``: the network that labels the photos."""

    name: str = "3ddfa-v2-mb05"
    flip: bool = True  # flip test-time averaging of the teacher labels


@dataclass
class DataConfig:
    """``data.*``: where the samples come from."""

    photos: Optional[str] = None  # unlabelled photos, labelled by the teacher on the fly (without ``cache``)
    limit: Optional[int] = None  # the first N photos only (tests)
    cache: Union[str, list, None] = None  # teacher-fitted photo cache folder(s) (``model.data.cache``)
    cached_labels: bool = False  # the cache's stored teacher labels instead of labelling on the fly
    source_weights: dict = field(default_factory=dict)  # per-source loss weight (top folder name)
    mat: list = field(default_factory=list)  # 300W-LP style folders (exact labels)
    mat_fraction: float = 0.5  # share of each batch from ``mat`` when given
    augment: dict = field(default_factory=dict)  # ``Augment`` keywords
    profile: Optional[dict] = None  # ``ProfileConfig`` keywords
    human: Optional[dict] = None  # ``HumanConfig.from_dict``
    turned: Optional[dict] = None  # ``TurnedConfig.from_dict``


@dataclass
class TrainConfig:
    """One training run (``python -m model.train --config FILE``); ``batch``, ``steps`` and ``lr`` have no default."""

    batch: int
    steps: int  # length of the LR schedule; --max-steps / --minutes stop earlier
    lr: float
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    threads: Optional[int] = None  # torch CPU threads (null or 0: torch's default)
    workers: int = 0  # spawned batch-making processes (cache mode)
    out: str = "train_out"  # checkpoints, optimizer state, log.csv
    init: Optional[str] = None  # start from this checkpoint's weights (the optimizer starts fresh)
    min_lr: float = 0.0
    warmup: int = 0  # linear warm-up steps
    weight_decay: float = 0.0
    ema: Any = None  # weight moving average: a decay per step in [0, 1), or null (``model.train.ema_decay``)
    schedule: str = "cosine"  # cosine | step
    step_every: int = 1000  # schedule step: steps between LR drops
    step_gamma: float = 0.1  # schedule step: factor per drop
    schedule_minutes: Optional[float] = None  # the cosine runs over this many minutes instead of ``steps``
    eval_every: int = 100  # steps between evaluations on ``eval_images`` (0: never)
    ckpt_every: int = 50  # steps between checkpoints (0: at the end only)
    eval_images: Optional[str] = None  # the validation set (checkpoints are chosen on it)
    amp: str = "auto"  # auto (bf16 on CUDA), bf16, fp16, none
    channels_last: Optional[bool] = None  # NHWC activations (null: on CUDA only)
    fold_bn: bool = False  # train with every BatchNorm folded into its conv
    freeze: Any = "none"  # none, stem or layerK (``model.train.frozen_stages``)
    compile: bool = False  # torch.compile the training forward
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: dict = field(default_factory=dict)  # ``LossWeights`` keywords

    def to_dict(self) -> dict:
        """Every key as nested plain values (a YAML file ``load_train_config`` reads back to the same config)."""
        return dataclasses.asdict(self)


def _convert(key: str, value: Any, kind: Any) -> Any:
    """``value`` as the field type ``kind`` (a ValueError naming ``key`` when it cannot be)."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) is Union:
        if value is None and type(None) in args:
            return None
        kinds = [a for a in args if a is not type(None)]
        kind = kinds[0] if len(kinds) == 1 else Any
    if kind is Any or value is None and kind in (dict, list):
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"config key '{key}': expected true or false, got {value!r}")
        return value
    if kind in (int, float):
        try:
            number = float(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is None or (kind is int and not number.is_integer()):
            raise ValueError(f"config key '{key}': expected {'an integer' if kind is int else 'a number'}, "
                             f"got {value!r}")
        return int(number) if kind is int else number
    if kind is str:
        if isinstance(value, (dict, list)):
            raise ValueError(f"config key '{key}': expected text, got {value!r}")
        return str(value)
    if kind in (dict, list) and not isinstance(value, kind):
        raise ValueError(f"config key '{key}': expected a {'mapping' if kind is dict else 'list'}, got {value!r}")
    return value


def _build(cls: type, d: Any, prefix: str = "") -> Any:
    if not isinstance(d, dict):
        raise ValueError(f"config key '{prefix.rstrip('.')}': expected a mapping, got {d!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in d:
        if key not in names:
            hint = closest_flag(str(key), names)
            raise ValueError(f"unknown config key '{prefix}{key}'" + (f" (did you mean '{prefix}{hint}'?)" if hint
                                                                        else ""))
    kw = {}
    for f in dataclasses.fields(cls):
        if f.name not in d:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ValueError(f"config key '{prefix}{f.name}' is missing (it has no default)")
            continue
        kind = hints[f.name]
        value = d[f.name]
        kw[f.name] = (_build(kind, value or {}, f"{prefix}{f.name}.") if dataclasses.is_dataclass(kind)
                      else _convert(prefix + f.name, value, kind))
    return cls(**kw)


def _field_kind(parts: list[str]) -> Any:
    """The type of the ``TrainConfig`` field at the dotted path ``parts`` (None: no such field)."""
    kind: Any = TrainConfig
    for part in parts:
        if not dataclasses.is_dataclass(kind):
            return None
        kind = typing.get_type_hints(kind).get(part)
    return kind


def apply_overrides(raw: dict, items: list[str]) -> dict:
    """``KEY=VALUE`` overrides (dotted keys, values parsed as YAML) applied to the file's mapping ``raw`` in place.

    The key must be a key of ``TrainConfig`` or of the file (a typo is an error naming it), or a new leaf under one
    of ``OPEN_MAPS``."""
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item}: expected KEY=VALUE")
        parts = key.split(".")
        node = raw
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node.get(part), dict):
                here = parts[:i + 1]
                if node.get(part) is None and (".".join(here) in OPEN_MAPS
                                               or dataclasses.is_dataclass(_field_kind(here))):
                    node[part] = {}
                else:
                    raise ValueError(f"--set {key}: {'.'.join(here)} is not a mapping in the config")
            node = node[part]
        if parts[-1] not in node and ".".join(parts[:-1]) not in OPEN_MAPS and _field_kind(parts) is None:
            raise ValueError(f"--set {key}: no such key in the config")
        node[parts[-1]] = yaml.safe_load(text)
    return raw


def train_config(raw: dict, overrides: list[str] = ()) -> TrainConfig:
    """The typed config of a file's mapping ``raw`` (not changed) with ``overrides`` (``--set``); validated."""
    import copy

    return _build(TrainConfig, apply_overrides(copy.deepcopy(raw), list(overrides)))


def load_train_config(path: str | os.PathLike, overrides: list[str] = ()) -> TrainConfig:
    """The YAML file at ``path`` with ``overrides`` (``--set KEY=VALUE``): ``OSError``, ``yaml.YAMLError`` or a
    one-line ``ValueError`` naming the key."""
    with open(path) as f:
        raw = yaml.safe_load(f)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: not a mapping")
    return train_config(raw, overrides)
