"""Secrets never shown in any form, on any channel (issue 12.3).

A secret may be printed raw, repr-escaped (once or twice), JSON-escaped or URL-quoted;
it may sit in a data id's query (``?token=...``). The reference forms here come from
the standard library (``repr``, ``json.dumps``, ``urllib.parse``), not from the masker.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
import yaml

from multistore.config import load_config
from multistore.config.redact import Masker, secrets_in_text
from multistore.demo import data
from multistore.scrub import ScrubbingFilter

# backslash, both quotes and a tab: each is escaped differently by repr, JSON and URLs
SECRET = "s3c\\r\"e't\tX-42"
QUOTED = urllib.parse.quote(SECRET, safe="")


def _forms(secret: str) -> list[str]:
    return [
        secret,
        repr(secret)[1:-1],
        repr(repr(secret))[1:-1],
        json.dumps(secret)[1:-1],
        json.dumps(json.dumps(secret))[1:-1],
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote(secret),
        urllib.parse.quote_plus(secret),
    ]


def _assert_hidden(text: str, secret: str = SECRET) -> None:
    for form in _forms(secret):
        assert form not in text, f"{form!r} shown in:\n{text}"


def test_masker_masks_every_form() -> None:
    mask = Masker([SECRET])
    texts = [
        *_forms(SECRET),
        str({"storage_options": {"secret": SECRET}}),
        repr(str(KeyError(SECRET))),
        json.dumps({"a": [SECRET]}),
        f"https://x.org/a.tif?sig={urllib.parse.quote_plus(SECRET)}&b=1",
    ]
    for text in texts:
        masked = mask(text)
        _assert_hidden(masked)
        assert "***" in masked


def test_short_values_are_not_masked_everywhere() -> None:
    assert Masker(["ab"])("cab ab") == "cab ab"


def test_secret_query_values_are_found_and_masked_without_being_known() -> None:
    data_id = f"web:a.tif?x=1&Token={QUOTED}&sig=abcd1234"
    assert {SECRET, QUOTED, "abcd1234"} <= secrets_in_text(data_id)
    assert Masker()(data_id) == "web:a.tif?x=1&Token=***&sig=***"
    assert Masker()("https://user:hunter22@host/x") == "https://user:***@host/x"


def _config(root: Path) -> dict:
    data.write_local_sources(root / "data")
    return {
        "data_stores": [
            {"identifier": "storage", "store_id": "file", "store_params": {"root": "out"}},
            {"identifier": "local", "store_id": "file", "store_params": {"root": "data"}},
        ],
        "grid_mappings": [
            {"identifier": "gm", "bbox": [11.2, 47.6, 11.6, 47.9], "spatial_res": 0.01}
        ],
        "datasets": [
            {
                "identifier": "tokened",
                "store": "local",
                "data_id": f"missing.tif?token={QUOTED}",
                "grid_mapping": "gm",
            },
            {
                "identifier": "named",
                "store": "local",
                "data_id": "${LC_TOKEN}.tif",  # a secret variable in a real source's id
                "grid_mapping": "gm",
            },
        ],
    }


ENV = {"LC_TOKEN": Path(data.LANDCOVER).stem}


def test_repr_of_config_masks_secrets(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path), base_dir=tmp_path, env=ENV)
    assert SECRET in config.secret_values and ENV["LC_TOKEN"] in config.secret_values
    text = repr(config)
    _assert_hidden(text)
    _assert_hidden(text, ENV["LC_TOKEN"])
    assert "missing.tif?token=***" in text


def test_plan_sources_errors_and_cube_attributes_are_masked(tmp_path: Path) -> None:
    from multistore.api import MultiSourceDataStore
    from multistore.cube import build_cube

    msds = MultiSourceDataStore(load_config(_config(tmp_path), base_dir=tmp_path, env=ENV))
    summaries = {s.identifier: s for s in msds.describe_plan()}
    shown = json.dumps([s.__dict__ for s in summaries.values()], default=str)
    _assert_hidden(shown)
    _assert_hidden(shown, ENV["LC_TOKEN"])
    assert summaries["tokened"].sources == ("local:missing.tif?token=***",)
    assert summaries["tokened"].error  # the source does not exist
    assert summaries["named"].sources == ("local:***.tif",)

    cube = next(c for c in msds.plan().cubes if c.identifier == "named")
    ds = build_cube(cube, msds.config, msds.stores, cube.grid)
    attrs = json.dumps({n: dict(v.attrs) for n, v in ds.data_vars.items()} | dict(ds.attrs))
    assert '"multistore_source": "local:***.tif"' in attrs
    _assert_hidden(attrs, ENV["LC_TOKEN"])


def test_scrubbing_filter_masks_tracebacks_and_stacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ScrubbingFilter(Masker([SECRET])))
    log = logging.getLogger("test.secrets.filter")
    log.addHandler(handler)
    log.propagate = False
    try:
        try:
            raise OSError(f"cannot open { ({'token': SECRET})!r} ({QUOTED})")
        except OSError:
            log.exception("failed with %r", SECRET, stack_info=True)
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    assert "Traceback" in text and "***" in text
    _assert_hidden(text)


@pytest.mark.parametrize("log_format", ["log", "json"])
def test_generate_debug_output_masks_secrets(tmp_path: Path, log_format: str) -> None:
    """``generate -vv``: the failed dataset's traceback and every status line, masked."""
    config = _config(tmp_path)
    config["datasets"] = config["datasets"][:1]
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "multistore", "generate", str(path), "-vv"]
        + ["--log-format", log_format],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" in result.stderr or '"exception"' in result.stderr, result.stderr
    _assert_hidden(result.stdout + result.stderr)
