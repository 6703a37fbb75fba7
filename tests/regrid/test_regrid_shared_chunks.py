"""Neighbouring warp tasks share decoded source chunks (issue 11): each chunk is read once."""

from __future__ import annotations

import pickle
import threading
from collections import Counter

import dask
import dask.array as da
import numpy as np
import pytest
from affine import Affine

from multistore.regrid import regrid_dataset
from multistore.regrid.reader import ChunkCache
from tests.regrid.test_regrid_engine import (
    LAEA,
    affine_dataset,
    categorical,
    gdal_reference,
    target_around,
)


class CountingSource:
    """An array that counts which regions are read (as a file-backed reader would decode them)."""

    def __init__(self, data: np.ndarray):
        self.data = data
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim
        self.reads: Counter = Counter()
        self._lock = threading.Lock()

    def __getitem__(self, key):
        region = tuple((s.start, s.stop) for s in key)
        if all(stop > start for start, stop in region):  # not dask's empty probe for meta
            with self._lock:
                self.reads[region] += 1
        return self.data[key].copy()


@pytest.mark.parametrize("scheduler", ["synchronous", "threads"])
def test_each_source_chunk_is_read_once_and_values_match_gdal(scheduler):
    rng = np.random.default_rng(11)
    data = categorical(rng, (3, 512, 512))
    source = CountingSource(data)
    arr = da.from_array(source, chunks=(1, 64, 64), lock=False, asarray=False)
    transform = Affine(30, 0, 4_200_000, 0, -30, 2_900_000)
    ds = affine_dataset(arr, transform, LAEA.to_wkt(), extra=("band", [1, 2, 3]), chunks=64)
    bounds = (4_200_000, 2_900_000 - 512 * 30, 4_200_000 + 512 * 30, 2_900_000)
    # target tiles of 64 px at 0.0004 deg (~31-44 m): windows overlap their neighbours' chunks
    target = target_around(LAEA, bounds, "EPSG:4326", 0.0004, 64)
    out = regrid_dataset(ds, target, {"method": "nearest"})["v"].data
    with dask.config.set(scheduler=scheduler, num_workers=2):
        got = out.compute()
    assert source.reads, "the source was not read"
    # with threads, a task needing a chunk another task is reading waits for it
    assert max(source.reads.values()) == 1, f"chunks read more than once: {source.reads}"
    ref = gdal_reference(data, transform, LAEA, target, "nearest", None, 255)
    assert np.mean(got == ref) > 0.99


def test_chunk_cache_keeps_a_chunk_only_while_other_tasks_need_it():
    a, b = np.zeros(10, "uint8"), np.ones(10, "uint8")
    cache = ChunkCache({"a": 3, "b": 2}, budget=15)
    cache.put("a", a)  # first of 3 uses: kept
    cache.put("b", b)  # would exceed the budget: not kept, read again later
    assert cache.take("b") is None
    assert cache.take("a") is a
    assert not a.flags.writeable  # shared between tasks: read-only
    assert cache.take("a") is a  # the last use releases it
    assert cache.take("a") is None
    assert cache._bytes == 0
    copy = pickle.loads(pickle.dumps(cache))  # another process starts empty, with all uses
    assert copy.take("a") is None


def test_a_task_waits_for_a_chunk_another_task_is_reading_and_reads_it_if_that_read_fails():
    cache = ChunkCache({"a": 3})
    found, mine, theirs = cache.claim(["a"])
    assert (found, mine, theirs) == ({}, ["a"], {})
    _, mine2, theirs2 = cache.claim(["a"])
    assert mine2 == [] and set(theirs2) == {"a"} and not theirs2["a"].is_set()
    cache.release("a")  # the first read failed: the waiter is woken and finds nothing kept
    assert theirs2["a"].is_set() and cache.take("a") is None
    _, mine3, _ = cache.claim(["a"])
    assert mine3 == ["a"]
    cache.put("a", np.zeros(4, "uint8"))  # kept for the last use, waking any waiter
    assert cache.take("a") is not None
