"""Train DAMDNet: distillation from a teacher (3DDFA_V2 mb05) on augmented face photos, plus .mat ground truth.

    python -m model.train --config configs/train.yaml [--resume] [--max-steps N] [--minutes M] [--out DIR]
        [--set KEY=VALUE ...]
    python -m model.train --plot OUT/log.csv --png bench/train_curve.png

Every batch is drawn fresh (new augmentation), labelled on the fly by the teacher on exactly the student's crop (flip
averaged), and fitted with WPDC + VDC + Wing (``model.losses``). The student's last layer starts at zero, so it
predicts whitened 0 = the mean parameters. Per step the sample indices and augmentation come from a generator seeded by
(seed, step), so a resumed run draws the same batches as an uninterrupted one. ``OUT/last.pth`` (our checkpoint
format, loadable by ``load_model``), ``OUT/last.optim.pth`` (optimizer, schedule, counters), ``OUT/best.pth`` (best
evaluation NME) and ``OUT/log.csv`` (step, samples, loss, parts, lr, minutes, nme).

``ema: DECAY`` keeps an exponential moving average of the weights (and BatchNorm statistics) next to the trained ones
(``torch.optim.swa_utils.AveragedModel``): the average is what is evaluated and written to ``best.pth``, the raw
weights keep training (``OUT/last.pth``; the average resumes from ``OUT/last.ema.pth``). A ``schedule_minutes``
cosine runs over the run's own minutes, so ``--resume`` continues it where it stopped.
"""
from __future__ import annotations

import argparse
import copy
import csv
import itertools
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from model.backbones import build_backbone
from model.bn_fold import fold_all_bn, unfold_bn
from model.checkpoint import LoadedModel, load_file, save_checkpoint
from model.damdnet_net import STAGES
from model.data.photos import Augment, PhotoDataset
from model.data.teacher import Teacher
from model.losses import CombinedLoss, LossWeights
from model.morphable import MorphableModel, Whitening, crop_to_frame
from model.roi import roi_from_landmarks
from model.train_config import TrainConfig, train_config

N_STAGES = len(STAGES)
LOG_FIELDS = ["step", "samples", "loss", "wpdc", "vdc", "wing", "lr", "minutes", "nme", "nme_bins", "pose_mae",
              "human2d", "nme_raw"]


def resolve(path: str, base: Path) -> Path:
    p = Path(os.path.expanduser(os.path.expandvars(str(path))))
    return p if p.is_absolute() else (base / p).resolve()


def init_student(seed: int) -> torch.nn.Module:
    """DAMDNet with a zero last layer: the initial output is whitened 0, i.e. the mean parameters."""
    torch.manual_seed(seed)
    net = build_backbone("damdnet")
    torch.nn.init.zeros_(net.head().weight)
    return net


def ema_decay(value) -> float:
    """The ``ema`` key: a decay in [0, 1) per step (0 or null: no weight average)."""
    if value is None or value is False:
        return 0.0
    try:
        decay = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"ema: {value!r} is not a number (a decay such as 0.998, or null)") from None
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"ema: {decay} is not a decay in [0, 1)")
    return decay


def frozen_stages(value: str | int | None) -> int:
    """Config ``freeze`` -> the last frozen stage: -1 (``none``: nothing frozen), 0 (``stem``), K (``layerK``: the
    stem and stages 1..K). A bad value is an error naming the key."""
    v = "none" if value is None else str(value)
    if v == "none":
        return -1
    if v == "stem":
        return 0
    if v.startswith("layer") and v[5:].isdigit() and 1 <= int(v[5:]) < N_STAGES:
        return int(v[5:])
    raise ValueError(f"freeze: {value!r} is not none, stem or layer1..layer{N_STAGES - 1}")


def cosine(base: float, lo: float, t: float) -> float:
    """Cosine from ``base`` (t = 0) down to ``lo`` (t >= 1)."""
    return lo + 0.5 * (base - lo) * (1 + math.cos(math.pi * min(max(t, 0.0), 1.0)))


def lr_at(step: int, cfg: TrainConfig, minutes: float | None = None) -> float:
    """Learning rate at ``step``: linear warm-up, then a step or cosine schedule. With ``schedule_minutes`` in the
    config and ``minutes`` (of this run) given, the cosine runs over that time budget instead of ``steps``."""
    base, lo = cfg.lr, cfg.min_lr
    warm = cfg.warmup
    budget = float(cfg.schedule_minutes or 0)
    if budget and minutes is not None:  # a time budget (a lent GPU): warm-up by steps, cosine by minutes
        return cosine(base, lo, minutes / budget) * (min((step + 1) / warm, 1.0) if warm else 1.0)
    if step < warm:
        return base * (step + 1) / warm
    if cfg.schedule == "step":
        return base * cfg.step_gamma ** (step // cfg.step_every)
    total = max(cfg.steps - warm, 1)
    return cosine(base, lo, (step - warm) / total)


def machine() -> str:
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"{platform.processor() or 'cpu'}"
    return f"{platform.node()} {dev}, {os.cpu_count()} cpus, torch {torch.__version__}, threads {torch.get_num_threads()}"


class Trainer:
    def __init__(self, cfg: TrainConfig, out: Path, base: Path) -> None:
        self.cfg, self.out, self.base = cfg, out, base
        dev = cfg.device
        self.device = torch.device("cuda" if dev == "auto" and torch.cuda.is_available() else
                                   ("cpu" if dev == "auto" else dev))
        self.seed = cfg.seed
        self.morph = MorphableModel.load()
        self.whitening = Whitening.load("v1")
        self.teacher = Teacher(cfg.teacher.name, self.device, cfg.teacher.flip)
        dcfg = cfg.data
        aug = dict(dcfg.augment or {})
        if "scale" in aug:
            aug["scale"] = tuple(aug["scale"])
        self.mats = []
        if dcfg.mat:
            from model.data.gt_datasets import MatDataset

            self.mats = [MatDataset.from_folder(resolve(d, base)) for d in dcfg.mat]
        self.mat_fraction = dcfg.mat_fraction if self.mats else 0.0
        self.photos, self.maker = None, None
        self.workers = cfg.workers
        if dcfg.cache:  # teacher-fitted photo cache (model.data.cache): face profiling, worker processes
            from model.data.cache import PhotoCache
            from model.data.sampler import BatchMaker, CacheSampler, HumanConfig, ProfileConfig, TurnedConfig

            folders = dcfg.cache if isinstance(dcfg.cache, list) else [dcfg.cache]
            cache = PhotoCache.load_many([resolve(f, base) for f in folders])
            # human-fit rows (model.data.cache build-human): exact labels, weighted apart (data.human)
            sampler = CacheSampler(cache, self.morph, Augment(**aug), ProfileConfig(**(dcfg.profile or {})),
                                   dcfg.source_weights or {}, HumanConfig.from_dict(dcfg.human),
                                   cached_labels=dcfg.cached_labels, turned=TurnedConfig.from_dict(dcfg.turned))
            self.maker = BatchMaker(sampler, cfg.batch, self.seed, self.mats, self.mat_fraction)
            # compile the numba kernels here once: spawned workers then load them from numba's on-disk cache
            warm = np.random.default_rng(0)
            sampler.sample(0, warm, profiled=True)
            sampler.sample(0, warm, profiled=False)
            self.n_images = len(cache)
        else:
            if not dcfg.photos:
                raise ValueError("config key 'data.photos' (or 'data.cache') is needed: where the photos are")
            self.photos = PhotoDataset.from_folder(resolve(dcfg.photos, base), limit=dcfg.limit,
                                                   augment=Augment(**aug), weights=dcfg.source_weights or {})
            self.n_images = len(self.photos)
        self.loss = CombinedLoss(self.morph, self.whitening, LossWeights(**(cfg.loss or {})))
        self.net = init_student(self.seed)
        if cfg.init:  # start from a checkpoint's weights (fine-tuning; the optimizer starts fresh)
            self.net.load_state_dict(load_file(resolve(cfg.init, base)).net.state_dict())
        self.net = self.net.to(self.device)
        # BN-free training (``fold_bn``): the network trains with every BatchNorm folded into its conv (running
        # statistics frozen at the init's); checkpoints are written back in the plain layout (``unfold_bn``)
        self.fold = cfg.fold_bn
        self.template = copy.deepcopy(self.net).cpu() if self.fold else None
        if self.fold:
            self.net = fold_all_bn(self.net).to(self.device)
        # ``freeze``: the stem and the stages up to ``layerK`` run without gradients (and with frozen BatchNorm)
        self.frozen = frozen_stages(cfg.freeze)
        for module in self.frozen_modules():
            module.requires_grad_(False)
        amp = cfg.amp
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(
            amp, torch.bfloat16 if amp == "auto" and self.device.type == "cuda" else None)
        # NHWC activations: the default on CUDA; a config choice on the CPU (bench/bench_train_step.py measures it)
        self.channels_last = self.device.type == "cuda" if cfg.channels_last is None else cfg.channels_last
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        # the training forward, optionally compiled (inductor); the module itself is what is saved and evaluated
        self.forward = torch.compile(self.train_forward) if cfg.compile else self.train_forward
        self._batches = None
        self.trainable = [p for p in self.net.parameters() if p.requires_grad]  # not the frozen part
        self.opt = torch.optim.AdamW(self.trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.ema_decay = ema_decay(cfg.ema)
        self.ema = self.new_ema()
        self.step, self.samples, self.minutes, self.best_nme = 0, 0, 0.0, float("inf")
        self.last_eval: dict = {}
        self.eval_labels = []
        if cfg.eval_images:
            from model.groundtruth import find_labels

            try:
                self.eval_labels = find_labels(resolve(cfg.eval_images, base))
            except FileNotFoundError:
                self.eval_labels = []

    # -- network ----------------------------------------------------------------------------------------------
    def frozen_modules(self) -> list[torch.nn.Module]:
        """The modules ``freeze`` keeps fixed: the stem (conv1, bn1), then ``layerK`` + ``seLayerK`` up to K."""
        if self.frozen < 0:
            return []
        mods = [self.net.conv1, self.net.bn1]
        for i in range(1, self.frozen + 1):
            mods += [getattr(self.net, f"layer{i}"), getattr(self.net, f"seLayer{i}")]
        return mods

    def train_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The training forward: frozen stem and stages under ``no_grad`` (no activations kept for backward)."""
        if self.frozen < 0:
            return self.net(x)
        with torch.no_grad():
            h = self.net.stem(x)
            for i in range(1, self.frozen + 1):
                h = self.net.stage(i, h)
        for i in range(self.frozen + 1, N_STAGES + 1):
            h = self.net.stage(i, h)
        return self.net.regress(h)

    def new_ema(self) -> AveragedModel | None:
        """The moving average of the weights and buffers as they are now (None when ``ema`` is off)."""
        if not self.ema_decay:
            return None
        return AveragedModel(self.net, multi_avg_fn=get_ema_multi_avg_fn(self.ema_decay), use_buffers=True)

    def eval_module(self) -> torch.nn.Module:
        """What is evaluated and kept as best: the weight average when ``ema`` is on, else the trained net."""
        return self.ema.module if self.ema is not None else self.net

    def train_mode(self) -> None:
        """``net.train()``, with the frozen part in eval mode (its BatchNorm statistics stay fixed)."""
        self.net.train()
        for module in self.frozen_modules():
            module.eval()

    def plain_net(self, net: torch.nn.Module | None = None) -> torch.nn.Module:
        """``net`` (default: the trained one) in the checkpoint layout (unfolded when training folded)."""
        net = self.net if net is None else net
        return unfold_bn(net, self.template) if self.fold else net

    # -- data -------------------------------------------------------------------------------------------------
    def refine_rois(self, idx: list[int]) -> None:
        """Teacher landmarks on the whole-image crop -> the evaluation ROI rule for images seen the first time."""
        todo = sorted({i for i in idx if not self.photos.has_roi(i)})
        if not todo:
            return
        imgs = [self.photos.image(i) for i in todo]
        rois = np.stack([self.photos.base_roi(i, im) for i, im in zip(todo, imgs)])
        from model.data.photos import warp_crop

        crops = np.stack([warp_crop(im, r) for im, r in zip(imgs, rois)])
        real = self.teacher.real_params(crops).cpu()
        lm = crop_to_frame(self.morph.landmarks_crop(real), torch.from_numpy(rois), "v1").numpy()
        for i, r in zip(todo, roi_from_landmarks(lm)):
            self.photos.set_roi(i, r)

    def batches(self, start: int, stop: int):
        """Cache mode: an iterator of CPU batches (dicts of tensors) for steps [start, stop), built by ``workers``
        processes (``BatchMaker``: each step's batch depends only on (seed, step))."""
        from torch.utils.data import DataLoader

        from model.data.sampler import StepBatches, worker_init

        # spawned, not forked, workers: a fork after CUDA, OpenMP or OpenCV thread pools are up can deadlock the
        # child (it did, silently, on a lent H100); ``timeout`` turns any stall into an error instead of a hang
        kw = {"prefetch_factor": 4, "worker_init_fn": worker_init, "multiprocessing_context": "spawn",
              "persistent_workers": False, "timeout": 300} if self.workers else {}
        if self.workers:
            # spawned workers read these when they import numpy/torch/numba: one thread each, or 14 workers x 16
            # BLAS/OpenMP threads spin against each other on a 16-core machine (this process's pools are set up
            # already and keep their size)
            for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
                os.environ[var] = "1"
        return iter(DataLoader(StepBatches(self.maker, start, stop), batch_size=None, shuffle=False,
                               num_workers=self.workers, pin_memory=self.device.type == "cuda", **kw))

    def cache_batch(self, d: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """A ``BatchMaker`` batch on the device: the teacher labels the rows without a label (NaN), all whitened;
        the human landmarks (B, 68, 2) (NaN rows: none) ride along."""
        crops = d["crops"].to(self.device, non_blocking=True)
        labels = d["labels"].to(self.device, non_blocking=True)
        todo = torch.isnan(labels[:, 0])
        if bool(todo.any()):
            labels[todo] = self.teacher.real_params(crops[todo]).to(labels.dtype)
        x = (crops.permute(0, 3, 1, 2).float() - 127.5) / 128.0
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        lm = d.get("landmarks")
        lm = lm.to(self.device, non_blocking=True) if lm is not None and bool(torch.isfinite(lm).any()) else None
        return x, self.whitening.whiten(labels).float(), d["weights"].to(self.device, non_blocking=True), lm

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(crops normalised (B, 3, 120, 120), whitened targets (B, 62), weights (B,), human landmarks (B, 68, 2)
        crop px or None) for ``step``."""
        if self.maker is not None:
            if self._batches is None:
                return self.cache_batch({k: torch.from_numpy(v) for k, v in self.maker.make(step).items()})
            return self.cache_batch(next(self._batches))
        rng = np.random.default_rng([self.seed, step])
        b = self.cfg.batch
        n_mat = int(round(b * self.mat_fraction))
        idx = rng.integers(0, len(self.photos), b - n_mat).tolist()
        self.refine_rois(idx)
        crops, weights = [], []
        for i in idx:
            c, w = self.photos.sample(i, rng)
            crops.append(c)
            weights.append(w)
        crops_np = np.stack(crops)
        targets = self.teacher(crops_np) if idx else torch.zeros(0, 62, device=self.device)
        if n_mat:
            mc, mp, mw = [], [], []
            for _ in range(n_mat):
                ds = self.mats[int(rng.integers(len(self.mats)))]
                c, p, w = ds.sample(int(rng.integers(len(ds))), rng)
                mc.append(c), mp.append(p), mw.append(w)
            crops_np = np.concatenate([crops_np, np.stack(mc)])
            gt = self.whitening.whiten(torch.from_numpy(np.stack(mp)).to(self.device))
            targets = torch.cat([targets, gt])
            weights += mw
        x = torch.from_numpy(crops_np).to(self.device).permute(0, 3, 1, 2).float()
        x = (x - 127.5) / 128.0
        return x, targets.float(), torch.tensor(weights, dtype=torch.float32, device=self.device), None

    # -- state ------------------------------------------------------------------------------------------------
    def meta(self, nme: float | None) -> dict:
        d = self.cfg.data
        return {"backbone": "damdnet", "whitening": "v1", "convention": "v1", "parameter_space": "3ddfa-62 real",
                "data": {"photos": str(d.photos), "cache": str(d.cache), "images": self.n_images,
                         "profile": d.profile, "turned": d.turned, "mat": list(d.mat or []),
                         "human": d.human,
                         "teacher": self.teacher.name, "teacher_flip": self.teacher.flip},
                "steps": self.step, "samples_seen": self.samples, "minutes": round(self.minutes, 2),
                "machine": machine(), "nme_eval": nme, "nme_eval_bins": self.last_eval.get("nme_bins"),
                "pose_mae_eval": self.last_eval.get("pose_mae"), "eval_images": str(self.cfg.eval_images),
                "seed": self.seed, "init": str(self.cfg.init or "random (no ImageNet), zero head"),
                "ema": self.ema_decay or None}

    def save(self, nme: float | None = None) -> None:
        save_checkpoint(self.out / "last.pth", self.plain_net(), "damdnet", self.whitening, "v1",
                        meta=self.meta(nme))
        tmp = self.out / ".last.optim.pth.part"
        torch.save({"optimizer": self.opt.state_dict(), "layout": self.layout(), "step": self.step,
                    "samples": self.samples,
                    "minutes": self.minutes, "best_nme": self.best_nme}, tmp)
        os.replace(tmp, self.out / "last.optim.pth")
        if self.ema is not None:
            tmp = self.out / ".last.ema.pth.part"
            torch.save(self.ema.state_dict(), tmp)
            os.replace(tmp, self.out / "last.ema.pth")

    def save_best(self, nme: float) -> None:
        save_checkpoint(self.out / "best.pth", self.plain_net(self.eval_module()), "damdnet", self.whitening, "v1",
                        meta=self.meta(nme))

    def layout(self) -> dict:
        """What the optimizer's parameter list depends on."""
        return {"fold_bn": self.fold, "freeze": self.frozen}

    def resume(self) -> bool:
        ck, op = self.out / "last.pth", self.out / "last.optim.pth"
        if not (ck.is_file() and op.is_file()):
            return False
        loaded = load_file(ck)
        if self.fold:
            self.template.load_state_dict(loaded.net.state_dict())
            self.net.load_state_dict(fold_all_bn(self.template).to(self.device).state_dict())
        else:
            self.net.load_state_dict(loaded.net.state_dict())
        st = torch.load(op, map_location=self.device, weights_only=True)
        if st.get("layout", {"fold_bn": False, "freeze": -1}) == self.layout():
            self.opt.load_state_dict(st["optimizer"])
        else:  # the optimizer's parameters differ (fold_bn / freeze changed): its state cannot be carried over
            print(f"resume: the optimizer state was saved for {st.get('layout')}, this run is {self.layout()}: "
                  "the weights resume, the optimizer starts fresh", file=sys.stderr)
        self.step, self.samples = int(st["step"]), int(st["samples"])
        self.minutes, self.best_nme = float(st["minutes"]), float(st.get("best_nme", float("inf")))
        if self.ema is not None:  # the average resumes; a run saved without one starts it at the resumed weights
            self.ema = self.new_ema()
            if (self.out / "last.ema.pth").is_file():
                self.ema.load_state_dict(torch.load(self.out / "last.ema.pth", map_location=self.device,
                                                    weights_only=True))
        return True

    def evaluate(self, net: torch.nn.Module | None = None) -> float | None:
        """NME (%) of ``net`` (default: ``eval_module()``) on the evaluation images: the mean of the yaw bins (the
        selection metric; with the validation set's equal bins it is also the all-image mean). The bins and the pose
        MAE go to ``self.last_eval``."""
        if not self.eval_labels:
            return None
        from model.aligner import Aligner
        from model.evaluate import evaluate

        net = copy.deepcopy(self.eval_module() if net is None else net).eval()  # folded or not: the same function
        al = Aligner(LoadedModel(net, "damdnet", self.whitening, "v1", "training"), device=self.device,
                     fast_path="none", confidence=False)
        s = evaluate(al, self.eval_labels).summary()
        pm = s.get("pose_mae")
        self.last_eval = {"nme_bins": "/".join(f"{b['nme']:.3f}" if b["nme"] is not None else "-" for b in s["bins"]),
                          "pose_mae": "" if not pm else f"{pm['yaw']:.2f}/{pm['pitch']:.2f}/{pm['roll']:.2f}"}
        return float(s["nme_mean_of_bins"])

    def log(self, row: dict) -> None:
        path = self.out / "log.csv"
        new = not path.is_file()
        fields = LOG_FIELDS
        if not new:  # a resumed run keeps its log's columns (one written by older code has fewer)
            with open(path, newline="") as f:
                fields = next(csv.reader(f), None) or LOG_FIELDS
        with open(path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)

    # -- loop -------------------------------------------------------------------------------------------------
    def run(self, max_steps: int | None = None, minutes: float | None = None, progress: bool = True) -> None:
        from tqdm import tqdm

        self.out.mkdir(parents=True, exist_ok=True)
        total = self.cfg.steps if max_steps is None else min(self.cfg.steps, self.step + max_steps)
        t0, m0 = time.monotonic(), self.minutes
        eval_every, ckpt_every = self.cfg.eval_every, self.cfg.ckpt_every
        bar = tqdm(total=total, initial=self.step, disable=not progress, desc="train", dynamic_ncols=True)
        if self.step == 0:
            nme = self.evaluate()
            self.log({"step": 0, "samples": 0, "minutes": 0.0, "nme": "" if nme is None else f"{nme:.4f}",
                      **self.last_eval})
        self.train_mode()
        if self.maker is not None and self.workers and self.step < total:
            t_data = time.monotonic()
            self._batches = self.batches(self.step, total)
            first = next(self._batches)
            print(f"data: {self.workers} spawned workers, first batch after {time.monotonic() - t_data:.1f} s",
                  file=sys.stderr, flush=True)
            self._batches = itertools.chain([first], self._batches)
        while self.step < total:
            if minutes is not None and (time.monotonic() - t0) / 60 >= minutes:
                break
            lr = lr_at(self.step, self.cfg, self.minutes)  # the run's minutes: a resumed cosine goes on
            for g in self.opt.param_groups:
                g["lr"] = lr
            x, target, w, lm = self.batch(self.step)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                pred = self.forward(x)
            loss, parts = self.loss(pred.float(), target, w, lm)
            loss_value = float(loss.detach())
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.trainable, 10.0)
            self.opt.step()
            if self.ema is not None:
                self.ema.update_parameters(self.net)
            self.step += 1
            self.samples += x.shape[0]
            self.minutes = m0 + (time.monotonic() - t0) / 60
            row = {"step": self.step, "samples": self.samples, "loss": f"{loss_value:.5f}", "lr": f"{lr:.6f}",
                   "minutes": f"{self.minutes:.3f}", **{k: f"{v:.5f}" for k, v in parts.items()}}
            nme = None
            if eval_every and self.step % eval_every == 0:
                raw = self.evaluate(self.net) if self.ema is not None else None  # what the average adds
                nme = self.evaluate()
                self.train_mode()
                if nme is not None:
                    row["nme"] = f"{nme:.4f}"
                    row.update(self.last_eval)
                    if raw is not None:
                        row["nme_raw"] = f"{raw:.4f}"
                    if nme < self.best_nme:
                        self.best_nme = nme
                        self.save_best(nme)
            self.log(row)
            if nme is not None and not progress:
                print(f"step {self.step} samples {self.samples} loss {loss_value:.4f} nme {nme:.3f} "
                      f"bins {self.last_eval.get('nme_bins')} pose {self.last_eval.get('pose_mae')} "
                      + (f"raw {row['nme_raw']} " if "nme_raw" in row else "") + f"minutes {self.minutes:.2f}",
                      flush=True)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}", **({"nme": f"{nme:.2f}"} if nme is not None else {}))
            if (ckpt_every and self.step % ckpt_every == 0) or nme is not None:
                self.save(nme)
        bar.close()
        self._batches = None
        nme = self.evaluate()
        if nme is not None:
            self.log({"step": self.step, "samples": self.samples, "minutes": f"{self.minutes:.3f}",
                      "nme": f"{nme:.4f}", **self.last_eval})
            if nme < self.best_nme:
                self.best_nme = nme
                self.save_best(nme)
        self.save(nme)


def plot_curve(csv_path: str | os.PathLike, png: str | os.PathLike, reference: float | None = None) -> None:
    """Loss (per step, smoothed) and evaluation NME against samples seen, from ``log.csv``; ``reference``: the
    teacher's NME, drawn as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(open(csv_path)))
    ls = [(int(r["samples"]), float(r["loss"])) for r in rows if r.get("loss")]
    ns = [(int(r["samples"]), float(r["nme"])) for r in rows if r.get("nme")]
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    if ls:
        s, v = np.array(ls).T
        k = max(1, min(25, len(v) // 10))
        sm = np.convolve(v, np.ones(k) / k, mode="valid")
        ax[0].plot(s, v, alpha=0.3, lw=0.6, label="loss")
        ax[0].plot(s[k - 1:], sm, lw=1.5, label=f"mean of {k}")
        ax[0].set_yscale("log")
    ax[0].set_xlabel("samples seen"), ax[0].set_ylabel("training loss"), ax[0].legend(), ax[0].grid(alpha=0.3)
    if ns:
        s, v = np.array(ns).T
        ax[1].plot(s, v, "o-", label="student")
    if reference is not None:
        ax[1].axhline(reference, color="k", ls="--", lw=1, label=f"teacher {reference:.2f}")
    if ns or reference is not None:
        ax[1].legend()
    ax[1].set_xlabel("samples seen"), ax[1].set_ylabel("NME % (validation set, mean of bins)"), ax[1].grid(alpha=0.3)
    fig.suptitle("DAMDNet distillation from 3DDFA_V2 mb05")
    fig.tight_layout()
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.train", description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/train.yaml")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pth and OUT/last.optim.pth")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many more steps")
    p.add_argument("--minutes", type=float, default=None, help="stop after this many minutes of this run")
    p.add_argument("--out", default=None, help="output folder (default: the config's out)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (dotted, YAML value), e.g. --set data.human.fraction=0; repeatable")
    p.add_argument("--plot", default=None, help="plot this log.csv to --png and exit")
    p.add_argument("--png", default="bench/train_curve.png")
    p.add_argument("--reference", type=float, default=None, help="teacher NME to draw on the plot")
    a = p.parse_args(argv)
    if a.plot:
        plot_curve(a.plot, a.png, a.reference)
        return 0
    cfg_path = Path(a.config)
    try:
        with open(cfg_path) as f:
            raw = yaml.safe_load(f)
        if not isinstance(raw, dict):
            raise ValueError(f"{cfg_path}: not a mapping")
    except (OSError, ValueError, yaml.YAMLError) as exc:
        print(f"error: cannot read config {cfg_path}: {exc}", file=sys.stderr)
        return 2
    try:
        cfg = train_config(raw, a.set)
    except (ValueError, yaml.YAMLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    base = Path.cwd()
    torch.set_num_threads(int(cfg.threads or torch.get_num_threads()))
    out = resolve(a.out or cfg.out, base)
    try:
        tr = Trainer(cfg, out, base)
    except (FileNotFoundError, ValueError, TypeError) as exc:  # a missing cache, a bad data.human or loss key: one line
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if a.resume:
        print(f"resumed at step {tr.step}" if tr.resume() else "nothing to resume: starting fresh", file=sys.stderr)
    tr.run(a.max_steps, a.minutes, progress=not a.no_progress)
    print(f"step {tr.step}, samples {tr.samples}, {tr.minutes:.1f} min, best NME {tr.best_nme:.3f}; "
          f"checkpoint {out / 'last.pth'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
