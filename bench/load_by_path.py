"""Load a module from a file of this checkout under a name of our choosing, while another tree (``--tree``) is first
on ``sys.path``: the benches that compare trees measure every tree with this checkout's measures."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load_by_path(path: Path, name: str) -> ModuleType:
    """The module in ``path``, registered in ``sys.modules`` as ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod
