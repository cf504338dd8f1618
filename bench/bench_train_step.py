"""Training throughput on this machine: samples/s of ``model.train`` steps under several settings, same batches.

    python bench/bench_train_step.py --config configs/train_cpu.yaml --steps 30 [--variants base,workers1,...]

Each variant builds a ``Trainer`` from the config with its overrides, runs ``--warmup`` steps (not timed: data-loader
start-up, one-off compilation), then ``--steps`` timed steps, and reports samples/s and the mean loss of the timed
steps. Every variant draws the same batches (a batch depends only on (seed, step)), so equal settings give equal
losses and a faster variant that changes the numbers shows it in the loss column. Variants:

- ``base``: the config as it is; ``workers1``/``workers2``: batches built by that many spawned processes;
- ``threads1``: one torch thread; ``channels_last``: NHWC activations; ``bf16``: CPU bf16 autocast;
- ``compile``: ``torch.compile`` of the network (inductor).
The table goes to stdout (markdown) with the CPU model, for ``bench/RESULTS.md``.
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model.train import Trainer, resolve  # noqa: E402
from model.train_config import TrainConfig, load_train_config  # noqa: E402

VARIANTS = {
    "base": {},
    "workers1": {"workers": 1},
    "workers2": {"workers": 2},
    "threads1": {"threads": 1},
    "threads1_workers1": {"threads": 1, "workers": 1},
    "threads1_workers2": {"threads": 1, "workers": 2},
    "channels_last": {"channels_last": True},
    "bf16": {"amp": "bf16"},
    "compile": {"compile": True},
    "fold": {"fold_bn": True},
    "fold_cl": {"fold_bn": True, "channels_last": True},
    "fold_cl_stem": {"fold_bn": True, "channels_last": True, "freeze": "stem"},
    "fold_cl_layer1": {"fold_bn": True, "channels_last": True, "freeze": "layer1"},
    "fold_cl_layer2": {"fold_bn": True, "channels_last": True, "freeze": "layer2"},
    "cached": {"data.cached_labels": True},
    "layer1": {"freeze": "layer1"},
    "cl_layer1": {"channels_last": True, "freeze": "layer1"},
    "layer2": {"freeze": "layer2"},
    "fold_cl_layer1_cached": {"fold_bn": True, "channels_last": True, "freeze": "layer1", "data.cached_labels": True},
    "fold_cl_layer1_cached_w1": {"fold_bn": True, "channels_last": True, "freeze": "layer1",
                                 "data.cached_labels": True, "workers": 1},
}


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        name = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
        flags = next((line for line in out.splitlines() if line.startswith("Flags")), "")
        extra = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f in flags.split()]
        return f"{name} ({os.cpu_count()} cpus; {', '.join(extra) or 'no avx512/amx'})"
    except (OSError, StopIteration):
        return platform.processor() or "cpu"


def run_variant(cfg: TrainConfig, name: str, steps: int, warmup: int, out: Path) -> dict:
    c = copy.deepcopy(cfg)
    for key, value in VARIANTS[name].items():  # dotted keys go into their section
        *path, leaf = key.split(".")
        node = c
        for part in path:
            node = getattr(node, part)
        setattr(node, leaf, value)
    c.eval_every, c.ckpt_every, c.eval_images = 0, 0, None
    torch.set_num_threads(int(c.threads or 2))
    tr = Trainer(c, out / name, Path.cwd())
    tr.run(max_steps=warmup, progress=False)
    log0 = sum(1 for _ in open(out / name / "log.csv"))
    t0 = time.perf_counter()
    tr.run(max_steps=steps, progress=False)
    dt = time.perf_counter() - t0
    import csv

    rows = [r for r in csv.DictReader(open(out / name / "log.csv"))][log0 - 1:]
    losses = [float(r["loss"]) for r in rows if r.get("loss")]
    return {"variant": name, "samples_s": steps * c.batch / dt, "loss": float(np.mean(losses[-steps:])),
            "threads": torch.get_num_threads(), "workers": c.workers}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/train_cpu.yaml")
    p.add_argument("--steps", type=int, default=30, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    p.add_argument("--variants", default="base,workers1,threads1_workers1,channels_last,bf16,compile")
    p.add_argument("--out", default="bench/_work/train_step")
    a = p.parse_args(argv)
    cfg = load_train_config(a.config)
    out = resolve(a.out, Path.cwd())
    res = []
    for name in a.variants.split(","):
        try:
            r = run_variant(cfg, name, a.steps, a.warmup, out)
        except Exception as exc:  # a variant that cannot run here (e.g. inductor without a compiler) is reported
            r = {"variant": name, "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:120]}
        res.append(r)
        print(r, file=sys.stderr, flush=True)
    print(f"CPU: {cpu_model()}; torch {torch.__version__}; batch {cfg.batch}; {a.steps} timed steps after "
          f"{a.warmup}; load average {os.getloadavg()[0]:.1f}")
    print("| variant | threads | workers | samples/s | mean loss |\n|---|---:|---:|---:|---:|")
    for r in res:
        if "error" in r:
            print(f"| {r['variant']} | | | failed: {r['error']} | |")
        else:
            print(f"| {r['variant']} | {r['threads']} | {r['workers']} | {r['samples_s']:.1f} | {r['loss']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
