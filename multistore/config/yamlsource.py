"""Parse a YAML config, keeping line numbers for messages and refusing duplicate keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from ..errors import Problem
from .locations import Location, render_location

_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps dates as strings.

    Store open params (``time_range: [2020-01-01, 2021-01-01]``) expect
    strings, and the parsed config must stay JSON-compatible for the schema.
    """


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass
class ParsedYaml:
    data: Any
    lines: dict[Location, int] = field(default_factory=dict)  # 1-based line of each value
    problems: list[Problem] = field(default_factory=list)


def parse_yaml(text: str, name: str = "<config>") -> ParsedYaml:
    """Parse one YAML document; syntax errors become problems with line and column."""
    loader = _Loader(text)
    loader.name = name
    try:
        node = loader.get_single_node()
        if node is None:
            return ParsedYaml(None, problems=[Problem("", "the config is empty")])
        parsed = ParsedYaml(None)
        _index(node, (), parsed)
        parsed.data = loader.construct_document(node)
        return parsed
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = " ".join(part for part in (e.context, e.problem) if part)
        return ParsedYaml(None, problems=[Problem(where, f"YAML syntax error: {what}")])
    except yaml.YAMLError as e:
        return ParsedYaml(None, problems=[Problem("", f"YAML error: {e}")])
    finally:
        loader.dispose()


def _index(node: yaml.Node, path: Location, parsed: ParsedYaml) -> None:
    """Record line numbers and report keys given twice (PyYAML silently keeps the last)."""
    parsed.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.value == "<<":
                continue
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                parsed.problems.append(
                    Problem(
                        render_location((*path, key)),
                        f"duplicate key {key!r} (lines {seen[key]} and {line})",
                    )
                )
                continue
            seen[key] = line
            parsed.lines[(*path, key)] = line
            _index(value_node, (*path, key), parsed)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(item, (*path, i), parsed)
