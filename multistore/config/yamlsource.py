"""Parse a YAML config, keeping line numbers for messages and refusing duplicate keys.

Configs may come from anyone, so parsing is bounded: nesting depth and the number of
values after alias expansion are capped while the document is composed (a "billion
laughs" alias bomb or a self-referencing alias stops at once, with its line), and a
NUL byte or an over-long integer becomes a located problem, not a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from ..errors import Problem
from .locations import Location, render_location

_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"

# Real configs nest < 10 levels and hold a few hundred values.
MAX_DEPTH = 64
MAX_VALUES = 100_000


class _Refused(yaml.MarkedYAMLError):
    """The document is well-formed YAML but too deep, too large or recursive."""


if yaml.__with_libyaml__:  # libyaml scans and parses 5-10x faster than pure Python

    class _Events(yaml.cyaml.CParser):
        """Events from libyaml; composing stays in Python, where it can be bounded."""

else:  # pragma: no cover - PyYAML built without libyaml

    class _Events(Reader, Scanner, Parser):
        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)


class _Loader(Composer, _Events, SafeConstructor, Resolver):
    """A safe loader that keeps dates as strings and bounds what a document may expand to.

    Store open params (``time_range: [2020-01-01, 2021-01-01]``) expect
    strings, and the parsed config must stay JSON-compatible for the schema.
    """

    def __init__(self, stream: str) -> None:
        _Events.__init__(self, stream)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self._depth = 0
        self._values = 0  # values composed so far, each alias counted as its whole expansion
        self._sizes: dict[int, int] = {}  # id(node) -> expanded size, for finished nodes

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            target = self.anchors.get(event.anchor)
            if target is not None:
                size = self._sizes.get(id(target))
                if size is None:
                    raise _Refused(
                        problem=f"alias *{event.anchor} refers to a value that contains it "
                        "(recursive structures are not allowed)",
                        problem_mark=event.start_mark,
                    )
                self._count(size, event.start_mark)
            return super().compose_node(parent, index)
        start = self.peek_event().start_mark
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Refused(problem=f"nested more than {MAX_DEPTH} levels deep", problem_mark=start)
        before = self._values
        self._count(1, start)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        self._sizes[id(node)] = self._values - before
        return node

    def _count(self, n: int, mark: yaml.Mark) -> None:
        self._values += n
        if self._values > MAX_VALUES:
            raise _Refused(
                problem=f"the document expands to more than {MAX_VALUES} values (through aliases?)",
                problem_mark=mark,
            )


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP_TAG]
    for first, resolvers in Resolver.yaml_implicit_resolvers.items()
}


@dataclass
class ParsedYaml:
    data: Any
    lines: dict[Location, int] = field(default_factory=dict)  # 1-based line of each value
    problems: list[Problem] = field(default_factory=list)


def parse_yaml(text: str, name: str = "<config>") -> ParsedYaml:
    """Parse one YAML document; syntax errors become problems with line and column."""
    loader: _Loader | None = None
    try:
        loader = _Loader(text)  # checks every character: a NUL byte fails here
        loader.name = name
        node = loader.get_single_node()
        if node is None:
            return ParsedYaml(None, problems=[Problem("line 1", "the config is empty")])
        parsed = ParsedYaml(None)
        _index(node, (), parsed)
        try:
            parsed.data = loader.construct_document(node)
        except ValueError as e:  # int() of a number with more digits than Python converts
            reason = str(e).split(":")[0]
            where = f"line {node.start_mark.line + 1}"
            return ParsedYaml(None, problems=[Problem(where, f"cannot read a value: {reason}")])
        return parsed
    except _Refused as e:
        return ParsedYaml(None, problems=[Problem(_where(e.problem_mark), str(e.problem))])
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        what = " ".join(part for part in (e.context, e.problem) if part)
        return ParsedYaml(None, problems=[Problem(_where(mark), f"YAML syntax error: {what}")])
    except yaml.reader.ReaderError as e:
        position = e.position
        if yaml.__with_libyaml__:  # libyaml counts bytes of the UTF-8 text, not characters
            position = len(text.encode("utf-8")[:position].decode("utf-8", "ignore"))
        line = text.count("\n", 0, position) + 1
        column = position - (text.rfind("\n", 0, position) + 1) + 1
        return ParsedYaml(
            None,
            problems=[
                Problem(
                    f"line {line}, column {column}",
                    f"character #x{e.character:04x} is not allowed in YAML",
                )
            ],
        )
    except yaml.YAMLError as e:
        return ParsedYaml(None, problems=[Problem("line 1", f"YAML error: {e}")])
    except UnicodeEncodeError as e:  # a lone surrogate (e.g. from a command-line argument)
        line = text.count("\n", 0, e.start) + 1
        return ParsedYaml(None, problems=[Problem(f"line {line}", "text is not valid Unicode")])
    finally:
        if loader is not None:
            loader.dispose()


def _where(mark: yaml.Mark | None) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark else "line 1"


def _index(node: yaml.Node, path: Location, parsed: ParsedYaml) -> None:
    """Record line numbers and report keys given twice (PyYAML silently keeps the last).

    Iterative: the composer bounds depth and size, but a walk must not rely on that.
    """
    stack: list[tuple[yaml.Node, Location]] = [(node, path)]
    while stack:
        node, path = stack.pop()
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
                stack.append((value_node, (*path, key)))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, (*path, i)) for i, item in enumerate(node.value))
