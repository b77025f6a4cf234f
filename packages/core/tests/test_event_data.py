"""The estimate of the time left: none without a pace, then one that follows the pace and
settles when it is steady."""

from __future__ import annotations

from jobprogress_core.event_data import EtaEstimate


def test_no_estimate_until_the_percentage_has_moved() -> None:
    eta = EtaEstimate(0.0, 0)
    assert eta.update(10.0, 0) is None
    assert eta.update(20.0, 10) is not None


def test_a_steady_pace_gives_the_time_left() -> None:
    eta = EtaEstimate(0.0, 0)
    estimates = [eta.update(float(t), t) for t in range(10, 100, 10)]  # 1 % per second
    assert estimates[-1] == 10
    assert estimates == [100 - t for t in range(10, 100, 10)]
    assert eta.update(100.0, 100) == 0


def test_the_estimate_moves_towards_a_new_pace_without_jumping() -> None:
    eta = EtaEstimate(0.0, 0)
    for t in range(10, 60, 10):
        eta.update(float(t), t)  # 1 % per second up to 50 %
    slower = [eta.update(50.0 + 20 * n, 50 + 10 * n) for n in range(1, 5)]  # now 0.5 % per second
    assert all(isinstance(e, int) for e in slower)
    after_one = 40 / (0.3 * 0.5 + 0.7 * 1.0)
    assert slower[0] == round(after_one)  # one report at the new pace moves it part of the way
    assert slower[0] < slower[1] or slower[1] < slower[0]  # and it keeps moving as reports come
    assert abs(slower[-1] - 10 / 0.5) < abs(slower[0] - 40 / 0.5)  # towards the new pace's answer


def test_a_percentage_that_goes_back_is_not_a_pace() -> None:
    eta = EtaEstimate(0.0, 50)
    assert eta.update(10.0, 40) is None
