"""The fast CPU training settings (issue 12, item 5): BN-free training (``fold_bn``), frozen early stages
(``freeze``), cached teacher labels; checkpoints stay in the plain layout and resume."""
from __future__ import annotations

import pytest
import torch
import yaml

from model.bn_fold import bn_pairs, fold_all_bn, unfold_bn
from model.checkpoint import load_model
from model.damdnet_net import DAMDNet
from model.train import frozen_stages, main

torch.set_num_threads(1)


def _random_bn(net: torch.nn.Module) -> torch.nn.Module:
    g = torch.Generator().manual_seed(3)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return net.eval()


def test_every_batchnorm_of_damdnet_is_paired():
    net = DAMDNet()
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    pairs = bn_pairs(net)
    assert len(pairs) == n_bn == 76
    assert ("conv1", "bn1") in pairs and ("layer1.0.downsample.0", "layer1.0.downsample.1") in pairs


def test_fold_then_unfold_is_the_same_function_after_training_the_folded_copy():
    torch.manual_seed(0)
    net = _random_bn(DAMDNet())
    x = torch.randn(2, 3, 120, 120)
    folded = fold_all_bn(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        assert torch.allclose(folded(x), net(x), atol=1e-4)
        for p in folded.parameters():  # a "trained" folded net: every weight and bias moved
            p.add_(0.02 * torch.randn_like(p))
        plain = unfold_bn(folded, net).eval()
        assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules()) == 76
        assert set(plain.state_dict()) == set(net.state_dict())  # the checkpoint layout, loadable strictly
        assert torch.allclose(plain(x), folded(x), atol=1e-4)
        assert not torch.allclose(plain(x), net(x), atol=1e-2)


def test_freeze_names():
    assert frozen_stages("none") == -1 and frozen_stages(None) == -1
    assert frozen_stages("stem") == 0 and frozen_stages("layer2") == 2
    for bad in ("layer0", "layer7", "conv1", 3):
        with pytest.raises(ValueError, match="freeze"):
            frozen_stages(bad)


@pytest.fixture(scope="module")
def cache(assets_dir, tmp_path_factory):
    from model.data.cache import build

    faces = assets_dir / "faces" / "utkface_crop_part1"
    if not faces.is_dir():
        pytest.skip("no faces")
    out = tmp_path_factory.mktemp("fastcache") / "cache"
    build(faces, out, limit=6, progress=False)
    return out


def _config(repo_root, tmp_path, cache, **extra) -> str:
    from dataclasses import replace

    from model.train_config import load_train_config

    cfg = replace(load_train_config(repo_root / "configs" / "train_cpu.yaml"),
                  **{"device": "cpu", "threads": 1, "workers": 0, "batch": 4, "warmup": 1, "eval_every": 0,
                     "ckpt_every": 0, "eval_images": None, "schedule_minutes": None, "steps": 20,
                     "init": str(repo_root / "model" / "weights" / "damdnet.pth"), **extra})
    cfg.data.cache = str(cache)
    cfg.data.cached_labels = True
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return str(path)


def test_folded_frozen_run_writes_plain_checkpoints_and_resumes(cache, tmp_path, repo_root, capsys):
    from model.train import Trainer
    from model.train_config import load_train_config

    path = _config(repo_root, tmp_path, cache, fold_bn=True, freeze="layer1", channels_last=True)
    out = tmp_path / "run"
    assert main(["--config", path, "--out", str(out), "--max-steps", "2", "--no-progress"]) == 0
    init = load_model(str(repo_root / "model" / "weights" / "damdnet.pth")).net
    ck = load_model(str(out / "last.pth"))
    assert ck.meta["steps"] == 2
    sd, sd0 = ck.net.state_dict(), init.state_dict()
    assert set(sd) == set(sd0)
    # the frozen stem and stage 1 are the init's function; later stages and the head moved
    x = torch.randn(2, 3, 120, 120)
    with torch.no_grad():
        h0, h1 = init.eval().stage(1, init.stem(x)), ck.net.eval().stage(1, ck.net.stem(x))
        assert torch.allclose(h0, h1, atol=1e-4)
        assert not torch.equal(sd["conv9.weight"], sd0["conv9.weight"])
    # the trainer's folded net equals the written checkpoint, and resuming picks it up with its optimizer
    tr = Trainer(load_train_config(path), out, repo_root)
    assert tr.resume() and tr.step == 2
    with torch.no_grad():
        assert torch.allclose(tr.net.eval()(x), ck.net(x), atol=1e-4)
    assert "optimizer starts fresh" not in capsys.readouterr().err
    # a resume with another layout keeps the weights and says the optimizer starts fresh
    path2 = _config(repo_root, tmp_path, cache, fold_bn=False)
    assert main(["--config", path2, "--out", str(out), "--max-steps", "1", "--resume", "--no-progress"]) == 0
    assert "optimizer starts fresh" in capsys.readouterr().err
    assert load_model(str(out / "last.pth")).meta["steps"] == 3


def test_cached_labels_follow_the_crop(cache):
    """A plain sample's cached label is the cached fit itself when nothing moves the crop, and under shift, scale,
    rotation, flip, colour and occlusion it lands where the teacher's own label for that very crop does, within the
    teacher's spread (a slip in a transform gives 10-30% of the face size)."""
    import numpy as np

    from model.data.cache import PhotoCache
    from model.data.photos import Augment
    from model.data.sampler import CacheSampler, ProfileConfig
    from model.data.teacher import Teacher
    from model.morphable import MorphableModel

    morph = MorphableModel.load()
    c = PhotoCache.load(cache)
    lm = lambda p: morph.landmarks_crop(torch.as_tensor(np.asarray(p)[None]).float())[0].numpy()  # noqa: E731
    still = CacheSampler(c, morph, Augment.off(), ProfileConfig(fraction=0.0), cached_labels=True)
    for i in range(len(c)):
        out = still.sample_full(i, np.random.default_rng(i), profiled=False)
        assert np.abs(lm(out.label) - lm(c.params[i])).max() < 1e-3
    s = CacheSampler(c, morph, Augment(), ProfileConfig(fraction=0.0), cached_labels=True)
    teacher = Teacher("3ddfa-v2-mb05", "cpu", True)
    errs = []
    for k in range(12):
        out = s.sample_full(k % len(s), np.random.default_rng(k), profiled=False)
        assert out.label is not None and out.label.shape == (62,)
        a, b = lm(out.label), lm(teacher.real_params(out.crop[None]).cpu()[0])
        size = np.sqrt(np.ptp(a[:, 0]) * np.ptp(a[:, 1]))
        errs.append(float(np.linalg.norm((a - b)[:, :2], axis=1).mean() / size))
    assert np.median(errs) < 0.06, errs


def test_ema_decay_key():
    from model.train import ema_decay

    assert ema_decay(None) == 0.0 and ema_decay(0) == 0.0 and ema_decay(0.998) == pytest.approx(0.998)
    for bad in (1.0, -0.1, "fast"):
        with pytest.raises(ValueError, match="ema"):
            ema_decay(bad)


def test_ema_is_the_moving_average_of_the_trained_weights_and_resumes(cache, tmp_path, repo_root):
    """With decay d the average after steps 1, 2 is w1, then d * w1 + (1 - d) * w2 (BatchNorm statistics too); it is
    what best.pth holds, it is saved beside last.pth and a resumed trainer picks it up."""
    from model.train import Trainer
    from model.train_config import load_train_config

    path = _config(repo_root, tmp_path, cache, ema=0.75, freeze="layer2")
    out = tmp_path / "run"
    tr = Trainer(load_train_config(path), out, repo_root)
    tr.run(max_steps=1, progress=False)
    w1 = {k: v.clone() for k, v in tr.net.state_dict().items()}
    tr.run(max_steps=1, progress=False)
    w2 = tr.net.state_dict()
    avg = tr.ema.module.state_dict()
    moved = 0
    for k, v in w2.items():
        if not v.is_floating_point():
            continue
        assert torch.allclose(avg[k], 0.75 * w1[k] + 0.25 * v, atol=1e-6), k
        moved += int(not torch.equal(w1[k], v))
    assert moved > 10  # the trained part moved between the steps, so the average differs from both
    assert not torch.allclose(avg["conv9.weight"], w2["conv9.weight"])
    assert (out / "last.ema.pth").is_file()
    again = Trainer(load_train_config(path), out, repo_root)
    assert again.resume() and again.step == 2
    for k, v in again.ema.module.state_dict().items():
        assert torch.equal(v, avg[k]), k
    assert again.eval_module() is again.ema.module


def test_a_resumed_run_continues_its_cosine(cache, tmp_path, repo_root):
    """The time-budget cosine runs over the run's own minutes: a run resumed past its budget goes on at min_lr
    instead of restarting at lr."""
    import csv

    path = _config(repo_root, tmp_path, cache, schedule_minutes=1e-4, lr=1e-3, min_lr=1e-6, warmup=0)
    out = tmp_path / "run"
    assert main(["--config", path, "--out", str(out), "--max-steps", "2", "--no-progress"]) == 0
    assert main(["--config", path, "--out", str(out), "--max-steps", "2", "--resume", "--no-progress"]) == 0
    rows = [r for r in csv.DictReader(open(out / "log.csv")) if r["lr"]]
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[0]["lr"]) == pytest.approx(1e-3, rel=1e-3)  # minute 0 of the run
    assert float(rows[2]["lr"]) == pytest.approx(1e-6, rel=1e-3)  # resumed past the budget
