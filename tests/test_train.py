"""A tiny real training run: 3 steps on a handful of photos, checkpoint loads, resume continues the step count."""
from __future__ import annotations

import csv
from dataclasses import replace

import pytest
import torch
import yaml

from model.checkpoint import load_model
from model.train import init_student, lr_at, main, plot_curve
from model.train_config import TrainConfig, load_train_config

torch.set_num_threads(1)


def test_student_starts_at_the_mean():
    net = init_student(0).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 120, 120))
    assert torch.all(out == 0)


def test_lr_schedule():
    cfg = TrainConfig(lr=1.0, min_lr=0.0, warmup=10, steps=110, batch=1)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(10, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.5)
    assert lr_at(110, cfg) == pytest.approx(0.0, abs=1e-9)
    assert lr_at(25, replace(cfg, schedule="step", step_every=10, step_gamma=0.5)) == pytest.approx(0.25)
    timed = replace(cfg, schedule_minutes=10.0)  # cosine over minutes, warm-up still by steps
    assert lr_at(4, timed, 0.0) == pytest.approx(0.5)
    assert lr_at(60, timed, 5.0) == pytest.approx(0.5)
    assert lr_at(60, timed, 12.0) == pytest.approx(0.0, abs=1e-9)
    assert lr_at(60, timed) == lr_at(60, cfg)  # no minutes given: the step schedule


def test_three_steps_checkpoint_and_resume(assets_dir, tmp_path, repo_root):
    faces = assets_dir / "faces" / "deepface_tests"
    if not faces.is_dir():
        pytest.skip("no faces")
    cfg = replace(load_train_config(repo_root / "configs" / "train.yaml"), batch=4, steps=20, warmup=2, eval_every=0,
                  ckpt_every=0, eval_images=None)
    cfg.data.photos = str(faces)
    cfg.data.limit = 6
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    out = tmp_path / "run"
    assert main(["--config", str(path), "--out", str(out), "--max-steps", "3", "--no-progress"]) == 0
    loaded = load_model(str(out / "last.pth"))
    assert loaded.backbone == "damdnet" and loaded.convention == "v1" and loaded.whitening.name == "v1"
    assert loaded.meta["steps"] == 3 and loaded.meta["samples_seen"] == 12
    assert loaded.meta["data"]["teacher"] == "3ddfa-v2-mb05"
    assert (out / "last.optim.pth").is_file()
    assert main(["--config", str(path), "--out", str(out), "--max-steps", "2", "--resume", "--no-progress"]) == 0
    assert load_model(str(out / "last.pth")).meta["steps"] == 5
    rows = list(csv.DictReader(open(out / "log.csv")))
    steps = [int(r["step"]) for r in rows if r["loss"]]
    assert steps == [1, 2, 3, 4, 5]
    assert all(float(r["loss"]) > 0 for r in rows if r["loss"])
    plot_curve(out / "log.csv", tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 1000


def test_cache_mode_profiles_with_spawned_workers(assets_dir, tmp_path, repo_root):
    """configs/train_gpu.yaml's path on the CPU: photo cache, face profiling, one spawned worker, bf16 off."""
    from model.data.cache import build

    faces = assets_dir / "faces" / "utkface_crop_part1"
    if not faces.is_dir():
        pytest.skip("no faces")
    cache = tmp_path / "cache"
    build(faces, cache, limit=6, progress=False)
    cfg = replace(load_train_config(repo_root / "configs" / "train_gpu.yaml"), device="cpu", threads=1, workers=1,
                  batch=4, warmup=1, eval_every=0, ckpt_every=0, eval_images=None, schedule_minutes=None, steps=20,
                  init=str(repo_root / "model" / "weights" / "damdnet.pth"))
    cfg.data.cache = str(cache)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    out = tmp_path / "run"
    assert main(["--config", str(path), "--out", str(out), "--max-steps", "2", "--no-progress"]) == 0
    loaded = load_model(str(out / "last.pth"))
    assert loaded.meta["steps"] == 2 and loaded.meta["samples_seen"] == 8
    assert loaded.meta["data"]["images"] == 6 and loaded.meta["data"]["profile"]["fraction"] == 0.5
    assert loaded.meta["init"].endswith("damdnet.pth")
    rows = [r for r in csv.DictReader(open(out / "log.csv")) if r["loss"]]
    assert len(rows) == 2 and all(0 < float(r["loss"]) < 1e3 for r in rows)


def test_shipped_weights_load_or_say_how_to_train(assets_dir, repo_root):
    from model.checkpoint import CheckpointError, load_model

    path = repo_root / "model" / "weights" / "damdnet.pth"
    if not path.is_file():
        with pytest.raises(CheckpointError, match="model.train"):
            load_model("damdnet")
        return
    from model.aligner import Aligner

    a = Aligner.from_checkpoint("damdnet", device="cpu")
    assert a.backbone == "damdnet" and a.convention == "v1" and a.whitening.name == "v1"
    assert a.meta["steps"] > 0 and a.meta["samples_seen"] > 0 and ("nme_eval" in a.meta or "nme_aflw2000" in a.meta)
