"""Removing a partial cube never leaves a journal that a later run would resume from."""

from __future__ import annotations

import errno
import os

import pytest
from xcube.core.store import new_data_store

from multistore.storage import StorageTarget, remove_partial_cube


def test_a_cube_whose_removal_fails_half_way_leaves_no_journal(tmp_path, monkeypatch):
    target = StorageTarget(new_data_store("file", root=str(tmp_path)), "cube.zarr")
    (tmp_path / "cube.zarr" / "band_1").mkdir(parents=True)
    (tmp_path / "cube.zarr" / "band_1" / "0.0").write_bytes(b"chunk")
    os.makedirs(os.path.dirname(target.journal_path), exist_ok=True)
    with open(target.journal_path, "w") as f:
        f.write('{"journal": 1}\n{"k": "band_1/0.0", "size": 5, "crc32": 0}\n')
    fs = target.fs
    rm = fs.rm

    def late_writer_rm(path, *args, **kwargs):
        if path == target.path:  # a task still storing a chunk refills the folder
            raise OSError(errno.ENOTEMPTY, "Directory not empty", "band_1")
        return rm(path, *args, **kwargs)

    monkeypatch.setattr(fs, "rm", late_writer_rm)
    with pytest.raises(OSError):
        remove_partial_cube(target)
    assert not os.path.exists(target.journal_path)  # the next run rebuilds, not resumes
