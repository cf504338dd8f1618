"""Checkpoints: our format (state dict + metadata) and the upstream formats we read (authors' DAMDNet, 3DDFA_V2).

Our format is a dict ``{"format": "damdnet-ckpt/1", "backbone": str, "backbone_kwargs": dict, "state_dict": ...,
"whitening": {"name", "mean", "std"}, "convention": "v1"|"v2", "input_size": 120, "meta": {...}}`` saved with
``torch.save``; it loads with ``weights_only=True``. Upstream files may be legacy pickles: they are loaded with
``weights_only=False`` only when they are named assets whose checksum the asset store verified.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from model.assets import AssetError, AssetStore
from model.backbones import DEFAULT_SPACE, adapt_state_dict, build_backbone
from model.errors import UserError
from model.morphable import Whitening

FORMAT = "damdnet-ckpt/1"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
OUR_WEIGHTS = {"damdnet": WEIGHTS_DIR / "damdnet.pth"}
ASSET_WEIGHTS = {"damdnet-authors": "damdnet-authors", "3ddfa-v2-mb05": "3ddfa-v2-mb05",
                 "3ddfa-v2-mb1": "3ddfa-v2-mb1"}
MODEL_NAMES = ["auto", *OUR_WEIGHTS, *ASSET_WEIGHTS]
RELEASE_MARGIN = 1.0  # NME points (mean of bins, validation set, GT crops) our weights may trail the teacher by


class CheckpointError(UserError, RuntimeError):
    """A user-facing checkpoint problem (one line)."""


@dataclass
class LoadedModel:
    """A network in eval mode with what is needed to use its output."""

    net: nn.Module
    backbone: str
    whitening: Whitening
    convention: str
    name: str
    meta: dict = field(default_factory=dict)
    why: str = ""  # for ``auto``: why the models before this one were passed over (one line), else ""


def save_checkpoint(path: str | os.PathLike, net: nn.Module, backbone: str, whitening: Whitening, convention: str,
                    backbone_kwargs: dict | None = None, meta: dict | None = None, half: bool = False) -> None:
    """Write our checkpoint format atomically. ``half`` stores floating tensors as float16."""
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu() for k, v in net.state_dict().items()}
    obj = {"format": FORMAT, "backbone": backbone, "backbone_kwargs": backbone_kwargs or {}, "state_dict": state,
           "whitening": {"name": whitening.name, "mean": torch.from_numpy(whitening.mean),
                         "std": torch.from_numpy(whitening.std)},
           "convention": convention, "input_size": 120, "meta": meta or {}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _infer_upstream(state: dict[str, torch.Tensor]) -> tuple[str, dict]:
    keys = {k[7:] if k.startswith("module.") else k for k in state}
    if "layer1.0.conv1.weight" in keys and "seLayer1.fc.0.weight" in keys:
        return "damdnet", {}
    if "dw2_1.conv_dw.weight" in keys:
        w = state.get("module.conv1.weight", state.get("conv1.weight"))
        return "mobilenet_v1", {"widen_factor": w.shape[0] / 32}
    raise CheckpointError("unrecognised checkpoint: neither our format, the authors' DAMDNet nor 3DDFA_V2 MobileNet")


def _torch_load(path: Path, trusted: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # legacy pickles need the full unpickler
        trusted = trusted or _is_known_asset(path)
        if not trusted:
            raise CheckpointError(f"{path} is not a plain tensor checkpoint and is not a verified asset; refusing to "
                                  f"unpickle it ({type(exc).__name__})") from None
        return torch.load(path, map_location="cpu", weights_only=False)


def _is_known_asset(path: Path) -> bool:
    """True when the file's sha256 equals that of a registered asset (so unpickling it is as safe as the asset)."""
    from model.assets import ASSETS, file_sha256

    digest = file_sha256(path)
    return any(a.sha256 == digest for a in ASSETS.values())


def load_file(path: str | os.PathLike, store: AssetStore | None = None, trusted: bool = False,
              name: str | None = None) -> LoadedModel:
    """Load a checkpoint file of any supported format into an eval-mode network."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such checkpoint: {path}")
    obj = _torch_load(path, trusted)
    store = store or AssetStore()
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        backbone, kwargs = obj["backbone"], dict(obj.get("backbone_kwargs") or {})
        wh = obj["whitening"]
        whitening = Whitening(np.asarray(wh["mean"], dtype=np.float32), np.asarray(wh["std"], dtype=np.float32),
                              wh.get("name", ""))
        convention, meta = obj.get("convention", "v1"), dict(obj.get("meta") or {})
        state = {k: v.float() if v.is_floating_point() else v for k, v in obj["state_dict"].items()}
    else:
        state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
        if not isinstance(state, dict):
            raise CheckpointError(f"{path}: no state dict inside")
        backbone, kwargs = _infer_upstream(state)
        convention = DEFAULT_SPACE[backbone]
        whitening = Whitening.load(convention, store)
        state, meta = adapt_state_dict(backbone, state), {"source": str(path)}
    try:
        net = build_backbone(backbone, **kwargs)
    except ValueError as exc:  # a checkpoint naming a backbone this version does not have
        raise CheckpointError(f"{path}: {exc}") from None
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit backbone '{backbone}': {str(exc).splitlines()[0]}") from None
    net.eval()
    meta.setdefault("backbone_kwargs", kwargs)
    return LoadedModel(net, backbone, whitening, convention, name or path.stem, meta)


_AUTO_WHO = {"damdnet-authors": "the authors' DAMDNet", "damdnet": "our damdnet", "3ddfa-v2-mb05": "3ddfa-v2-mb05"}


def not_released_reason(meta: dict) -> str:
    """Why our weights are not the default, from their metadata (``python -m model.ship`` writes the figures)."""
    try:
        ours = float(meta["validation"]["gt"]["nme_mean_of_bins"])
        teacher = float(meta["validation_teacher"]["gt"]["nme_mean_of_bins"])
    except (KeyError, TypeError, ValueError):
        return "not released (still training)"
    name = meta.get("validation_teacher_name", "the teacher")
    return (f"not released: {ours - teacher:.2f} NME points behind {name} on the validation set ({ours:.2f}% vs "
            f"{teacher:.2f}%; the release rule allows {RELEASE_MARGIN:.1f})")


def model_label(name: str, backbone: str, why: str = "") -> str:
    """The log's model words: ``3ddfa-v2-mb05 (mobilenet_v1; auto: WHY)``, WHY = ``LoadedModel.why``."""
    return f"{name} ({backbone}{f'; auto: {why}' if why else ''})"


def load_model(name_or_path: str = "auto", store: AssetStore | None = None) -> LoadedModel:
    """Load by name (``auto``, ``damdnet``, ``damdnet-authors``, ``3ddfa-v2-mb05``, ``3ddfa-v2-mb1``) or by path.

    ``auto``: the authors' DAMDNet when present or fetchable, else our own ``damdnet`` weights when their metadata
    marks them released (``meta["release"]``, set by ``python -m model.ship``: mean-of-bins NME on the validation set
    within ``RELEASE_MARGIN`` points of the teacher), else the 3DDFA_V2 MobileNet peer (``3ddfa-v2-mb05``); the
    returned ``name`` says which one loaded and ``why`` why the ones before it were passed over.
    """
    store = store or AssetStore()
    if name_or_path == "auto":
        errors, passed = [], []
        for cand in ("damdnet-authors", "damdnet", "3ddfa-v2-mb05"):
            try:
                loaded = load_model(cand, store)
            except (CheckpointError, AssetError) as exc:
                errors.append(f"{cand}: {exc}")
                passed.append(f"{_AUTO_WHO[cand]} is {getattr(exc, 'reason', str(exc))}")
                continue
            if cand == "damdnet" and not loaded.meta.get("release", False):
                # Our weights become the default only once their measured accuracy is released (meta "release":
                # mean-of-bins NME on the validation set within 1 point of the 3DDFA_V2 teacher); until then the teacher serves.
                errors.append("damdnet: weights not released for default use (still training)")
                passed.append(f"{_AUTO_WHO[cand]} is {not_released_reason(loaded.meta)}")
                continue
            loaded.why = "; ".join(passed)
            return loaded
        raise CheckpointError("no model could be loaded: " + " | ".join(errors))
    if name_or_path in OUR_WEIGHTS:
        if not OUR_WEIGHTS[name_or_path].is_file():
            raise CheckpointError(f"our '{name_or_path}' weights are not in this checkout yet "
                                  f"({OUR_WEIGHTS[name_or_path]}): train them with `python -m model.train --config "
                                  f"configs/train.yaml`, or use --weights 3ddfa-v2-mb05 / damdnet-authors")
        return load_file(OUR_WEIGHTS[name_or_path], store, name=name_or_path)
    if name_or_path in ASSET_WEIGHTS:
        path = store.path(ASSET_WEIGHTS[name_or_path])  # verified checksum -> trusted
        return load_file(path, store, trusted=True, name=name_or_path)
    if os.sep in name_or_path or Path(name_or_path).suffix or Path(name_or_path).exists():
        return load_file(name_or_path, store)
    raise CheckpointError(f"unknown model '{name_or_path}' (names: {', '.join(MODEL_NAMES)}, or a checkpoint path)")
