"""Experiment specs: the YAML files in ``experiments/``, validated with pydantic.

A spec says what is tested (variants), on whom (audience segments), how it is judged (primary
metric, guardrails, decision rule) and where it came from (campaign, iteration, parent MLflow run).
Errors name the file, the line and the field, and say what to do. The parts a spec is made of
(variants, audience, guardrails, rules) are in :mod:`loopexp.design.parts`.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from loopexp.core.errors import InputError
from loopexp.design.flow import FlowSpec, check_flow_spec
from loopexp.design.parts import (
    AllocationSettings,
    Audience,
    DataRules,
    DecisionRule,
    EventsSource,
    Factor,
    Guardrail,
    SendTimeSettings,
    SpecModel,
    TestType,
    Variant,
    check_metric,
    factorial_cells,
)
from loopexp.design.policy import PolicySettings
from loopexp.design.problems import (
    did_you_mean,
    duplicate_keys,
    format_loc,
    line_of,
    yaml_problem,
)
from loopexp.events.config import IngestConfig
from loopexp.metrics.definitions import HOLDOUT, LIBRARY, MetricDef, resolve_metric

SPEC_SCHEMA_VERSION = 1


class ExperimentSpec(SpecModel):
    """A complete, validated experiment spec (one iteration of one campaign)."""

    schema_version: Literal[1] = SPEC_SCHEMA_VERSION
    name: Annotated[str, Field(min_length=1, max_length=200)]
    campaign: Annotated[str, Field(max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    iteration: Annotated[int, Field(ge=1, le=100_000)] = 1
    test_type: TestType
    description: str = ""
    salt: Annotated[str, Field(min_length=1, max_length=200)]
    control: str
    variants: Annotated[list[Variant], Field(min_length=2)]
    audience: Audience = Field(default_factory=Audience)
    metrics: list[MetricDef] = Field(default_factory=list)
    """Metrics this spec defines (beyond the standard library, loopexp.metrics.LIBRARY)."""
    primary_metric: str = "click_rate"
    secondary_metrics: list[str] = Field(default_factory=list)
    guardrails: list[Guardrail] = Field(default_factory=list)
    decision: DecisionRule = Field(default_factory=DecisionRule)
    data: DataRules = Field(default_factory=DataRules)
    planned_recipients_per_variant: Annotated[int, Field(ge=1)] | None = None
    enrolment: Literal["one_off", "continuous"] = "one_off"
    """``one_off``: one send to the whole list. ``continuous``: a step of a lifecycle flow
    (welcome, cart abandonment, reactivation) whose recipients enter over time and are analysed as
    they accumulate; its decision method defaults to ``sequential``."""
    covariates: list[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")]] = Field(
        default_factory=list
    )
    """Pre-period covariates for regression adjustment (CUPED / multi-covariate): columns of the
    assignment known before the send (e.g. ``pre_opens``, ``pre_clicks`` over 90 days); the
    engine returns their sums with each non-ratio metric and the analysis adjusts on them."""
    backlog: list[Variant] = Field(default_factory=list)
    """Challengers waiting for a later iteration; ``loop.next_spec`` draws from here."""
    parent_run_id: str | None = None
    factors: list[Factor] | None = None
    """Multivariate (factorial) tests only: the factors; ``variants`` may then be left out and
    are generated as every combination of levels (see :func:`factorial_cells`)."""
    ingest: IngestConfig | None = None
    """How ``loopexp ingest`` reads this campaign's ESP exports (variant field, bot thresholds)."""
    events: EventsSource | None = None
    """The ESP export folder ``loopexp run`` ingests when no ``--events`` is given."""
    send_time: SendTimeSettings | None = None
    """Send slots randomised beside the variants, or learned windows per segment (see
    :class:`SendTimeSettings`); None: one send for everyone."""
    allocation: AllocationSettings | None = None
    """Adaptive weights written into each next spec; None: the variants keep their weights."""
    flow: FlowSpec | None = None
    """A test of an automation flow (test_type ``flow``): trigger, steps, the split node tested
    and the conversion window (see :mod:`loopexp.design.flow`); None: a single mail."""
    policy: PolicySettings | None = None
    """A per-recipient policy learned from an earlier send (issue 27): rules giving each
    recipient's variant, with an exploration share randomised uniformly; None: the weights split."""

    @model_validator(mode="before")
    @classmethod
    def _factorial_cells(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not data.get("factors") or data.get("variants"):
            return data
        factors = [Factor.model_validate(f) for f in data["factors"]]
        cells = factorial_cells(factors)
        return {**data, "variants": cells, "control": data.get("control") or cells[0]["id"]}

    @field_validator("name")
    @classmethod
    def _one_line(cls, name: str) -> str:
        # A newline or control character could forge lines in reports and run descriptions.
        if re.search(r"[\x00-\x1f\x7f]", name):
            raise ValueError("must be one line, without newlines, tabs or control characters")
        return name

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
        return check_metric(name, [d.name for d in info.data.get("metrics", [])])

    @field_validator("secondary_metrics")
    @classmethod
    def _secondary_known(cls, names: list[str], info: ValidationInfo) -> list[str]:
        custom = [d.name for d in info.data.get("metrics", [])]
        return [check_metric(n, custom) for n in names]

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
            check_metric(g.metric, [d.name for d in self.metrics])
        if self.policy is not None:  # issue 27: the rules send variants of this spec
            unknown = sorted({r.action for r in self.policy.rules} - set(ids))
            if unknown:
                raise ValueError(f"policy rules name variant(s) {unknown} not among {ids}")
        self._check_factorial()
        backlog_clash = sorted({b.id for b in self.backlog} & set(ids))
        if backlog_clash:
            raise ValueError(f"backlog ids {backlog_clash} are already variants of this iteration")
        if (
            self.enrolment == "continuous"
            and self.decision_method == "fixed"
            and self.planned_recipients_per_variant is None
        ):
            raise ValueError(
                "a continuous-enrolment test with decision.method: fixed needs "
                "planned_recipients_per_variant (a fixed-horizon test is read once, at its "
                "planned sample); set it (`loopexp plan`), or use decision.method: sequential"
            )
        dupes = sorted({c for c in self.covariates if self.covariates.count(c) > 1})
        if dupes:
            raise ValueError(f"covariates must be unique; repeated: {dupes}")
        check_flow_spec(
            self.flow,
            self.test_type.value,
            self.variants,
            self.backlog,
            self.enrolment,
            self.audience.holdout,
            self.primary_metric,
            [g.metric for g in self.guardrails],
        )
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
    def decision_method(self) -> str:
        """``fixed`` or ``sequential``: as set, else sequential for continuous enrolment."""
        if self.decision.method is not None:
            return self.decision.method
        return "sequential" if self.enrolment == "continuous" else "fixed"

    @property
    def sequential_tuning_n(self) -> float:
        """Total sample of a comparison at which its confidence sequence is tightest."""
        if self.decision.sequential_tuning_n is not None:
            return float(self.decision.sequential_tuning_n)
        if self.planned_recipients_per_variant is not None:
            return float(2 * self.planned_recipients_per_variant)
        return 5000.0  # gbstats' default (loopexp.stats.sequential.DEFAULT_TUNING_N)

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

    @property
    def slug(self) -> str:
        """A safe file-name stem for this iteration's outputs: ``<name>-iter<N>`` as a slug."""
        return f"{safe_slug(self.name, 80)}-iter{self.iteration}"

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
        if self.send_time is None:
            exclude["send_time"] = True
        if self.events is None:
            exclude["events"] = True
        if self.allocation is None:
            exclude["allocation"] = True
        if self.flow is None:  # issue 26
            exclude["flow"] = True
        if self.policy is None:  # issue 27
            exclude["policy"] = True
        if not self.metrics:  # the spec's own metric definitions (issue 16)
            exclude["metrics"] = True
        if self.decision.read_at is None:  # issue 28: the read time of a one-off send
            exclude["decision"] = {"read_at"}
        # issue 28: event history for the MPP opens section; the provider campaign ids of the send
        data_fields = {n for n in ("history", "campaign_ids") if not getattr(self.data, n)}
        if data_fields:
            exclude["data"] = data_fields
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
        data = self.model_dump(mode="json", exclude_none=True, exclude=self._defaulted_new_fields())
        _restore_explicit_nulls(self, data)
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def _restore_explicit_nulls(model: BaseModel, data: dict[str, Any]) -> None:
    """Put back the nulls that mean something: a field set to None whose default is not None.

    ``exclude_none`` drops every None, and for e.g. ``decision.cap_percentile: null`` (default
    0.99) the re-read spec would silently cap again. Walks nested models and lists of them.
    """
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if value is None:
            if name not in data and field.default is not None and field.default_factory is None:
                data[name] = None
        elif isinstance(value, BaseModel) and isinstance(data.get(name), dict):
            _restore_explicit_nulls(value, data[name])
        elif isinstance(value, list) and isinstance(data.get(name), list):
            for item, item_data in zip(value, data[name], strict=False):
                if isinstance(item, BaseModel) and isinstance(item_data, dict):
                    _restore_explicit_nulls(item, item_data)


def safe_slug(text: str, max_length: int = 80) -> str:
    """A file-name-safe slug of ``text``: ASCII letters, digits, ``.``, ``_`` and ``-`` only.

    No path separator, no leading dot (``../../x`` becomes ``x``), at most ``max_length``
    characters (a long text keeps a hash of the whole, so two long names stay distinct), never
    empty. File names derived from a spec go through here.
    """
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", ascii_text).strip(".-_")
    slug = re.sub(r"-{2,}", "-", slug) or "experiment"
    if len(slug) > max_length:
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        slug = slug[: max_length - 9].rstrip(".-_") + "-" + digest
    return slug


#: Fields added after the first fingerprints were recorded (see ``ExperimentSpec.sha256``).
_NEW_AUDIENCE_FIELDS = (
    "segment_map",
    "unmapped_segments",
    "columns",
    "filters",
    "exclude_tested_within_days",
)
_NEW_VARIANT_FIELDS = ("preheader", "from_name", "cell")


class SpecError(InputError):
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
        data = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(path, [f"file not found{did_you_mean(Path(path))}"]) from None
    except IsADirectoryError:
        raise SpecError(path, ["is a folder, not a spec file"]) from None
    except OSError as exc:
        raise SpecError(path, [f"cannot be read: {exc.strerror or exc}"]) from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(
            path, [f"{len(data):,} bytes: too large for a spec (at most {MAX_SPEC_BYTES:,})"]
        )
    if b"\x00" in data:
        raise SpecError(path, ["is a binary file, not a YAML spec (it contains NUL bytes)"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SpecError(
            path,
            [
                f"line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                f"{exc.start}); save the file as UTF-8"
            ],
        ) from None
    return parse_spec(text, source=path)


#: A spec is a page of YAML; anything much larger is not one (and could exhaust memory).
MAX_SPEC_BYTES = 1_000_000


def parse_spec(text: str, source: str | Path = "<string>") -> ExperimentSpec:
    """Validate YAML text as a spec; ``source`` names it in error messages."""
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(source, [yaml_problem(text, exc)]) from None
    if not isinstance(data, dict):
        raise SpecError(source, ["the top level must be a mapping of fields (name: ..., ...)"])
    duplicates = duplicate_keys(root)
    if duplicates:
        raise SpecError(source, duplicates)
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
            where = format_loc(loc)
            line = line_of(root, loc)
            prefix = f"line {line}: " if line else ""
            # pydantic prefixes a validator's message with "Value error, ": not for readers.
            msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
            problems.append(f"{prefix}{where or '(spec)'}: {msg}")
        raise SpecError(source, problems) from None


def write_spec(spec: ExperimentSpec, path: str | Path) -> Path:
    """Write a spec as YAML (creating folders), and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(spec.to_yaml(), encoding="utf-8")
    return path
