"""Confidence thresholds as config keys and CLI flags: validated with one line naming the key, mapped to the
tracker's config; the stats report the confidence of the faces and the tracks dropped."""
from __future__ import annotations

import pytest

from stream.analyze import tracker_config
from stream.cli import parse
from stream.config import ConfigError, load_config
from stream.stats import Stats


def test_defaults_and_cli_flags_reach_the_tracker():
    t = tracker_config(load_config())
    assert (t.confirm_confidence, t.drop_confidence, t.min_face_size) == (0.7, 0.5, 20.0)
    _, cfg = parse(["--tracker.confirm-confidence", "0.8", "--tracker.drop-confidence", "0.6",
                    "--tracker.min-face-size", "32", "--tracker.confidence-keeps-tracks", "false"])
    t = tracker_config(cfg)
    assert (t.confirm_confidence, t.drop_confidence, t.min_face_size, t.confidence_keeps_tracks) == \
        (0.8, 0.6, 32.0, False)


@pytest.mark.parametrize("overrides, key", [
    ({"tracker.confirm_confidence": 1.5}, "tracker.confirm_confidence"),
    ({"tracker.drop_confidence": -0.1}, "tracker.drop_confidence"),
    ({"tracker.drop_confidence": 0.9}, "tracker.drop_confidence"),  # above confirm_confidence
    ({"tracker.min_face_size": "big"}, "tracker.min_face_size"),
])
def test_bad_thresholds_are_one_line_errors(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as e:
        load_config(overrides=overrides)
    assert "\n" not in str(e.value)


def test_stats_carry_confidence_and_drops():
    s = Stats()
    assert s.summary()["confidence"]["p50"] is None
    s.note_confidence({"confidence": 2, "small": 1}, [0.9, None, 0.7])
    out = s.summary()
    assert out["confidence"]["min"] == pytest.approx(0.7) and out["tracks_dropped"] == {"confidence": 2, "small": 1}
    assert "2 doubtful, 1 small" in s.line()
