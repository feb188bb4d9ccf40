"""The SQL dialects of the engines that read canonical events (DuckDB, Spark).

Split from :mod:`loopexp.events.validation` (which re-exports every name): the expressions where
DuckDB and Spark SQL differ, as sqlglot structures dialects: one :class:`Dialect` base and a
subclass per engine for the few expressions that differ. Validation's rules, metrics' compiler and
the send-scope rules (:mod:`loopexp.events.scope`) fill them in.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from loopexp.core.keys import EMAIL_PATTERN
from loopexp.core.sql import sql_string

DialectName = Literal["duckdb", "spark"]
#: What a source column's type means to the parser.
TypeClass = Literal["missing", "timestamptz", "timestamp", "numeric", "string", "boolean", "other"]


class Dialect:
    """The expressions where DuckDB and Spark SQL differ; everything else is shared SQL.

    A subclass per engine fills in the templates (``{x}`` an expression) and the few methods that
    are more than a template, as sqlglot's dialects do.
    """

    name: ClassVar[DialectName]
    quote_char: ClassVar[str]
    #: Canonical Arrow type (``str(field.type)``) → this dialect's SQL type.
    types: ClassVar[dict[str, str]]
    _marker: ClassVar[str]  # a named parameter ({key})
    _epoch: ClassVar[str]  # seconds since the epoch of a timestamp, as a double
    _replace_all: ClassVar[str]  # regexp_replace of every match ({x}, {pattern}, {replacement})
    _quantile: ClassVar[str]  # exact quantile with linear interpolation ({x}, {q})
    _is_finite: ClassVar[str]  # neither NaN nor ±infinity (NULL stays NULL)
    _from_micros: ClassVar[str]  # the UTC instant {x} (BIGINT) microseconds after the epoch
    _ts_literal: ClassVar[str]  # a UTC instant literal of an ISO date ({date})
    _full_match: ClassVar[str]  # whether all of {x} matches the regex literal {pattern}
    _search: ClassVar[str]  # whether some of {x} matches the regex literal {pattern}
    _contains_at: ClassVar[str]  # whether {x} contains an '@' (cheap, before the regex)
    _one_of: ClassVar[str]  # whether {x} is one of the literals {values} (comma-separated)
    #: The same where the query must keep its input's row order (ingest writes rows in order).
    _one_of_in_order: ClassVar[str]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def marker(self, key: str) -> str:
        """A named parameter marker."""
        return self._marker.format(key=key)

    def epoch(self, expr: str) -> str:
        """Seconds since the epoch of a timestamp, as a double."""
        return self._epoch.format(x=expr)

    def replace_all(self, expr: str, pattern: str, replacement: str) -> str:
        """``regexp_replace`` of every match (``pattern`` without quotes or backslashes)."""
        return self._replace_all.format(x=expr, pattern=pattern, replacement=replacement)

    def quantile(self, expr: str, q: float) -> str:
        """Exact quantile ``q`` of ``expr`` with linear interpolation (R type 7).

        ``q`` is inlined as a float literal: Spark needs a constant there.
        """
        return self._quantile.format(x=expr, q=repr(float(q)))

    def string(self, text: str) -> str:
        """A string literal of ``text``."""
        return sql_string(text)

    def cast(self, expr: str, sql_type: str, *, safe: bool = True) -> str:
        """``expr`` as ``sql_type``; NULL instead of an error when ``safe``."""
        return f"{'TRY_CAST' if safe else 'CAST'}({expr} AS {sql_type})"

    def null(self, arrow_type: str) -> str:
        """A typed NULL of a canonical column type."""
        return f"CAST(NULL AS {self.types[arrow_type]})"

    def is_finite(self, x: str) -> str:
        """Neither NaN nor ±infinity (NULL stays NULL)."""
        return self._is_finite.format(x=x)

    def timestamp_from_micros(self, x: str) -> str:
        """The UTC instant ``x`` (a BIGINT) microseconds after the epoch."""
        return self._from_micros.format(x=x)

    def timestamp_literal(self, date: str) -> str:
        """A UTC instant literal of an ISO date."""
        return self._ts_literal.format(date=date)

    def full_match(self, x: str, pattern: str) -> str:
        """Whether the whole of ``x`` matches ``pattern``."""
        return self._full_match.format(x=x, pattern=self.string(pattern))

    def one_of(self, x: str, values: tuple[str, ...], *, in_order: bool = False) -> str:
        """Whether ``x`` is one of the strings ``values`` (NULL when ``x`` is NULL).

        ``in_order``: the query's output must keep its input's row order.
        """
        template = self._one_of_in_order if in_order else self._one_of
        return template.format(x=x, values=", ".join(map(self.string, values)))

    def is_address(self, x: str) -> str:
        """Whether ``x`` contains an e-mail address (:data:`loopexp.core.keys.EMAIL_PATTERN`).

        The cheap '@' test first: the regex runs only on the rare value with an '@'.
        """
        search = self._search.format(x=x, pattern=self.string(EMAIL_PATTERN.pattern))
        return f"({self._contains_at.format(x=x)} AND {search})"

    def parse_timestamp_text(self, x: str) -> str:
        """A text timestamp that is not a number: ISO 8601 (any offset) or RFC 2822, else NULL."""
        raise NotImplementedError

    def type_class(self, sql_type: str) -> TypeClass:
        """What a source column of ``sql_type`` (as the engine describes it) means to the parser."""
        raise NotImplementedError


class DuckDB(Dialect):
    """DuckDB (sessions set to ``TimeZone = 'UTC'``)."""

    name = "duckdb"
    quote_char = '"'
    types: ClassVar[dict[str, str]] = {
        "string": "VARCHAR",
        "timestamp[us, tz=UTC]": "TIMESTAMPTZ",
        "bool": "BOOLEAN",
        "double": "DOUBLE",
    }
    _marker = "${key}"
    _epoch = "epoch({x})"
    _replace_all = "regexp_replace({x}, '{pattern}', '{replacement}', 'g')"
    _quantile = "quantile_cont({x}, {q})"
    _is_finite = "isfinite({x})"
    _from_micros = "make_timestamp({x})::TIMESTAMPTZ"
    _ts_literal = "TIMESTAMPTZ '{date}'"
    _full_match = "regexp_full_match({x}, {pattern})"
    _search = "regexp_matches({x}, {pattern})"
    _contains_at = "contains({x}, '@')"
    # IN for the engines: at 28.7 M events list_contains costs ~850 MiB more peak memory and ~20 %
    # more time (bench/house_pair.py). But an IN list is planned as a join, which need not keep
    # row order, so ingest (whose output keeps the input's order) uses list_contains.
    _one_of = "{x} IN ({values})"
    _one_of_in_order = "list_contains([{values}], {x})"
    _NUMERIC = frozenset(
        {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "FLOAT", "DOUBLE"}
        | {"UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT"}
    )
    #: Timestamp layouts a cast to TIMESTAMPTZ does not read (ISO 8601 it does, any offset).
    _TS_FORMATS = (
        "%a, %d %b %Y %H:%M:%S %z",  # RFC 2822 (SMTP Date, some webhook payloads)
        "%d %b %Y %H:%M:%S %z",
        "%Y-%m-%d %H:%M:%S %z",  # ISO with a space before the offset
        "%Y-%m-%d %H:%M:%S.%f %z",
    )

    def parse_timestamp_text(self, x: str) -> str:
        """A cast to TIMESTAMPTZ, else the layouts of ``_TS_FORMATS``."""
        formats = "[" + ", ".join(map(self.string, self._TS_FORMATS)) + "]"
        return f"coalesce(TRY_CAST({x} AS TIMESTAMPTZ), try_strptime(trim({x}), {formats}))"

    def type_class(self, sql_type: str) -> TypeClass:
        """The class of a type as DuckDB's ``DESCRIBE`` spells it."""
        t = sql_type.upper()
        if t == "TIMESTAMP WITH TIME ZONE":
            return "timestamptz"
        if t.startswith("TIMESTAMP") or t == "DATE":
            return "timestamp"
        if t in self._NUMERIC or t.startswith("DECIMAL"):
            return "numeric"
        return {"VARCHAR": "string", "BOOLEAN": "boolean"}.get(t, "other")


class Spark(Dialect):
    """Spark SQL (ANSI mode or not; sessions set to ``spark.sql.session.timeZone = UTC``)."""

    name = "spark"
    quote_char = "`"
    types: ClassVar[dict[str, str]] = {
        "string": "STRING",
        "timestamp[us, tz=UTC]": "TIMESTAMP",
        "bool": "BOOLEAN",
        "double": "DOUBLE",
    }
    _marker = ":{key}"
    _epoch = "(unix_micros({x}) / 1000000.0)"
    _replace_all = "regexp_replace({x}, '{pattern}', '{replacement}')"
    _quantile = "percentile({x}, {q})"
    _is_finite = "(NOT isnan({x}) AND abs({x}) <> CAST('Infinity' AS DOUBLE))"
    _from_micros = "timestamp_micros({x})"
    _ts_literal = "TIMESTAMP '{date} 00:00:00'"
    _full_match = "regexp_like({x}, concat('^(', {pattern}, ')$'))"
    _search = "regexp_like({x}, {pattern})"
    _contains_at = "(instr({x}, '@') > 0)"
    _one_of = "{x} IN ({values})"
    _one_of_in_order = _one_of  # Spark's IN keeps no order a caller relies on; ingest is DuckDB's
    _NUMERIC = frozenset(["tinyint", "smallint", "int", "bigint", "float", "double"])
    #: Java layouts of what DuckDB's TIMESTAMPTZ cast and ``_TS_FORMATS`` read beyond Spark's cast
    #: (Spark does not parse day names: RFC 2822's ``Mon,`` is dropped first).
    _TS_FORMATS = (
        "d MMM yyyy HH:mm:ss Z",
        "yyyy-MM-dd HH:mm:ss Z",
        "yyyy-MM-dd HH:mm:ss.SSSSSS Z",
    )

    def string(self, text: str) -> str:
        """A string literal: Spark unescapes backslashes in literals (and quotes are escaped)."""
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"

    def parse_timestamp_text(self, x: str) -> str:
        """A cast to TIMESTAMP, else the Java layouts of ``_TS_FORMATS``."""
        text = f"regexp_replace(trim({x}), '^[A-Za-z]{{3}}, *', '')"
        layouts = ", ".join(f"try_to_timestamp({text}, {self.string(f)})" for f in self._TS_FORMATS)
        return f"coalesce(try_cast(trim({x}) AS TIMESTAMP), {layouts})"

    def type_class(self, sql_type: str) -> TypeClass:
        """The class of a type as Spark's ``DataFrame.dtypes`` spells it."""
        t = sql_type.lower()
        if t == "timestamp":
            return "timestamptz"
        if t in ("timestamp_ntz", "date"):
            return "timestamp"
        if t in self._NUMERIC or t.startswith("decimal"):
            return "numeric"
        if t == "string" or t.startswith(("varchar", "char")):
            return "string"
        return "boolean" if t == "boolean" else "other"


DUCKDB = DuckDB()
SPARK = Spark()
