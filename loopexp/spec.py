"""Experiment specs: the YAML files in ``experiments/``, validated with pydantic.

A spec says what is tested (variants), on whom (audience segments), how it is judged (primary
metric, guardrails, decision rule) and where it came from (campaign, iteration, parent MLflow run).
Errors name the file, the line and the field, and say what to do.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from loopexp.metrics.definitions import HOLDOUT, LIBRARY, MetricDef, resolve_metric

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


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Variant(_Model):
    """One arm of the test: what the recipients of this arm receive."""

    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")]
    description: str = ""
    subject: str | None = None
    content: str | None = None
    send_time: str | None = Field(default=None, description="local send time, HH:MM")
    weight: Annotated[float, Field(gt=0)] = 1.0


class Audience(_Model):
    """Who is in the test."""

    segments: list[Segment] = Field(default_factory=lambda: list(Segment), min_length=1)
    holdout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    """Share of the audience that is assigned to no mail at all (the ``holdout`` group)."""


class Guardrail(_Model):
    """A metric that must not get worse: it can veto a winner."""

    metric: str
    max_relative_increase: Annotated[float, Field(ge=0)] = 0.0
    """Veto when the challenger's increase is significantly above this relative margin."""

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, name: str, info: ValidationInfo) -> str:
        # The spec's own `metrics:` reach here through the validation context (parse_spec); the
        # spec-level check below is the authoritative one when there is no context.
        if info.context is None:
            return name
        return _check_metric(name, info.context.get("custom_metrics", ()))


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
    metrics: list[MetricDef] = Field(default_factory=list)
    """Metrics this spec defines (beyond the standard library, loopexp.metrics.LIBRARY)."""
    primary_metric: str = "click_rate"
    secondary_metrics: list[str] = Field(default_factory=list)
    guardrails: list[Guardrail] = Field(default_factory=list)
    decision: DecisionRule = Field(default_factory=DecisionRule)
    planned_recipients_per_variant: Annotated[int, Field(ge=1)] | None = None
    backlog: list[Variant] = Field(default_factory=list)
    """Challengers waiting for a later iteration; ``loop.next_spec`` draws from here."""
    parent_run_id: str | None = None

    @field_validator("metrics")
    @classmethod
    def _metrics_new(cls, defs: list[MetricDef]) -> list[MetricDef]:
        names = [d.name for d in defs]
        clash = sorted({n for n in names if n in LIBRARY or names.count(n) > 1})
        if clash:
            raise ValueError(
                f"metric name(s) {clash} repeat or are standard metrics; give them new names"
            )
        return defs

    @field_validator("primary_metric")
    @classmethod
    def _primary_known(cls, name: str, info: ValidationInfo) -> str:
        return _check_metric(name, [d.name for d in info.data.get("metrics", [])])

    @field_validator("secondary_metrics")
    @classmethod
    def _secondary_known(cls, names: list[str], info: ValidationInfo) -> list[str]:
        custom = [d.name for d in info.data.get("metrics", [])]
        return [_check_metric(n, custom) for n in names]

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
        for g in self.guardrails:
            _check_metric(g.metric, [d.name for d in self.metrics])
        backlog_clash = sorted({b.id for b in self.backlog} & set(ids))
        if backlog_clash:
            raise ValueError(f"backlog ids {backlog_clash} are already variants of this iteration")
        return self

    @property
    def challengers(self) -> list[Variant]:
        """The variants compared against the control."""
        return [v for v in self.variants if v.id != self.control]

    @property
    def all_metrics(self) -> list[str]:
        """Primary, secondary and guardrail metrics, each once, primary first."""
        names = [self.primary_metric, *self.secondary_metrics, *(g.metric for g in self.guardrails)]
        return list(dict.fromkeys(names))

    def metric(self, name: str) -> MetricDef:
        """The definition of metric ``name``: this spec's own first, else the standard library."""
        return resolve_metric(name, self.metrics)

    @property
    def metric_defs(self) -> list[MetricDef]:
        """Definitions of :attr:`all_metrics`, in that order (what the engines compute)."""
        return [self.metric(n) for n in self.all_metrics]

    def expected_shares(self) -> dict[str, float]:
        """Expected share of the audience per group, holdout included when there is one."""
        mailed = 1.0 - self.audience.holdout
        total = sum(v.weight for v in self.variants)
        shares = {v.id: mailed * v.weight / total for v in self.variants}
        if self.audience.holdout > 0:
            shares[HOLDOUT] = self.audience.holdout
        return shares

    def sha256(self) -> str:
        """Fingerprint of the spec's content (canonical JSON), for lineage."""
        # A spec without its own metrics fingerprints as before the `metrics:` section existed.
        exclude = None if self.metrics else {"metrics"}
        return hashlib.sha256(self.model_dump_json(exclude=exclude).encode()).hexdigest()

    def to_yaml(self) -> str:
        """Render as YAML in declaration order; defaults included, unset (null) fields left out."""
        data = self.model_dump(mode="json", exclude_none=True)
        if not self.metrics:
            del data["metrics"]
        return yaml.safe_dump(
            data,
            sort_keys=False,
            allow_unicode=True,
            width=100,
        )


def _check_metric(name: str, custom: list[str] | tuple[str, ...] = ()) -> str:
    if name not in LIBRARY and name not in custom:
        known = sorted({*LIBRARY, *custom})
        raise ValueError(f"unknown metric {name!r}; known metrics: {known}")
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
        metrics = data.get("metrics")
        custom = (
            [m["name"] for m in metrics if isinstance(m, dict) and isinstance(m.get("name"), str)]
            if isinstance(metrics, list)
            else []
        )
        return ExperimentSpec.model_validate(data, context={"custom_metrics": custom})
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
