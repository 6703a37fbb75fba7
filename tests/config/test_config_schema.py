"""The JSON Schema: one file in schemas/, shipped as package data, valid Draft 2020-12."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from multistore.config import config_schema

REPO = Path(__file__).parents[2]
SCHEMA_FILE = REPO / "schemas" / "multistore-config.schema.json"


def test_schema_file_is_package_data() -> None:
    packaged = resources.files("multistore.config").joinpath("schema.json")
    assert packaged.read_bytes() == SCHEMA_FILE.read_bytes()
    link = REPO / "multistore" / "config" / "schema.json"
    assert link.is_symlink() and link.resolve() == SCHEMA_FILE.resolve()
    assert config_schema() == json.loads(SCHEMA_FILE.read_text())


def test_schema_is_valid_draft_2020_12() -> None:
    schema = config_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_config_schema_returns_a_fresh_copy() -> None:
    config_schema()["properties"].clear()
    assert "datasets" in config_schema()["properties"]


@pytest.mark.parametrize(
    ("instance", "valid"),
    [
        (
            {
                "data_stores": [{"identifier": "storage", "store_id": "file"}],
                "datasets": [{"identifier": "a", "store": "storage", "data_id": "x"}],
            },
            True,
        ),
        ({"data_stores": [], "datasets": []}, False),
        (
            {
                "data_stores": [{"identifier": "storage", "store_id": "file"}],
                "datasets": [
                    {
                        "identifier": "a",
                        "variables": [{"identifier": "v", "store": "s", "data_id": "x"}],
                    }
                ],
            },
            True,
        ),
        (
            {
                "data_stores": [{"identifier": "storage", "store_id": "file"}],
                "datasets": [{"identifier": "a", "store": "s"}],
            },
            False,
        ),
    ],
)
def test_schema_alone_in_an_editor(instance: dict, valid: bool) -> None:
    """Editors use the bare schema (no multistore code): it must accept/reject on its own."""
    validator = jsonschema.Draft202012Validator(config_schema())
    assert validator.is_valid(instance) is valid
