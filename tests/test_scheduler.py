"""A failed compute reports its failure only once none of its tasks runs any more."""

from __future__ import annotations

import threading
import time

import dask
import dask.array as da
import numpy as np
import pytest

from multistore.config.model import DaskConfig
from multistore.scheduler import dask_runner

pytestmark = pytest.mark.timeout(120)


def test_a_failed_compute_returns_after_its_running_tasks_end():
    """dask's threaded scheduler raises at the first failed task while the others go on;
    a task still storing a chunk then races the removal of the partial cube."""
    started, finished = threading.Event(), threading.Event()

    def slow() -> int:
        started.set()
        time.sleep(0.5)
        finished.set()
        return 1

    def failing() -> int:
        assert started.wait(10)
        raise ValueError("boom")

    with dask_runner(DaskConfig(num_workers=2)) as runner:
        with pytest.raises(ValueError, match="boom"):
            runner.compute([dask.delayed(slow)(), dask.delayed(failing)()])
        assert finished.is_set()
        assert runner.compute(dask.delayed(slow)()) == 1  # the pool still serves the run


def test_a_failed_wave_stops_the_wave_behind_it_and_waits_for_its_tasks():
    """Wave 0 fails while wave 1 runs: wave 1 submits no more tasks, and no task of
    either wave is running when ``compute_in_waves`` raises."""
    lock = threading.Lock()
    running: set[int] = set()
    ran: list[int] = []
    later_wave_started = threading.Event()
    rows, first_wave = 200, 4  # waves of 4, 8, 16, 32, 64, 64 and 12 block rows

    def work(block: np.ndarray, block_info=None) -> np.ndarray:
        row = block_info[None]["chunk-location"][0]
        with lock:
            running.add(row)
            ran.append(row)
        try:
            if row >= first_wave:
                later_wave_started.set()
                time.sleep(0.05)
            elif row == 0:
                assert later_wave_started.wait(10)
                raise ValueError("wave 0 failed")
            return block
        finally:
            with lock:
                running.discard(row)

    blocks = da.zeros((rows, 4), chunks=(1, 4)).map_blocks(work, dtype=float)
    with dask_runner(DaskConfig(num_workers=2, wave_chunks=64)) as runner:
        with pytest.raises(ValueError, match="wave 0 failed"):
            runner.compute_in_waves([blocks])
        with lock:
            assert not running  # nothing of the run is still working
        later = [r for r in ran if r >= first_wave]
        assert 0 < len(later) < 8  # wave 1 (8 rows) had begun, and stopped early
