"""The one place that reads a store's declared open params: expected failures are logged
and mean "declares nothing"; anything else is a bug and propagates (issue 13.1)."""

from __future__ import annotations

import logging

import pytest
from xcube.core.store import DataStoreError, new_data_store

from multistore.stores.contract import declared_open_params


class _Failing:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def get_open_data_params_schema(self, data_id: str):
        raise self.error


def test_declared_open_params_of_a_real_store(tmp_path):
    store = new_data_store("file", root=str(tmp_path))
    assert "chunks" in declared_open_params(store, "x.zarr")


@pytest.mark.parametrize("error", [DataStoreError("unknown"), KeyError("x"), OSError("down")])
def test_expected_failures_declare_nothing_and_warn(error, caplog):
    with caplog.at_level(logging.WARNING, logger="multistore.stores.contract"):
        assert declared_open_params(_Failing(error), "some/id") == set()
    assert "'some/id'" in caplog.text and type(error).__name__ in caplog.text


def test_unexpected_failures_propagate():
    with pytest.raises(RuntimeError, match="bug"):
        declared_open_params(_Failing(RuntimeError("bug")), "some/id")
