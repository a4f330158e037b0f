"""InputWait: the data-wait fraction over counted intervals, and the input-bound warning."""

import time

from tome_jax import data


def slow_iterator(delay):
    while True:
        time.sleep(delay)
        yield 1


def test_wait_fraction_counts_time_in_next_over_interval_time_and_skips_compile():
    wait = data.InputWait(warn_above=0.1)
    it = slow_iterator(0.01)
    assert wait.fraction() is None and wait.warning() is None
    start = time.perf_counter()
    wait.next(it)
    time.sleep(0.5)  # The "compile" interval: dropped.
    assert wait.end_interval(time.perf_counter() - start, count=False) < 0.1
    start = time.perf_counter()
    for _ in range(5):
        wait.next(it)  # 10 ms waiting ...
        time.sleep(0.01)  # ... 10 ms "stepping".
    fraction = wait.end_interval(time.perf_counter() - start)
    assert 0.3 < fraction < 0.7 and abs(wait.fraction() - fraction) < 1e-9
    assert "input pipeline bounds this run" in wait.warning()
    quiet = data.InputWait(warn_above=0.9)
    quiet.end_interval(1.0)
    assert quiet.fraction() == 0.0 and quiet.warning() is None
