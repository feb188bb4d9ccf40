"""Spec file problems worded for the person who wrote the file (not for PyYAML's authors).

PyYAML names the text ``<unicode string>`` and reports an unclosed quote where its parser gave
up, often lines later; a mistyped file name deserves the name that was meant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def did_you_mean(path: Path) -> str:
    """``"; did you mean 'experiments/x.yaml'?"`` for the closest name in the folder, or ""."""
    import difflib  # noqa: PLC0415 (only on error)

    folder = path.parent
    names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
    close = difflib.get_close_matches(path.name, names, n=1)
    return f"; did you mean {str(folder / close[0])!r}?" if close else ""


def yaml_problem(text: str, exc: yaml.YAMLError) -> str:
    """A YAML error as a reader wants it: the line it starts on, what is wrong, how to fix it.

    PyYAML names the text ``<unicode string>`` and reports an unclosed quote where the parser
    gave up, often lines later: an unbalanced quote on an earlier line is named first.
    """
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    last = mark.line if mark is not None else len(text.splitlines())
    for number, line in enumerate(text.splitlines()[: last + 1], start=1):
        value = line.split(": ", 1)[1] if ": " in line else line.lstrip(" -")
        for quote in ('"', "'"):
            if value.lstrip().startswith(quote) and value.count(quote) % 2 == 1:
                return (
                    f"line {number}: not valid YAML: the quote {quote} opened here is not "
                    f"closed; end the value with {quote}"
                )
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}not valid YAML: {problem}"


def duplicate_keys(node: yaml.Node | None) -> list[str]:
    """Every key that appears twice in one mapping (YAML keeps the last silently), with lines."""
    problems: list[str] = []
    stack = [node] if node is not None else []
    while stack:
        current = stack.pop()
        if isinstance(current, yaml.MappingNode):
            first: dict[Any, int] = {}
            for key, value in current.value:
                name = getattr(key, "value", None)
                line = key.start_mark.line + 1
                if isinstance(name, str) and name != "<<":
                    if name in first:
                        problems.append(
                            f"line {line}: duplicate key {name!r} (first at line {first[name]}); "
                            "keep one"
                        )
                    else:
                        first[name] = line
                stack.append(value)
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)
    return sorted(problems, key=lambda p: int(p.split(":")[0].removeprefix("line ")))


def format_loc(loc: tuple[Any, ...]) -> str:
    """A pydantic error location as a spec path: ``variants[1].subject``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the deepest YAML node on ``loc`` (YAML keeps marks; pydantic doesn't)."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            match = [(k, v) for k, v in node.value if getattr(k, "value", None) == part]
            if not match:
                return line
            key, node = match[0]
            line = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line
