"""Load and run users' ``custom_processing`` functions from files (not from ``sys.path``).

A hook module is keyed by its path *and the hash of its content*: editing the file and
running ``generate`` again in the same process (a notebook) imports the new code, the
code that the cube's config fingerprint hashes. What a hook returns is checked before
it reaches the writer, so a broken result fails its dataset with a clear reason instead
of being written as complete.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import xarray as xr

from .config.model import CustomProcessing
from .errors import ProcessingError
from .grid import TargetGrid, xy_names

# bool, integers, floats, complex, datetimes, timedeltas: what Zarr and NetCDF store as numbers
_STORABLE_KINDS = frozenset("biufcMm")


def module_name(path: Path, source: bytes) -> str:
    """``sys.modules`` key of a hook file: one per (path, content)."""
    where = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    what = hashlib.sha256(source).hexdigest()[:16]
    stem = re.sub(r"\W", "_", path.stem)
    return f"multistore_hook_{stem}_{where}_{what}"


def load_hook(
    hook: CustomProcessing, expected_sha256: str | None = None
) -> Callable[[xr.Dataset], xr.Dataset]:
    """The hook function, compiled from the file's current bytes.

    The module is executed from the very bytes that were hashed (not re-read by an
    import loader), so the name always matches the code that runs. ``expected_sha256``:
    the hash the cube's fingerprint was computed from; a file edited since then fails
    the dataset rather than marking a cube complete for code that never ran.
    """
    path = hook.module_path
    try:
        source = Path(path).read_bytes()
    except OSError as e:
        raise ProcessingError(f"cannot read custom_processing module {path}: {e}") from e
    if expected_sha256 is not None and hashlib.sha256(source).hexdigest() != expected_sha256:
        raise ProcessingError(
            f"{path.name} changed after this run was planned (the cube's fingerprint hashes "
            "the earlier version); run generate again"
        )
    name = module_name(path, source)
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_loader(name, loader=None, origin=str(path))
        if spec is None:
            raise ProcessingError(f"cannot import custom_processing module {path}")
        module = importlib.util.module_from_spec(spec)
        module.__file__ = str(path)
        # registered while it runs, like a normal import (dataclasses and pickling look it up)
        sys.modules[name] = module
        try:
            exec(compile(source, str(path), "exec"), module.__dict__)
        except (Exception, SystemExit) as e:
            sys.modules.pop(name, None)
            raise ProcessingError(f"importing {path.name} failed: {type(e).__name__}: {e}") from e
    fn = getattr(module, hook.function_name, None)
    if not callable(fn):
        raise ProcessingError(f"{path.name} defines no function {hook.function_name!r}")
    return fn


def apply_hook(
    hook: CustomProcessing | None,
    ds: xr.Dataset,
    grid: TargetGrid | None = None,
    expected_sha256: str | None = None,
) -> xr.Dataset:
    """Run ``hook`` on ``ds`` and check its result; ``grid``: the grid the result must keep;
    ``expected_sha256``: the hook file's hash as planned (see ``load_hook``)."""
    if hook is None:
        return ds
    fn = load_hook(hook, expected_sha256)
    label = f"custom_processing {hook.module_path.name}:{hook.function_name}"
    try:
        result = fn(ds)
    except (Exception, SystemExit) as e:  # sys.exit() in a hook fails its dataset only
        raise ProcessingError(f"{label} raised {type(e).__name__}: {e}") from e
    if isinstance(result, xr.DataArray):
        result = result.to_dataset(name=result.name or "data")
    if not isinstance(result, xr.Dataset):
        raise ProcessingError(
            f"{label} returned {type(result).__name__}, expected an xarray.Dataset"
        )
    problem = result_problem(result, grid)
    if problem:
        raise ProcessingError(f"{label} returned an unusable dataset: {problem}")
    return result


def result_problem(ds: xr.Dataset, grid: TargetGrid | None = None) -> str | None:
    """Why ``ds`` cannot become (part of) a cube, or None.

    Without ``grid`` (a source's hook, before regridding; curvilinear sources have no
    x/y dimensions) only what holds on any grid is checked: data present, storable
    dtypes and, where x/y dimensions exist, finite coordinates.
    """
    if not ds.data_vars:
        return "it has no data variables"
    if all(v.ndim == 0 for v in ds.data_vars.values()):
        return f"it holds only scalars ({', '.join(map(str, ds.data_vars))})"
    for name, var in ds.data_vars.items():
        if var.dtype.kind not in _STORABLE_KINDS:
            return (
                f"variable {str(name)!r} has dtype {var.dtype}; cubes hold numbers "
                "(cast it, e.g. .astype('float32'))"
            )
    if grid is not None:
        x, y = grid.x_name, grid.y_name
    else:
        try:
            x, y = xy_names(ds)
        except Exception:
            return None
    spatial = [str(n) for n, v in ds.data_vars.items() if x in v.dims and y in v.dims]
    if not spatial:
        shapes = ", ".join(f"{n}{tuple(map(str, v.dims))}" for n, v in ds.data_vars.items())
        return f"no data variable spans the dims {y!r} and {x!r}: {shapes}"
    for dim in (x, y):
        if dim not in ds.coords:
            return f"the dimension {dim!r} has no coordinate values"
        values = np.asarray(ds[dim].values)
        if values.dtype.kind not in "iuf":
            return f"coordinate {dim!r} has dtype {values.dtype}, expected numbers"
        if not np.isfinite(values).all():
            return f"coordinate {dim!r} has NaN or infinite values"
    if grid is None:
        return None
    for dim, expected in ((x, grid.x_coords), (y, grid.y_coords)):
        got = np.asarray(ds[dim].values, dtype="float64")
        if got.shape != expected.shape:
            return (
                f"{dim!r} has {got.size} values, the target grid {expected.size} "
                "(a hook must keep the grid: no cropping or resampling)"
            )
        step = abs(float(expected[1] - expected[0])) if expected.size > 1 else 1.0
        if not np.allclose(got, expected, rtol=0, atol=1e-6 * step):
            return f"{dim!r} values differ from the target grid (a hook must keep the grid)"
    return None
