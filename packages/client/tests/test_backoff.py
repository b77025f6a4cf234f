import pytest

from jobprogress_client.backoff import Backoff


def test_delays_double_up_to_the_cap_and_reset() -> None:
    backoff = Backoff(first=0.1, cap=0.5)
    assert [backoff.next() for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    backoff.reset()
    assert backoff.delay == 0.1
    assert backoff.next() == 0.1


@pytest.mark.parametrize(("first", "cap"), [(0, 1), (-1, 1), (2, 1)])
def test_refuses_delays_that_cannot_back_off(first: float, cap: float) -> None:
    with pytest.raises(ValueError, match="first"):
        Backoff(first=first, cap=cap)


async def test_sleep_waits_the_current_delay_and_lengthens_the_next() -> None:
    backoff = Backoff(first=0.01, cap=1.0)
    await backoff.sleep()
    assert backoff.delay == 0.02
