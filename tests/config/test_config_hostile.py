"""Hostile configs (issue 12.4): each one is a located problem within a second, memory bounded.

Alias bombs, recursive aliases, deep nesting, NUL bytes, oversized numbers and files:
``load_config`` must raise ``ConfigError`` (exit code 2 in the CLI), never hang, never
grow without bound and never leak a traceback.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from configtools import base_config, write_config

from multistore.config import load_config
from multistore.errors import ConfigError, Problem

TIME_LIMIT_S = 1.0
RUN_CLI = "import sys; from multistore.cli import main; sys.argv[0] = 'multistore'; main()"

BILLION_LAUGHS = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
    for prev, name in zip(["", *"abcdefgh"], "abcdefghi", strict=True)
)


def _yaml(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False)


def _with(path: tuple, value: Any) -> str:
    config = base_config()
    target = config
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return _yaml(config)


def _without(path: tuple) -> str:
    config = base_config()
    target = config
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return _yaml(config)


def _raw(path: tuple, text: str) -> str:
    """The base config with a placeholder at ``path`` replaced by raw YAML ``text``."""
    return _with(path, "PLACEHOLDER").replace("PLACEHOLDER", text)


GM = ("grid_mappings", 0)
HOOK = ("datasets", 0, "custom_processing")

# name -> (YAML text, expected location (<file> = the config's path), message fragment)
CASES: dict[str, tuple[str, str, str]] = {
    "alias-bomb": (BILLION_LAUGHS, "<file>: line 6, column", "expands to more than"),
    "alias-self": ("&a [*a]\n", "<file>: line 1, column 5", "refers to a value that contains it"),
    "alias-self-in-config": (
        _yaml(base_config()) + "extra: &x {a: [1, {b: *x}]}\n",
        "<file>: line",
        "refers to a value that contains it",
    ),
    "nested-brackets": ("a: " + "[" * 5000 + "]" * 5000 + "\n", "<file>: line 1", "nested"),
    "nested-mappings": (
        "a: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n",
        "<file>: line 1",
        "nested",
    ),
    "nul-byte": (_yaml(base_config()) + "# \x00\n", "<file>: line", "#x0000 is not allowed"),
    "int-too-long-to-read": ("a: " + "9" * 5000 + "\n", "<file>: line 1", "cannot read a value"),
    "huge-int-bbox": (
        _raw((*GM, "bbox"), f"[0, 0, 1, {'9' * 400}]"),
        "grid_mappings[0].bbox[3]",
        "out of range",
    ),
    "huge-int-spatial_res": (
        _raw((*GM, "spatial_res"), "9" * 400),
        "grid_mappings[0].spatial_res",
        "out of range",
    ),
    "huge-int-open_params": (
        _raw(("datasets", 0, "open_params"), "{x: " + "9" * 40 + "}"),
        "datasets[0].open_params.x",
        "out of range",
    ),
    "huge-frequency": (
        _with(("datasets", 0, "temporal_resample_params"), {"frequency": "9" * 30 + "D"}),
        "datasets[0].temporal_resample_params.frequency",
        "is not a pandas frequency",
    ),
    "negative-frequency": (
        _with(("datasets", 0, "temporal_resample_params"), {"frequency": "-1D"}),
        "datasets[0].temporal_resample_params.frequency",
        "must be a positive frequency",
    ),
    "grid-without-spatial_res": (
        _without((*GM, "spatial_res")),
        "grid_mappings[0]",
        "'spatial_res' is a required property",
    ),
    "nan-spatial_res": (
        _raw((*GM, "spatial_res"), ".nan"),
        "grid_mappings[0].spatial_res",
        "must be a finite number",
    ),
    "inf-spatial_res-pair": (
        _raw((*GM, "spatial_res"), "[0.1, .inf]"),
        "grid_mappings[0].spatial_res[1]",
        "must be a finite number",
    ),
    "nan-bbox": (
        _raw((*GM, "bbox"), "[0, .nan, 1, 1]"),
        "grid_mappings[0].bbox[1]",
        "must be a finite number",
    ),
    "nan-backoff": (
        _raw(("general",), "{retries: {backoff_s: .nan}}"),
        "general.retries.backoff_s",
        "must be a finite number",
    ),
    "huge-tile_size": (
        _with((*GM, "tile_size"), 999_999_999_999),
        "grid_mappings[0].tile_size",
        "must be <= 65536",
    ),
    "huge-tile-area": (
        _with((*GM, "tile_size"), [20000, 20000]),
        "grid_mappings[0].tile_size",
        "more than 268435456 pixels",
    ),
    "bad-zenodo-root": (
        _with(
            ("data_stores", 1),
            {"identifier": "src", "store_id": "zenodo", "store_params": {"root": "not a record"}},
        ),
        "data_stores[1].store_params.root",
        "is not a record id, DOI",
    ),
    "hook-100k-terms": (
        _with(HOOK, {"module_path": "deep_hook.py", "function_name": "f"}),
        "datasets[0].custom_processing.module_path",
        "nested too deeply",
    ),
}


def _write(tmp_path: Path, text: str) -> Path:
    path = write_config(tmp_path, text)
    (tmp_path / "deep_hook.py").write_text(
        "def f(ds):\n    return " + " + ".join(["ds"] * 100_000) + "\n"
    )
    return path


def _timed_problems(call: Callable[[], Any]) -> tuple[tuple[Problem, ...], float]:
    """The problems and the CPU seconds spent (other processes' load does not count)."""
    start = time.process_time()
    with pytest.raises(ConfigError) as info:
        call()
    return info.value.problems, time.process_time() - start


@pytest.fixture(scope="module", autouse=True)
def _warm_imports(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Time the checks, not the first import of xcube, pyproj and pandas."""
    path = write_config(tmp_path_factory.mktemp("warm"), base_config())
    load_config(path)
    with pytest.raises(ConfigError):
        load_config(_write(tmp_path_factory.mktemp("warm2"), CASES["huge-frequency"][0]))


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_config_is_a_located_problem(tmp_path: Path, case: str) -> None:
    text, location, fragment = CASES[case]
    path = _write(tmp_path, text)
    problems, seconds = _timed_problems(lambda: load_config(path, env={}))
    location = location.replace("<file>", str(path))
    assert any(p.location.startswith(location) and fragment in p.message for p in problems), (
        problems
    )
    assert seconds < TIME_LIMIT_S, f"{case}: {seconds:.2f} s"


def test_nul_byte_after_non_ascii_text_is_located_by_character() -> None:
    from multistore.config.yamlsource import parse_yaml

    text = "é: 1\nb: ééé\x00\n"
    position = text.index("\x00")
    column = position - text.rindex("\n", 0, position)  # 1-based, from Python's str
    problems = parse_yaml(text).problems
    assert [p.location for p in problems] == [f"line 2, column {column}"]


def test_file_size_is_capped(tmp_path: Path) -> None:
    path = tmp_path / "big.yml"
    path.write_text("# padding\n" * (11 * 2**20 // 10))
    problems, seconds = _timed_problems(lambda: load_config(path))
    assert problems[0].location == str(path)
    assert "larger than 10 MB" in problems[0].message
    assert seconds < TIME_LIMIT_S


def _limit_memory() -> None:
    limit = 1536 * 2**20  # the parse-level refusals never import the scientific stack
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("bomb", BILLION_LAUGHS),
        ("self", "&a [*a]\n"),
        ("deep", "a: " + "[" * 5000 + "]" * 5000 + "\n"),
        ("nul", "a: 1\n\x00\n"),
        ("dev-zero", None),
    ],
)
def test_cli_refuses_hostile_files_fast_and_bounded(
    tmp_path: Path, name: str, text: str | None
) -> None:
    """The real command: exit code 2, one located line, no traceback, under a memory limit."""
    path = Path("/dev/zero") if text is None else _write(tmp_path, text)
    proc = subprocess.run(
        [sys.executable, "-c", RUN_CLI, "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_limit_memory,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "Exception ignored" not in proc.stderr
    assert f"  {path}: " in proc.stderr, proc.stderr


def test_bad_zenodo_root_prints_no_ignored_exception(tmp_path: Path) -> None:
    """A store that fails in __init__ must not print ``Exception ignored in ... _client``."""
    from multistore.stores.zenodo import ZenodoDataStore

    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from multistore.stores.zenodo import ZenodoDataStore\n"
            "try:\n    ZenodoDataStore(root='not a record')\nexcept Exception as e:\n"
            "    print(type(e).__name__)\n",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.stdout.strip() == "StoreError", proc.stderr
    assert proc.stderr == ""
    assert ZenodoDataStore.get_data_store_params_schema() is not None
