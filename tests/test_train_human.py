"""Human-fit rows in the photo cache: format round trip, exact labels and human landmarks through every transform,
the batch mix, and a short training run with configs/train_human.yaml."""
from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest
import torch
import yaml

from model.data.cache import CONTEXT, HUMAN_LABEL, OFFSET, TEACHER_LABEL, PhotoCache, build, build_human
from model.data.photos import Augment
from model.data.profile import apply_affine
from model.data.sampler import BatchMaker, CacheSampler, HumanConfig, ProfileConfig
from model.morphable import MorphableModel, Whitening, angles_to_matrix, params_from_pose

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def morph(assets_dir):
    return MorphableModel.load()


def _params(yaw: float = 15.0) -> np.ndarray:
    w = Whitening.load("v1")
    r = angles_to_matrix(np.radians([yaw]), np.radians([4.0]), np.radians([-3.0]))
    coef = w.mean[12:] + np.random.default_rng(3).normal(0, 0.5, 50) * w.std[12:]
    return params_from_pose(np.array([4.0e-4]), r, np.array([[60.0, 60.0, -70.0]]), coef[None, :40],
                            coef[None, 40:])[0]


def _synthetic_cache(morph, rows: tuple[str, ...] = (HUMAN_LABEL,)) -> tuple[PhotoCache, np.ndarray]:
    """Rows sharing one context image: dark texture with a one-pixel white dot at each of the 68 landmarks of the
    row's params; human rows carry those landmarks as their labels."""
    p = _params()
    f = np.diag([1.0, -1.0, 1.0]) @ p[:12].reshape(3, 4)
    f[1, 3] += 121 + OFFSET
    f[0, 3] += OFFSET
    lm = apply_affine(f, morph.sparse.shape_model(p[None])[0])[:, :2]
    img = np.random.default_rng(0).integers(0, 40, (CONTEXT, CONTEXT, 3)).astype(np.uint8)
    for x, y in np.round(lm).astype(int):
        img[y, x] = 255
    enc = cv2.imencode(".png", img)[1].reshape(-1)
    n = len(rows)
    human = np.array([r == HUMAN_LABEL for r in rows])
    landmarks = np.where(human[:, None, None], np.round(lm)[None], np.nan).astype(np.float32)
    cache = PhotoCache(np.tile(enc, n), np.arange(n + 1) * enc.size, np.tile(p, (n, 1)), np.zeros(n, bool),
                       np.full(n, 0.01, np.float32), np.tile([0, 0, CONTEXT - 1, CONTEXT - 1], (n, 1)).astype(np.float32),
                       np.array(["src"] * n), np.array([f"f{i}" for i in range(n)]), "t", np.array(rows), landmarks,
                       np.where(human, 1.0, np.nan).astype(np.float32))
    return cache, np.round(lm)


def _dot_centroids(crop: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Intensity-weighted centroid (K, 2) of the bright pixels in a 5x5 window around each point."""
    g = crop[..., 1].astype(np.float64)
    out = np.full((len(pts), 2), np.nan)
    for k, (x, y) in enumerate(pts):
        xi, yi = int(round(x)), int(round(y))
        if not (2 <= xi < 118 and 2 <= yi < 118):
            continue
        win = np.clip(g[yi - 2:yi + 3, xi - 2:xi + 3] - 60, 0, None)
        if win.sum() > 0:
            yy, xx = np.mgrid[-2:3, -2:3]
            out[k] = xi + (win * xx).sum() / win.sum(), yi + (win * yy).sum() / win.sum()
    return out


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_plain_human_sample_carries_label_and_landmarks_with_the_image(morph, flip):
    cache, lm_ctx = _synthetic_cache(morph)
    aug = Augment(shift=0.06, scale=(0.9, 1.1), rotate=20.0, flip=flip, colour=0, grey=0, blur=0, noise=0, occlude=0)
    s = CacheSampler(cache, morph, aug, ProfileConfig(ring=0), {"src": 0.5}, HumanConfig(weight=3.0))
    d = np.linalg.norm(lm_ctx[:, None] - lm_ctx[None], axis=-1) + np.eye(68) * 99
    lonely = d.min(1) >= 4.5  # dots with no other dot in their window
    assert lonely.sum() >= 18
    from model.data.teacher import FLIP_68

    for seed in range(4):
        out = s.sample_full(0, np.random.default_rng(seed), profiled=False)
        assert out.label is not None and out.landmarks is not None and out.weight == pytest.approx(1.5)
        # the landmarks sit on the dots of this (jittered, rotated, maybe flipped) crop
        pts = out.landmarks
        keep = lonely[FLIP_68] if flip else lonely
        got = _dot_centroids(out.crop, pts)
        ok = keep & np.isfinite(got).all(1)
        assert ok.sum() >= 12
        assert np.abs(got[ok] - pts[ok]).max() < 0.6
        # and the exact label decodes onto them (the mirror of the params is good to about a pixel)
        dec = morph.landmarks_crop(out.label[None])[0]
        dec = np.stack([dec[:, 0], 121 - dec[:, 1]], 1)
        err = np.linalg.norm(dec - pts, axis=1)
        assert err.mean() < (0.9 if flip else 0.7) and err.max() < 2.5  # landmarks were rounded to pixels


def test_profiled_human_sample_is_exact_without_landmarks(morph):
    cache, _ = _synthetic_cache(morph)
    s = CacheSampler(cache, morph, Augment(), ProfileConfig(ring=0), {}, HumanConfig())
    out = s.sample_full(0, np.random.default_rng(1), profiled=True)
    assert out.label is not None and out.landmarks is None and out.weight == pytest.approx(2.0)


def test_batch_mix_human_share_and_nan_rows(morph):
    cache, _ = _synthetic_cache(morph, (TEACHER_LABEL, TEACHER_LABEL, HUMAN_LABEL, TEACHER_LABEL))
    h = HumanConfig(weight=2.0, fraction=0.5, profile_fraction=0.0)
    s = CacheSampler(cache, morph, Augment(), ProfileConfig(fraction=0.0, ring=0), {}, h)
    assert s.human_rows.tolist() == [2] and 2 not in s.plain_pool.tolist()
    b = BatchMaker(s, 8, 0).make(3)
    assert set(b) == {"crops", "labels", "weights", "landmarks"}
    assert np.isfinite(b["labels"][:4]).all() and np.isnan(b["labels"][4:]).all()  # teacher rows: NaN
    assert np.isfinite(b["landmarks"][:4]).all() and np.isnan(b["landmarks"][4:]).all()
    assert np.allclose(b["weights"], [2, 2, 2, 2, 1, 1, 1, 1])
    # profiled human rows keep the exact label and drop the landmarks
    s2 = CacheSampler(cache, morph, Augment(), ProfileConfig(fraction=0.0, ring=0), {},
                      HumanConfig(fraction=0.5, profile_fraction=1.0))
    b2 = BatchMaker(s2, 8, 0).make(3)
    assert np.isfinite(b2["labels"][:4]).all() and np.isnan(b2["landmarks"]).all()
    # a bad fit is left out; with no usable human rows the batch is all teacher rows
    cache.fit_nme[:] = 9.0
    s3 = CacheSampler(cache, morph, Augment(), ProfileConfig(fraction=0.0, ring=0), {}, HumanConfig(fraction=0.5))
    assert len(s3.human_rows) == 0 and np.isnan(BatchMaker(s3, 4, 0).make(0)["labels"]).all()


def test_human_config_names_a_bad_key():
    with pytest.raises(ValueError, match="data.human.wieght"):
        HumanConfig.from_dict({"wieght": 2.0})


@pytest.fixture(scope="module")
def caches(assets_dir, tmp_path_factory):
    faces, human = assets_dir / "faces" / "utkface_crop_part1", assets_dir / "faces300w"
    if not (faces.is_dir() and human.is_dir()):
        pytest.skip("no faces or faces300w folder")
    root = tmp_path_factory.mktemp("caches")
    assert build(faces, root / "teacher", limit=4, progress=False) == 4
    n, _ = build_human(human / "afw", root / "human", limit=3, progress=False)
    assert n == 3
    return root / "teacher", root / "human"


def test_cache_round_trip_and_join(caches, morph):
    teacher, human = caches
    t, h = PhotoCache.load(teacher), PhotoCache.load(human)
    assert not t.human.any() and np.isnan(t.landmarks).all() and h.human.all()
    assert np.isfinite(h.landmarks).all() and h.landmarks.shape == (3, 68, 2)
    assert h.landmarks.min() > 0 and h.landmarks.max() < CONTEXT  # in context pixels
    both = PhotoCache.load_many([teacher, human])
    assert len(both) == 7 and both.human.tolist() == [False] * 4 + [True] * 3
    for i in (0, 5):
        src, j = (t, i) if i < 4 else (h, i - 4)
        assert np.array_equal(both.image(i), src.image(j))
    assert np.array_equal(both.params[4:], h.params) and np.array_equal(both.landmarks[4:], h.landmarks)
    # an index written before human rows existed (no label/landmarks/fit_nme) loads as all-teacher rows
    z = dict(np.load(teacher / "index.npz"))
    for k in ("label", "landmarks", "fit_nme"):
        z.pop(k, None)
    np.savez_compressed(teacher / "index.npz", **z)
    old = PhotoCache.load(teacher)
    assert (old.label == TEACHER_LABEL).all() and np.isnan(old.landmarks).all() and len(old) == 4


def test_build_human_refuses_evaluation_sets(assets_dir, tmp_path):
    from model.data.cache import main

    val = assets_dir / "XgTu" / "2DASL" / "test_codes" / "test.data" / "AFLW-2000-3D"
    if not val.is_dir():
        pytest.skip("no validation set")
    assert main(["build-human", "--pts", str(val), "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x" / "index.npz").exists()


def test_human_training_config_runs(caches, tmp_path, repo_root):
    """configs/train_human.yaml's path: teacher + human caches, the human 2D loss logged (in-process batches: the
    spawned-worker path is test_train.py's)."""
    from model.checkpoint import load_model
    from model.train import main
    from model.train_config import load_train_config

    teacher, human = caches
    cfg = load_train_config(repo_root / "configs" / "train_human.yaml",
                            ["threads=1", "workers=0", "batch=4", "warmup=1", "eval_every=0", "ckpt_every=0",
                             "eval_images=null", "steps=20", "data.human.fraction=0.5",
                             f"init={repo_root / 'model' / 'weights' / 'damdnet.pth'}"])
    cfg.data.cache = [str(teacher), str(human)]
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    out = tmp_path / "run"
    assert main(["--config", str(path), "--out", str(out), "--max-steps", "2", "--no-progress"]) == 0
    loaded = load_model(str(out / "last.pth"))
    assert loaded.meta["steps"] == 2 and loaded.meta["data"]["images"] == 7
    assert loaded.meta["data"]["human"]["weight"] == 2.0
    rows = [r for r in csv.DictReader(open(out / "log.csv")) if r["loss"]]
    assert len(rows) == 2 and all(0 < float(r["loss"]) < 1e3 for r in rows)
    assert any(r["human2d"] for r in rows)  # some plain human rows had their landmarks


def test_trainer_keeps_exact_human_labels_and_passes_landmarks(caches, repo_root):
    """The teacher labels only the NaN rows: human rows (plain and profiled) reach the loss with their own labels."""
    from pathlib import Path

    from model.train import Trainer
    from model.train_config import load_train_config

    teacher, human = caches
    cfg = load_train_config(repo_root / "configs" / "train_human.yaml",
                            ["workers=0", "batch=6", "eval_images=null", "init=null", "data.human.fraction=0.5"])
    cfg.data.cache = [str(teacher), str(human)]
    tr = Trainer(cfg, Path("/nonexistent-out"), repo_root)
    raw = tr.maker.make(0)
    x, target, w, lm = tr.cache_batch({k: torch.from_numpy(v) for k, v in raw.items()})
    assert x.shape == (6, 3, 120, 120) and torch.isfinite(target).all()
    assert torch.allclose(target[:3], tr.whitening.whiten(torch.from_numpy(raw["labels"][:3])), atol=1e-5)
    assert torch.allclose(w[:3], torch.full((3,), 2.0)) and torch.allclose(w[3:], torch.ones(3))
    has = torch.isfinite(torch.from_numpy(raw["landmarks"])).all(-1).all(-1)
    assert (lm is None) == (not bool(has.any()))


def test_set_overrides_name_bad_keys():
    from model.train_config import train_config

    raw = {"lr": 1.0, "batch": 4, "steps": 10, "data": {"human": {"weight": 2.0}, "cache": "x"},
           "loss": {"wpdc": 1.0}}
    cfg = train_config(raw, ["lr=0.5", "data.human.fraction=0", "loss.human2d=0.2", "data.cache=[a, b]",
                             "channels_last=true", "teacher.flip=false"])  # the last two: keys the file leaves out
    assert cfg.lr == 0.5 and cfg.data.human == {"weight": 2.0, "fraction": 0}
    assert cfg.loss == {"wpdc": 1.0, "human2d": 0.2} and cfg.data.cache == ["a", "b"]
    assert cfg.channels_last is True and cfg.teacher.flip is False and cfg.teacher.name == "3ddfa-v2-mb05"
    assert train_config(raw).lr == 1.0  # the file's mapping is not changed
    for bad, msg in (("lrr=1", "lrr: no such key"), ("data.cach.x=1", "data.cach is not a mapping"), ("lr", "KEY=VALUE"),
                     ("lr=fast", "'lr': expected a number"), ("batch=2.5", "'batch': expected an integer"),
                     ("fold_bn=3", "'fold_bn': expected true or false")):
        with pytest.raises(ValueError, match=msg):
            train_config(raw, [bad])
    with pytest.raises(ValueError, match="unknown config key 'data.cach' \\(did you mean 'data.cache'\\?\\)"):
        train_config({**raw, "data": {"cach": "x"}})
    with pytest.raises(ValueError, match="'steps' is missing"):
        train_config({"lr": 1.0, "batch": 4})


def test_ablation_helper_commands_and_table(tmp_path, repo_root):
    import importlib.util

    spec = importlib.util.spec_from_file_location("ablation_human", repo_root / "bench" / "ablation_human.py")
    ab = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ab)
    cmd = ab.command("teacher-only", 40, tmp_path, "configs/train_human.yaml")
    assert cmd[:3] == ["nice", "-n", "19"] and "data.human.fraction=0" in cmd and "steps=40" in cmd
    # every variant's overrides are valid for the config
    from model.train_config import load_train_config

    for name, sets in ab.VARIANTS.items():
        load_train_config(repo_root / "configs" / "train_human.yaml", sets)
    run = tmp_path / "full"
    run.mkdir()
    (run / "log.csv").write_text("step,samples,loss,nme,nme_bins,pose_mae\n40,1280,0.5,,,\n40,1280,,4.1234,"
                                 "3.0/4.0/5.3,3.1/4.2/2.9\n")
    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n\n## Other\n\nkeep me\n")
    assert ab.main(["--collect", "--root", str(tmp_path), "--results", str(results), "--steps", "40"]) == 0
    assert ab.main(["--collect", "--root", str(tmp_path), "--results", str(results), "--steps", "40"]) == 0
    text = results.read_text()
    assert text.count(ab.SECTION) == 1 and "keep me" in text
    assert "| full | - | 40 | 1280 | 4.123 | 3.0/4.0/5.3 | 3.1/4.2/2.9 |" in text and "| teacher-only |" in text
    assert ab.main(["--variants", "nope", "--dry-run"]) == 2


def test_turned_share_draws_real_turned_photos(morph):
    """``data.turned``: about ``fraction`` of the plain teacher rows come from the photos at |yaw| >= min_yaw (still
    teacher-labelled); human rows never enter that pool; a bad key or value is one error naming it."""
    from model.data.sampler import TurnedConfig

    rows = (TEACHER_LABEL,) * 10 + (HUMAN_LABEL,)
    cache, _ = _synthetic_cache(morph, rows)
    for k in (1, 4, 10):  # rows 1 and 4 (teacher) and 10 (human) turned to 40 degrees, the rest at 15
        cache.params[k] = _params(40.0)
    s = CacheSampler(cache, morph, Augment.off(), ProfileConfig(fraction=0.0, ring=0), {},
                     HumanConfig(fraction=0.0), turned=TurnedConfig(0.5, 30.0))
    assert sorted(s.turned_pool.tolist()) == [1, 4]
    drawn = []
    real = s.sample_full
    s.sample_full = lambda i, rng, profiled=None: drawn.append(i) or real(i, rng, profiled)
    for step in range(40):
        b = BatchMaker(s, 8, seed=1).make(step)
        assert np.isnan(b["labels"][:, 0]).all()  # plain teacher rows: the teacher labels them
    share = np.isin(drawn, [1, 4]).mean()
    assert 0.52 < share < 0.68, share  # expected 0.6: half drawn from the pool, 2/10 of the other half
    off = CacheSampler(cache, morph, Augment.off(), ProfileConfig(fraction=0.0, ring=0), {}, HumanConfig(fraction=0.0))
    assert off.turned.fraction == 0.0
    # a turned fit that disagrees with its mirror (a failed fit, not a turned head) stays out of the pool
    cache.flip_gap[4] = 0.2
    s = CacheSampler(cache, morph, Augment.off(), ProfileConfig(fraction=0.0, ring=0), {},
                     HumanConfig(fraction=0.0), turned=TurnedConfig(0.5, 30.0))
    assert s.turned_pool.tolist() == [1]
    s = CacheSampler(cache, morph, Augment.off(), ProfileConfig(fraction=0.0, ring=0), {},
                     HumanConfig(fraction=0.0), turned=TurnedConfig(0.5, 30.0, max_flip_gap=None))
    assert sorted(s.turned_pool.tolist()) == [1, 4]
    with pytest.raises(ValueError, match="data.turned.share"):
        TurnedConfig.from_dict({"share": 0.5})
    with pytest.raises(ValueError, match="data.turned.fraction"):
        TurnedConfig.from_dict({"fraction": 1.5})
