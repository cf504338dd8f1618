"""bench/paired_gain.py: the mean of bins and the paired bootstrap of a difference, on known answers."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from paired_gain import mean_of_bins, paired_bootstrap  # noqa: E402


def test_mean_of_bins_weighs_bins_not_images():
    v = np.array([1.0, 1.0, 1.0, 4.0])
    bins = np.array([0, 0, 0, 1])
    assert mean_of_bins(v, bins) == 2.5  # (1 + 4) / 2, not the image mean 1.75


def test_a_constant_shift_has_no_spread_and_noise_does():
    rng = np.random.default_rng(1)
    a = rng.gamma(2.0, 2.0, 300)
    bins = np.repeat([0, 1, 2], 100)
    d = paired_bootstrap(a, a - 0.5, bins, boots=200)
    assert np.allclose(d, -0.5)
    noisy = paired_bootstrap(a, a + rng.normal(0, 1.0, 300), bins, boots=400)
    assert 0.03 < noisy.std() < 0.1  # about 1 / sqrt(300)
