"""The tile planner: every request within the byte budget and the axis limit, aligned to chunks."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from multistore.grid import TargetGrid, Window
from multistore.stores.earthengine.planner import (
    MAX_DIMENSION,
    PlanError,
    RequestPlan,
    bytes_per_pixel,
    plan_chunks,
    quarter,
    request_budget,
    split_counts,
)


def test_bytes_per_pixel_counts_the_mask_byte():
    assert bytes_per_pixel(["uint16"] * 4) == 12
    assert bytes_per_pixel(["uint8", "float64"]) == 2 + 9


@pytest.mark.parametrize(
    ("width", "height", "bpp", "budget"),
    [
        (1024, 1024, 12, 10_000_000),
        (1024, 1024, 108, 1_000_000),
        (37, 11, 9, 300),
        (5, 1, 9, 10),
        (1, 100, 3, 7),
    ],
)
def test_split_counts_is_minimal_and_fits(width, height, bpp, budget):
    kx, ky = split_counts(width, height, bpp, budget)
    pw, ph = math.ceil(width / kx), math.ceil(height / ky)
    assert pw * ph * bpp <= budget
    # brute force: no layout with fewer pieces fits
    best = min(
        a * b
        for a in range(1, width + 1)
        for b in range(1, height + 1)
        if math.ceil(width / a) * math.ceil(height / b) * bpp <= budget
    )
    assert kx * ky == best


def test_split_counts_respects_the_axis_limit():
    kx, ky = split_counts(70000, 1, 1, 10**9)
    assert (kx, ky) == (3, 1)
    assert math.ceil(70000 / kx) <= MAX_DIMENSION


def test_one_pixel_over_budget_is_a_plan_error():
    with pytest.raises(PlanError, match="one pixel"):
        split_counts(10, 10, 100, 50)


@pytest.mark.parametrize(
    ("dtype", "n_bands"),
    list(itertools.product(["uint8", "uint16", "float32", "float64"], [1, 5, 12])),
)
def test_plan_chunks_tile_each_chunk_exactly_within_budget(dtype, n_bands):
    grid = TargetGrid.from_bbox([0, 0, 1.0, 0.7], "EPSG:4326", 0.01, tile_size=(32, 24))
    limit = 9000
    plans = plan_chunks(list(grid.windows()), [dtype] * n_bands, limit)
    budget = request_budget(limit)
    bpp = bytes_per_pixel([dtype] * n_bands)
    cover = np.zeros(grid.shape, dtype=int)
    for plan in plans:
        chunk_cover = np.zeros(grid.shape, dtype=bool)
        chunk_cover[plan.chunk.slices] = True
        for req in plan.requests:
            assert req.width * req.height * bpp <= budget
            assert chunk_cover[req.slices].all(), "request leaves its chunk"
            cover[req.slices] += 1
    assert (cover == 1).all(), "requests must tile the grid without gaps or overlaps"
    plan = RequestPlan("x", 3, plans, ("b",) * n_bands, bpp, limit)
    assert plan.n_requests == 3 * sum(len(p.requests) for p in plans)
    assert plan.bytes == 3 * grid.width * grid.height * bpp
    assert plan.max_request_bytes <= budget
    assert str(plan).startswith(f"{plan.n_requests} requests, ")


def test_quarter_splits_in_four_and_two():
    parts = quarter(Window(10, 20, 5, 3))
    assert len(parts) == 4
    assert sum(p.width * p.height for p in parts) == 15
    assert len(quarter(Window(0, 0, 1, 9))) == 2
    with pytest.raises(PlanError):
        quarter(Window(0, 0, 1, 1))
