"""Check a ``custom_processing`` hook without running it: the file exists, parses, and
defines the function at import time (read with ``ast``)."""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any

from .checker import Checker, first_line
from .locations import Location
from .resolve import find_module_file, module_path_candidates

# Hook modules are parsed (never run) here; a real one is a few KB.
MAX_HOOK_BYTES = 10 * 2**20


def check_hook(checker: Checker, path: Location, hook: Any) -> None:
    if not isinstance(hook, Mapping) or not checker.clean(path):
        return
    module_path, function_name = hook["module_path"], hook["function_name"]
    file = find_module_file(module_path, checker.base_dir)
    if file is None:
        tried = ", ".join(str(p) for p in module_path_candidates(module_path, checker.base_dir))
        checker.add((*path, "module_path"), f"module file not found (looked for {tried})")
        return
    try:
        with file.open("rb") as f:
            source = f.read(MAX_HOOK_BYTES + 1)
        if len(source) > MAX_HOOK_BYTES:
            checker.add(
                (*path, "module_path"),
                f"{file} is larger than {MAX_HOOK_BYTES // 2**20} MB: not a hook module",
            )
            return
        tree = ast.parse(source, filename=str(file))
    except (SyntaxError, ValueError) as e:
        line = f" (line {e.lineno})" if getattr(e, "lineno", None) else ""
        checker.add((*path, "module_path"), f"cannot parse {file}: {first_line(e)}{line}")
        return
    except (RecursionError, MemoryError):  # CPython's parser on e.g. 1+1+...+1 (100k terms)
        checker.add(
            (*path, "module_path"),
            f"cannot parse {file}: an expression is nested too deeply for Python",
        )
        return
    except OSError as e:
        checker.add((*path, "module_path"), f"cannot read {file}: {e.strerror or e}")
        return
    names, star_import = _top_level_names(tree.body)
    if function_name not in names and not star_import:
        functions = sorted(
            n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        )
        hint = f" (functions: {', '.join(functions)})" if functions else ""
        checker.add((*path, "function_name"), f"{function_name!r} is not defined in {file}{hint}")


def _top_level_names(body: list[ast.stmt]) -> tuple[set[str], bool]:
    """Names a module defines at import time, including inside top-level if/try/with blocks."""
    names: set[str] = set()
    star = False
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                names |= _target_names(target)
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            names |= _target_names(node.target)
        elif isinstance(node, ast.Import):
            names |= {a.asname or a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            star = star or any(a.name == "*" for a in node.names)
            names |= {a.asname or a.name for a in node.names if a.name != "*"}
        else:
            for block in _sub_blocks(node):
                sub_names, sub_star = _top_level_names(block)
                names |= sub_names
                star = star or sub_star
    return names, star


def _sub_blocks(node: ast.stmt) -> list[list[ast.stmt]]:
    if isinstance(node, ast.If | ast.For | ast.While):
        return [node.body, node.orelse]
    if isinstance(node, ast.With):
        return [node.body]
    if isinstance(node, ast.Try):
        return [node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)]
    return []


def _target_names(target: ast.expr) -> set[str]:
    if isinstance(target, ast.Name):
        return {target.id}
    if isinstance(target, ast.Tuple | ast.List):
        return set().union(*(_target_names(t) for t in target.elts))
    return set()
