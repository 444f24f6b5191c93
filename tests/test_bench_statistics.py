"""The interval ``bench/sts_overhead.py --runs`` prints over runs: a two-sided 90 % t interval of the mean."""
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from sts_overhead import mean_interval  # noqa: E402


def test_mean_interval_by_hand():
    mean, low, high = mean_interval([1.0, 2.0, 3.0])  # sd 1, n 3: t(0.95, 2 df) = 2.920
    assert mean == 2.0
    assert (low, high) == pytest.approx((2.0 - 2.920 / 3 ** 0.5, 2.0 + 2.920 / 3 ** 0.5))


@pytest.mark.parametrize("runs", [3, 5, 15, 40])
def test_mean_interval_covers_the_true_mean_nine_times_in_ten(runs):
    draw = random.Random(runs)
    trials = 4000
    covered = 0
    for _ in range(trials):
        _, low, high = mean_interval([draw.gauss(1.02, 0.01) for _ in range(runs)])
        covered += low <= 1.02 <= high
    # binomial sd of the coverage over 4000 trials is 0.5 %; beyond 30 runs the table's last quantile is a little wide
    assert 0.88 <= covered / trials <= 0.925
