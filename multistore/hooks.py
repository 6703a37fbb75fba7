"""Load and run users' ``custom_processing`` functions from files (not from ``sys.path``)."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Callable

import xarray as xr

from .config.model import CustomProcessing
from .errors import ProcessingError


def load_hook(hook: CustomProcessing) -> Callable[[xr.Dataset], xr.Dataset]:
    """Import ``hook.module_path`` under a name unique to its path, so two hook files
    called ``processing.py`` in different projects never shadow each other."""
    path = hook.module_path
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    name = f"multistore_hook_{path.stem}_{digest}"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ProcessingError(f"cannot import custom_processing module {path}")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            raise ProcessingError(f"importing {path.name} failed: {type(e).__name__}: {e}") from e
        sys.modules[name] = module
    fn = getattr(module, hook.function_name, None)
    if not callable(fn):
        raise ProcessingError(f"{path.name} defines no function {hook.function_name!r}")
    return fn


def apply_hook(hook: CustomProcessing | None, ds: xr.Dataset) -> xr.Dataset:
    if hook is None:
        return ds
    fn = load_hook(hook)
    try:
        result = fn(ds)
    except Exception as e:
        raise ProcessingError(
            f"custom_processing {hook.module_path.name}:{hook.function_name} raised "
            f"{type(e).__name__}: {e}"
        ) from e
    if isinstance(result, xr.DataArray):
        result = result.to_dataset(name=result.name or "data")
    if not isinstance(result, xr.Dataset):
        raise ProcessingError(
            f"custom_processing {hook.function_name} returned {type(result).__name__}, "
            "expected an xarray.Dataset"
        )
    return result
