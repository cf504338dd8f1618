"""The typed run description: configs/default.yaml, a user file, flags and API keywords load onto one
``RunConfig`` tree, validated once; the defaults live in the YAML only (the typed configs of the layers below keep
none for run settings); the training config is a typed tree too."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from stream.cli import parse
from stream.config import DEFAULT_PATH, ConfigError, RunConfig, config_keys, flatten, load_config


def test_the_tree_is_default_yaml():
    cfg = load_config()
    assert isinstance(cfg, RunConfig)
    assert cfg.to_dict() == yaml.safe_load(DEFAULT_PATH.read_text())  # every key, every default, nothing else
    assert [k for k, _ in flatten(cfg.to_dict())] == [k for k, _ in config_keys()]
    assert (cfg.kalman.pose_gate, cfg.tracker.min_hits, cfg.batch.inputs, cfg.serve.port) == (3.0, 3, [], 8080)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.detect_every = 3  # type: ignore[misc]


def test_each_field_has_its_type():
    """Numbers come out as the field's type whatever the source gave (text from a flag, an int for a float)."""
    cfg = load_config(overrides={"kalman.pose_gate": "4", "detect_every": 5.0, "synthetic.fps": "25",
                                 "tracks": Path("t.csv"), "vmc": 39539, "max_frames": "12"})
    assert cfg.kalman.pose_gate == 4.0 and isinstance(cfg.kalman.pose_gate, float)
    assert cfg.detect_every == 5 and isinstance(cfg.detect_every, int)
    assert cfg.synthetic.fps == 25 and isinstance(cfg.synthetic.fps, int)
    assert cfg.tracks == "t.csv" and cfg.vmc == "39539"  # paths and addresses are text
    assert cfg.max_frames == 12 and cfg.batch.gpus_per_worker is None


def test_flags_api_keywords_and_files_reach_the_same_tree(tmp_path):
    from damdnet.api import _config

    user = tmp_path / "c.yaml"
    user.write_text("kalman:\n  pose_gate: 5.0\ntracker:\n  min_hits: 2\n")
    _, by_flags = parse(["--config", str(user), "--kalman.exp-gate", "2.5", "--mode", "mesh"])
    by_api = _config({"kalman": {"exp_gate": 2.5}, "mode": "mesh"}, str(user))
    assert by_flags == by_api
    assert (by_api.kalman.pose_gate, by_api.kalman.exp_gate, by_api.tracker.min_hits, by_api.mode) == \
        (5.0, 2.5, 2, "mesh")


def test_replace_changes_dotted_keys_and_keeps_the_rest():
    cfg = load_config()
    new = cfg.replace(out="o.mp4", **{"batch.workers": 3, "kalman.pose_gate": 9.0})
    assert (new.out, new.batch.workers, new.kalman.pose_gate) == ("o.mp4", 3, 9.0)
    assert new.batch.tracks == cfg.batch.tracks and new.kalman.exp_gate == cfg.kalman.exp_gate
    assert cfg.out is None and cfg.batch.workers == 0  # the original is untouched


@pytest.mark.parametrize("overrides, match", [
    ({"kalman.pose_gat": 1.0}, r"unknown config key 'kalman.pose_gat' in command line \(did you mean "
                               r"'kalman.pose_gate'\?\)"),
    ({"mode": "cartoon"}, r"config key 'mode': 'cartoon' is not one of landmarks, mesh, wireframe"),
    ({"detect_every": 0}, r"config key 'detect_every' must be positive"),
    ({"tracker.confidence_memory": 2}, r"config key 'tracker.confidence_memory' must be between 0 and 1"),
    ({"kalman": 3}, r"config key 'kalman' is a section"),
    ({"tracker.drop_confidence": 0.8}, r"'tracker.drop_confidence' \(0.8\) must not exceed "
                                       r"'tracker.confirm_confidence' \(0.7\)"),
])
def test_bad_values_are_one_line_errors_at_load(overrides, match):
    with pytest.raises(ConfigError, match=match) as e:
        load_config(overrides=overrides)
    assert "\n" not in str(e.value)


def test_run_defaults_live_only_in_default_yaml():
    """The typed configs made from the run's keys have no default of their own for them (a second copy would drift),
    and what they get is the YAML's."""
    from stream.analyze import tracker_config
    from tracking.blendshape_tracker import NeutralConfig
    from tracking.kalman import GroupNoise, KalmanConfig
    from tracking.tracker import TrackerConfig

    cfg = load_config()
    run_keys = {"detect_every", "smooth", "kalman", "neutral", *(f.name for f in dataclasses.fields(cfg.tracker))}
    for cls, keys in ((TrackerConfig, run_keys), (NeutralConfig, {"warmup_s", "adapt_s"}),
                      (KalmanConfig, {"pose", "shape", "expression", "eyelids", "mouth_shape", "adapt_gate"}),
                      (GroupNoise, {"meas_std", "accel_std", "init_vel_std", "gate"})):
        defaulted = {f.name for f in dataclasses.fields(cls)
                     if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
        assert not defaulted & keys, (cls.__name__, defaulted & keys)
    t = tracker_config(cfg.replace(**{"kalman.mouth_gate": 2.5, "blendshapes.adapt": 0.0, "tracker.lookahead": 4}))
    assert (t.kalman.mouth_shape.gate, t.neutral.adapt_s, t.lookahead, t.detect_every) == (2.5, 0.0, 4, 10)
    assert t.kalman.pose.init_vel_std == 0.3 and t.kalman.shape.init_vel_std == 1e-3


def test_serve_config_comes_from_the_run():
    pytest.importorskip("aiohttp")
    from stream.webrtc.server_config import ServeConfig, serve_config

    defaulted = {f.name for f in dataclasses.fields(ServeConfig)
                 if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
    assert not defaulted & {"host", "port", "token", "max_peers", "max_upload_bytes", "media_timeout_s",
                            "default_controls", "ssl_cert", "ssl_key"}
    _, cfg = parse(["serve", "--port", "8123", "--max-upload-mb", "2", "--mode", "mesh", "--smooth", "none"])
    s = serve_config(cfg)
    assert (s.host, s.port, s.max_peers, s.max_upload_bytes, s.media_timeout_s) == \
        ("127.0.0.1", 8123, 2, 2 * 1024 * 1024, 1.0)
    assert s.default_controls == {"mode": "mesh", "smooth": False}


def test_every_shipped_training_config_loads(repo_root):
    from model.train_config import TrainConfig, load_train_config

    files = sorted((repo_root / "configs").glob("train*.yaml"))
    assert len(files) >= 4
    for path in files:
        cfg = load_train_config(path)
        assert isinstance(cfg, TrainConfig) and cfg.batch > 0 and cfg.lr > 0, path
        assert load_train_config(path) == cfg
        raw = yaml.safe_load(path.read_text())
        assert (cfg.steps, cfg.teacher.name) == (raw["steps"], raw["teacher"]["name"])
