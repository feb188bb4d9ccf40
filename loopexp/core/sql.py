"""Text inside SQL: the one quoting rule every generated statement uses.

DuckDB and Spark SQL both write a quote inside a string literal as two quotes; loopexp builds its
statements as text (paths, reasons, regular expressions, provider values), so each of them goes
through these two functions.
"""

from __future__ import annotations


def sql_escape(text: object) -> str:
    """``text`` (a path, any value) made safe to stand between single quotes."""
    return str(text).replace("'", "''")


def sql_string(text: object) -> str:
    """``text`` as a single-quoted SQL string literal."""
    return f"'{sql_escape(text)}'"
