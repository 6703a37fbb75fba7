"""A seeded, structure-aware fuzzer of configs (issue 12): ConfigError or a Config, nothing else.

The repository's configs (and the tests' base config) are mutated: keys deleted,
values swapped for other types, numbers made huge, negative, NaN or infinite, strings
made random (control characters, ``${``, unicode), values nested deeply, lists
duplicated, and the YAML text itself cut, spliced and sprinkled with odd characters.
Each mutant goes through ``load_config`` (the ``validate`` entry point) in-process and
must end in a ``Config`` or a ``ConfigError`` with located problems, within a time
bound. A few go through the real CLI: exit code 0 or 2, never a traceback.
"""

from __future__ import annotations

import copy
import math
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from configtools import HOOKS, base_config

from multistore.config import Config, load_config
from multistore.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SEED = 20261202
N_STRUCTURED = 900
N_TEXTUAL = 300
CASE_LIMIT_S = 2.0  # CPU seconds per mutant (typically ~10 ms, the slowest ~0.5 s)
ENV = {
    "HOME": "/home/fuzz",
    "MULTISTORE_DEMO_S3_KEY": "fuzz-key",
    "MULTISTORE_DEMO_S3_SECRET": "fuzz-secret-value",
    "MULTISTORE_ZENODO_URL": "http://127.0.0.1:1",
}
RUN_CLI = "import sys; from multistore.cli import main; sys.argv[0] = 'multistore'; main()"

ODD_STRINGS = [
    "",
    " ",
    "${",
    "${UNSET}",
    "$${X}",
    "${HOME:-x}",
    "\t\\\"'",
    "../../../../etc/passwd",
    "~/x",
    "EPSG:999999",
    "+proj=nonsense",
    "ÿ\u2028\u00e9\U0001f600",
    "a" * 5000,
    "1e400",
    "-1D",
    "0D",
    "99999999999999999999999D",
    "nan",
    "s3://",
    "file:///dev/zero",
    "http://127.0.0.1:1/x?token=abc",
]
ODD_NUMBERS = [
    0,
    -1,
    -(2**31),
    2**63,
    2**64,
    2**65,
    10**30,
    -(10**30),
    1e308,
    -1e308,
    5e-324,
    math.nan,
    math.inf,
    -math.inf,
    0.0,
    -0.0,
    True,
    False,
]
ODD_TEXT = [
    "\x00",
    "\t",
    "&a",
    "*a",
    "*nope",
    "!!binary",
    "!!set",
    "<<: *a",
    "{",
    "[",
    "'",
    '"',
    ":",
    "- ",
    "%",
]


def _seeds() -> list[tuple[str, dict[str, Any]]]:
    seeds = [("tests-base", base_config())]
    for path in sorted((REPO / "configs").glob("*.yml")):
        seeds.append((path.name, yaml.safe_load(path.read_text())))
    return seeds


def _paths(obj: Any, path: tuple = ()) -> Iterator[tuple]:
    yield path
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _paths(value, (*path, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from _paths(value, (*path, i))


def _get(obj: Any, path: tuple) -> Any:
    for key in path:
        obj = obj[key]
    return obj


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(7 if depth < 2 else 4)
    if kind == 0:
        return rng.choice(ODD_NUMBERS)
    if kind == 1:
        return rng.choice(ODD_STRINGS)
    if kind == 2:
        return rng.choice([None, rng.randint(-5, 5), rng.random() * 10 ** rng.randint(-10, 10)])
    if kind == 3:
        return "".join(chr(rng.randrange(1, 0x3000)) for _ in range(rng.randrange(12)))
    if kind == 4:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    if kind == 5:
        return {
            rng.choice(["a", "root", "identifier", "store", "1"]): _random_value(rng, depth + 1)
        }
    return [[[[[[[[[[[[[[[[[[[[rng.choice(ODD_NUMBERS)]]]]]]]]]]]]]]]]]]]]


def _mutate(config: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    config = copy.deepcopy(config)
    for _ in range(rng.randint(1, 3)):
        paths = [p for p in _paths(config) if p]
        path = rng.choice(paths)
        parent, key = _get(config, path[:-1]), path[-1]
        op = rng.randrange(6)
        if op == 0:  # delete
            del parent[key]
        elif op in (1, 2):  # another type or an odd value
            parent[key] = _random_value(rng)
        elif op == 3:  # nest deeply
            value = parent[key]
            for _ in range(rng.choice([5, 40, 70])):
                value = [value] if rng.random() < 0.5 else {"k": value}
            parent[key] = value
        elif op == 4 and isinstance(parent, list):  # duplicate an entry
            parent.insert(key, copy.deepcopy(parent[key]))
        else:  # an odd number in place of any scalar
            if not isinstance(parent[key], dict | list):
                parent[key] = rng.choice(ODD_NUMBERS)
    return config


def _mutate_text(text: str, rng: random.Random) -> str:
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        at = rng.randrange(len(text) + 1)
        if op == 0:
            text = text[:at] + rng.choice(ODD_TEXT) + text[at:]
        elif op == 1:
            text = (
                text[: at + rng.randrange(1, 40)]
                if rng.random() < 0.2
                else text[:at] + text[at + rng.randrange(1, 20) :]
            )
        elif op == 2:
            start = rng.randrange(len(text) + 1)
            text = text[:at] + text[start : start + rng.randrange(200)] + text[at:]
        elif op == 3:
            text = text[:at] + chr(rng.randrange(1, 0x110000)) + text[at:]
        else:  # a deeply nested flow value where a line starts
            line = text.rfind("\n", 0, at) + 1
            n = rng.choice([70, 300])
            text = text[:line] + "deep: " + "[" * n + "1" + "]" * n + "\n" + text[line:]
    return text


class _Hang(Exception):
    pass


def _on_alarm(_signum: int, _frame: Any) -> None:
    raise _Hang


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the repository's hook modules and the tests' hooks.py."""
    root = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(REPO / "configs" / "hooks", root / "hooks")
    (root / "hooks.py").write_text(HOOKS)
    for name, config in _seeds():  # warm the imports and check the seeds are fine
        path = root / f"seed-{name}"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        assert isinstance(load_config(path, env=ENV), Config)
    return root


def _mutants() -> Iterator[tuple[str, str]]:
    rng = random.Random(SEED)
    seeds = _seeds()
    for i in range(N_STRUCTURED):
        name, config = seeds[i % len(seeds)]
        text = yaml.safe_dump(
            _mutate(config, rng), sort_keys=False, allow_unicode=rng.random() < 0.5
        )
        yield f"{name}#{i}", text
    for i in range(N_TEXTUAL):
        name, config = seeds[i % len(seeds)]
        yield f"{name}#text{i}", _mutate_text(yaml.safe_dump(config, sort_keys=False), rng)


def _check_one(path: Path) -> str | None:
    """None if ``load_config`` behaved; otherwise what went wrong."""
    signal.setitimer(signal.ITIMER_REAL, 10 * CASE_LIMIT_S)
    start = time.process_time()  # CPU time: a loaded machine's waits do not count
    try:
        load_config(path, env=ENV)
    except ConfigError as e:
        if not e.problems or not all(p.location and p.message for p in e.problems):
            return f"unlocated problems: {e.problems}"
    except _Hang:
        return "hang (no answer within 10x the time bound)"
    except Exception as e:  # noqa: BLE001 - any other exception is the bug being looked for
        return f"{type(e).__name__}: {e}"[:300]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    seconds = time.process_time() - start
    return f"took {seconds:.2f} s of CPU" if seconds > CASE_LIMIT_S else None


def test_fuzzed_configs_end_in_config_or_config_error(project: Path) -> None:
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    failures = []
    count = 0
    try:
        for name, text in _mutants():
            path = project / "config.yml"
            path.write_text(text, encoding="utf-8", errors="surrogatepass")
            outcome = _check_one(path)
            count += 1
            if outcome is not None:
                failures.append(f"{name}: {outcome}")
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert count >= 1000
    assert not failures, f"{len(failures)} of {count} mutants:\n" + "\n".join(failures[:30])


def test_fuzzed_configs_through_the_cli(tmp_path: Path) -> None:
    """A handful of mutants through the real command: exit code 0 or 2, never a traceback."""
    shutil.copytree(REPO / "configs" / "hooks", tmp_path / "hooks")
    (tmp_path / "hooks.py").write_text(HOOKS)
    rng = random.Random(SEED + 1)
    seeds = _seeds()
    procs = []
    for i in range(3):
        name, config = seeds[i % len(seeds)]
        text = yaml.safe_dump(_mutate(config, rng), sort_keys=False)
        if i % 2:
            text = _mutate_text(text, rng)
        path = tmp_path / f"mutant{i}.yml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", RUN_CLI, "validate", str(path)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env={"PATH": "/usr/bin:/bin", **ENV},
            )
        )
    for proc in procs:
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode in (0, 2), output
        assert "Traceback" not in output, output
