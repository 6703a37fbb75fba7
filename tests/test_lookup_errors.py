"""Unknown names raise KeyError naming the known ones (not a bare StopIteration)."""

from __future__ import annotations

import pytest

from multistore.config import load_config
from multistore.generate import RunReport
from multistore.plan import build_plan
from multistore.status import DatasetResult, Status


def config():
    return load_config(
        {
            "data_stores": [
                {"identifier": "storage", "store_id": "file", "store_params": {"root": "out"}},
                {"identifier": "local", "store_id": "file", "store_params": {"root": "data"}},
            ],
            "grid_mappings": [
                {"identifier": "gm", "crs": "EPSG:4326", "bbox": [0, 0, 1, 1], "spatial_res": 0.1}
            ],
            "datasets": [
                {"identifier": "lc", "store": "local", "data_id": "a.tif", "grid_mapping": "gm"}
            ],
        }
    )


def test_config_store_unknown_name():
    with pytest.raises(KeyError) as info:
        config().store("nope")
    assert str(info.value) == "no store 'nope' (known: 'storage', 'local')"
    assert config().store("local").store_id == "file"


def test_plan_cube_unknown_name():
    plan = build_plan(config())
    with pytest.raises(KeyError) as info:
        plan.cube("nope")
    assert str(info.value) == "no cube 'nope' (known: 'lc')"
    assert plan.cube("lc").identifier == "lc"


def test_run_report_unknown_name():
    report = RunReport((DatasetResult("a", Status.COMPLETED), DatasetResult("b", Status.FAILED)))
    with pytest.raises(KeyError) as info:
        report["nope"]
    assert str(info.value) == "no result 'nope' (known: 'a', 'b')"
    assert report["b"].status is Status.FAILED


def test_unknown_name_error_survives_pickling():
    import pickle

    from multistore.errors import UnknownNameError

    error = pickle.loads(pickle.dumps(UnknownNameError("cube", "x", ["a"])))
    assert isinstance(error, KeyError) and str(error) == "no cube 'x' (known: 'a')"
