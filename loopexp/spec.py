"""Experiment specs: the YAML files in ``experiments/``, validated with pydantic.

A spec says what is tested (variants), on whom (audience segments), how it is judged (primary
metric, guardrails, decision rule) and where it came from (campaign, iteration, parent MLflow run).
Errors name the file, the line and the field, and say what to do.
"""

from __future__ import annotations

import hashlib
import itertools
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from loopexp.metrics.definitions import HOLDOUT, METRICS

SPEC_SCHEMA_VERSION = 1


class Segment(StrEnum):
    """Lifecycle segments of an email audience."""

    PROSPECT = "prospect"
    NEW_CUSTOMER = "new_customer"
    EXISTING_CUSTOMER = "existing_customer"
    INACTIVE = "inactive"


class TestType(StrEnum):
    """What the variants differ in."""

    __test__ = False  # not a pytest class

    SUBJECT_LINE = "subject_line"
    CONTENT = "content"
    SEND_TIME = "send_time"
    PREHEADER = "preheader"
    FROM_NAME = "from_name"
    MULTIVARIATE = "multivariate"
    """Factorial: ``factors`` with levels; the variants are the cells (every combination)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Variant(_Model):
    """One arm of the test: what the recipients of this arm receive."""

    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")]
    description: str = ""
    subject: str | None = None
    preheader: str | None = None
    """The preview text shown after the subject in the inbox."""
    from_name: str | None = None
    """The sender's display name."""
    content: str | None = None
    send_time: str | None = Field(default=None, description="local send time, HH:MM")
    weight: Annotated[float, Field(gt=0)] = 1.0
    cell: dict[str, str] | None = None
    """For a multivariate (factorial) test: the level of each factor this cell combines."""


class FactorLevel(_Model):
    """One level of a factor: the message fields it sets in every cell that has it."""

    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_]{0,19}$")]
    description: str = ""
    subject: str | None = None
    preheader: str | None = None
    from_name: str | None = None
    content: str | None = None
    send_time: str | None = None


class Factor(_Model):
    """A factor of a multivariate (factorial) test, e.g. ``subject`` with two levels."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,19}$")]
    levels: Annotated[list[FactorLevel], Field(min_length=2)]


#: Message fields a factor level can set.
_LEVEL_FIELDS = ("subject", "preheader", "from_name", "content", "send_time")


def factorial_cells(factors: list[Factor]) -> list[dict[str, Any]]:
    """The variants (as dicts) of a full factorial design: one per combination of levels.

    A cell's id joins its level ids with ``-`` in factor order (``plain-grid``); the first cell
    (every factor at its first level) is the natural control.
    """
    cells = []
    for combo in itertools.product(*(f.levels for f in factors)):
        cell: dict[str, Any] = {
            "id": "-".join(level.id for level in combo),
            "description": ", ".join(
                f"{f.name}={level.id}" for f, level in zip(factors, combo, strict=True)
            ),
            "cell": {f.name: level.id for f, level in zip(factors, combo, strict=True)},
        }
        for level in combo:
            for name in _LEVEL_FIELDS:
                value = getattr(level, name)
                if value is None:
                    continue
                if name in cell:
                    raise ValueError(
                        f"two factors set {name!r} (level {level.id!r} and another); each message "
                        "field may belong to one factor only"
                    )
                cell[name] = value
        cells.append(cell)
    return cells


class RecipientColumns(_Model):
    """Which columns of a recipient list (CSV or Parquet) hold what.

    The key is the ``id`` column as is, or else the keyed hash of the ``email`` column (see
    :mod:`loopexp.keys`); with neither set, a ``recipient_key`` column is used as the id, or an
    ``email`` column as the address.
    """

    id: str | None = None
    """A recipient id column used as the recipient key as is (e.g. the ESP's or the CRM's id)."""
    email: str | None = None
    """The e-mail address column: hashed into the key, and written only to the send lists."""
    segment: str = "segment"
    """The team's segment label; mapped to a lifecycle segment by ``audience.segment_map``."""
    consent: str | None = None
    """Double opt-in flag (true/false, yes/no, 1/0): rows without consent are excluded."""
    suppressed: str | None = None
    """Suppression flag (true/false, yes/no, 1/0): a key suppressed on any row is excluded."""


class Audience(_Model):
    """Who is in the test."""

    segments: list[Segment] = Field(default_factory=lambda: list(Segment), min_length=1)
    holdout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    """Share of the audience that is assigned to no mail at all (the ``holdout`` group)."""
    segment_map: dict[str, Segment] = Field(default_factory=dict)
    """The team's own segment labels → lifecycle segments, e.g. ``Existing Customer:
    existing_customer``. The lifecycle names themselves need no entry."""
    unmapped_segments: Literal["error", "exclude"] = "error"
    """A label that is neither a lifecycle segment nor in ``segment_map``: stop with an error
    (default), or exclude those recipients with the reason ``unmapped_segment``."""
    columns: RecipientColumns = Field(default_factory=RecipientColumns)
    filters: dict[str, list[str]] = Field(default_factory=dict)
    """Free filters: column → the values (as text) a recipient must have to be in the test."""
    exclude_tested_within_days: Annotated[int, Field(ge=1)] | None = None
    """Exclude recipients who got a test mail in the last N days (needs a contact history)."""

    def lifecycle_segment(self, label: str) -> Segment | None:
        """The lifecycle segment a list's label stands for, or None when it is unmapped."""
        if label in self.segment_map:
            return self.segment_map[label]
        try:
            return Segment(label)
        except ValueError:
            return None


class Guardrail(_Model):
    """A metric that must not get worse: it can veto a winner."""

    metric: str
    max_relative_increase: Annotated[float, Field(ge=0)] = 0.0
    """Veto when the challenger's increase is significantly above this relative margin."""

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, name: str) -> str:
        return _check_metric(name)


class DecisionRule(_Model):
    """How the analysis turns statistics into a decision."""

    alpha: Annotated[float, Field(gt=0, lt=0.5)] = 0.05
    power: Annotated[float, Field(gt=0.5, lt=1)] = 0.8
    mde_relative: Annotated[float, Field(gt=0)] = 0.10
    """Smallest relative lift of the primary metric worth acting on."""
    correction: Literal["holm", "bonferroni", "fdr_bh", "none"] = "holm"
    srm_alpha: Annotated[float, Field(gt=0, lt=0.5)] = 0.001


class ExperimentSpec(_Model):
    """A complete, validated experiment spec (one iteration of one campaign)."""

    schema_version: Literal[1] = SPEC_SCHEMA_VERSION
    name: Annotated[str, Field(min_length=1)]
    campaign: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    iteration: Annotated[int, Field(ge=1)] = 1
    test_type: TestType
    description: str = ""
    salt: Annotated[str, Field(min_length=1)]
    control: str
    variants: Annotated[list[Variant], Field(min_length=2)]
    audience: Audience = Field(default_factory=Audience)
    primary_metric: str = "click_rate"
    secondary_metrics: list[str] = Field(default_factory=list)
    guardrails: list[Guardrail] = Field(default_factory=list)
    decision: DecisionRule = Field(default_factory=DecisionRule)
    planned_recipients_per_variant: Annotated[int, Field(ge=1)] | None = None
    backlog: list[Variant] = Field(default_factory=list)
    """Challengers waiting for a later iteration; ``loop.next_spec`` draws from here."""
    parent_run_id: str | None = None
    factors: list[Factor] | None = None
    """Multivariate (factorial) tests only: the factors; ``variants`` may then be left out and
    are generated as every combination of levels (see :func:`factorial_cells`)."""

    @model_validator(mode="before")
    @classmethod
    def _factorial_cells(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not data.get("factors") or data.get("variants"):
            return data
        factors = [Factor.model_validate(f) for f in data["factors"]]
        cells = factorial_cells(factors)
        return {**data, "variants": cells, "control": data.get("control") or cells[0]["id"]}

    @field_validator("primary_metric")
    @classmethod
    def _primary_known(cls, name: str) -> str:
        return _check_metric(name)

    @field_validator("secondary_metrics")
    @classmethod
    def _secondary_known(cls, names: list[str]) -> list[str]:
        return [_check_metric(n) for n in names]

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentSpec:
        ids = [v.id for v in self.variants]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"variant ids must be unique; repeated: {dupes}")
        if HOLDOUT in ids:
            raise ValueError(f"{HOLDOUT!r} is reserved for the no-mail group; rename that variant")
        if self.control not in ids:
            raise ValueError(f"control {self.control!r} is not one of the variants {ids}")
        self._check_factorial()
        backlog_clash = sorted({b.id for b in self.backlog} & set(ids))
        if backlog_clash:
            raise ValueError(f"backlog ids {backlog_clash} are already variants of this iteration")
        return self

    def _check_factorial(self) -> None:
        is_mvt = self.test_type == TestType.MULTIVARIATE
        if is_mvt and not self.factors:
            raise ValueError("a multivariate test needs `factors:` (each with two or more levels)")
        if self.factors and not is_mvt:
            raise ValueError("`factors:` belongs to test_type multivariate; remove it or set that")
        if not self.factors:
            return
        names = [f.name for f in self.factors]
        if len(set(names)) != len(names):
            raise ValueError(f"factor names must be unique; got {names}")
        expected = {c["id"]: c["cell"] for c in factorial_cells(self.factors)}
        got = {v.id: v.cell for v in self.variants}
        if got != expected:
            raise ValueError(
                "the variants of a multivariate test are the cells of its factors; leave "
                f"`variants:` out to generate them (expected cells {sorted(expected)})"
            )

    @property
    def challengers(self) -> list[Variant]:
        """The variants compared against the control."""
        return [v for v in self.variants if v.id != self.control]

    @property
    def all_metrics(self) -> list[str]:
        """Primary, secondary and guardrail metrics, each once, primary first."""
        names = [self.primary_metric, *self.secondary_metrics, *(g.metric for g in self.guardrails)]
        return list(dict.fromkeys(names))

    def expected_shares(self) -> dict[str, float]:
        """Expected share of the audience per group, holdout included when there is one."""
        mailed = 1.0 - self.audience.holdout
        total = sum(v.weight for v in self.variants)
        shares = {v.id: mailed * v.weight / total for v in self.variants}
        if self.audience.holdout > 0:
            shares[HOLDOUT] = self.audience.holdout
        return shares

    def sha256(self) -> str:
        """Fingerprint of the spec's content (canonical JSON), for lineage.

        Fields added after schema 1 was first fingerprinted are left out while they hold their
        default, so a spec that does not use them keeps the fingerprint recorded in earlier runs.
        """
        return hashlib.sha256(
            self.model_dump_json(exclude=self._defaulted_new_fields()).encode()
        ).hexdigest()

    def _defaulted_new_fields(self) -> dict[str, Any]:
        exclude: dict[str, Any] = {}
        audience = {
            name
            for name in _NEW_AUDIENCE_FIELDS
            if getattr(self.audience, name)
            == Audience.model_fields[name].get_default(call_default_factory=True)
        }
        if audience:
            exclude["audience"] = audience
        if self.factors is None:
            exclude["factors"] = True
        variant_fields = {
            i: {n for n in _NEW_VARIANT_FIELDS if getattr(v, n) is None}
            for i, v in enumerate(self.variants)
        }
        backlog_fields = {
            i: {n for n in _NEW_VARIANT_FIELDS if getattr(v, n) is None}
            for i, v in enumerate(self.backlog)
        }
        exclude["variants"] = variant_fields
        if backlog_fields:
            exclude["backlog"] = backlog_fields
        return exclude

    def to_yaml(self) -> str:
        """Render as YAML in declaration order; defaults included, unset (null) fields left out.

        The audience fields added for recipient lists are left out while at their defaults.
        """
        return yaml.safe_dump(
            self.model_dump(mode="json", exclude_none=True, exclude=self._defaulted_new_fields()),
            sort_keys=False,
            allow_unicode=True,
            width=100,
        )


#: Fields added after the first fingerprints were recorded (see ``ExperimentSpec.sha256``).
_NEW_AUDIENCE_FIELDS = (
    "segment_map",
    "unmapped_segments",
    "columns",
    "filters",
    "exclude_tested_within_days",
)
_NEW_VARIANT_FIELDS = ("preheader", "from_name", "cell")


def _check_metric(name: str) -> str:
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; known metrics: {sorted(METRICS)}")
    return name


class SpecError(ValueError):
    """A spec file that cannot be used, with every problem located in the file."""

    def __init__(self, path: Path | str, problems: list[str]):
        self.path = Path(path)
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"{self.path}: invalid experiment spec ({len(problems)} problem(s)):\n{lines}\n"
            "Fix the fields above; `loopexp validate FILE` checks a spec without running it."
        )


def load_spec(path: str | Path) -> ExperimentSpec:
    """Read and validate a YAML spec; raise :class:`SpecError` naming file, line and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(path, ["file not found"]) from None
    return parse_spec(text, source=path)


def parse_spec(text: str, source: str | Path = "<string>") -> ExperimentSpec:
    """Validate YAML text as a spec; ``source`` names it in error messages."""
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(source, [f"not valid YAML: {exc}"]) from None
    if not isinstance(data, dict):
        raise SpecError(source, ["the top level must be a mapping of fields (name: ..., ...)"])
    try:
        return ExperimentSpec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = err["loc"]
            where = _format_loc(loc)
            line = _line_of(root, loc)
            prefix = f"line {line}: " if line else ""
            problems.append(f"{prefix}{where or '(spec)'}: {err['msg']}")
        raise SpecError(source, problems) from None


def write_spec(spec: ExperimentSpec, path: str | Path) -> Path:
    """Write a spec as YAML (creating folders), and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(spec.to_yaml(), encoding="utf-8")
    return path


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
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
