"""Spec file problems worded for the person who wrote the file (not for PyYAML's authors).

PyYAML names the text ``<unicode string>`` and reports an unclosed quote where its parser gave
up, often lines later; a mistyped file name deserves the name that was meant.
"""

from __future__ import annotations

from pathlib import Path

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
